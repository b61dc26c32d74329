"""Class-folder layouts: DATA/<class>/... and DATA/{train,val,test}/<class>/..."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from ..errors import DataError
from .dataset import LAYOUTS
from .links import Links, walk_files
from .splits import SPLIT_ALIASES, Record

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
TEXT_EXTS = {".txt"}


class SkipItem(Exception):
    """Raised by a folder reader for a file to skip; the message is the reason, shared by every such file."""


def _subdirs(p: Path) -> list[Path]:
    return sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))


def split_dirs(root: Path) -> dict[str, Path]:
    """Pre-split folders (``train``, ``val``/``valid``/``validation``, ``test``) found in ``root``."""
    out: dict[str, Path] = {}
    for d in _subdirs(root):
        s = SPLIT_ALIASES.get(d.name.lower())
        if s and s not in out:
            out[s] = d
    return out


def count_exts(root: Path, limit: int = 5000) -> dict[str, int]:
    """Extension counts of the first ``limit`` files (cheap layout sniffing)."""
    counts: dict[str, int] = {}
    for i, f in enumerate(walk_files(root)):
        if i >= limit:
            break
        counts[f.suffix.lower()] = counts.get(f.suffix.lower(), 0) + 1
    return counts


def scan_class_folders(
    root: Path,
    exts: set[str],
    read: Callable[[Path], tuple[object, str] | None],
    kind: str,
    warnings: list[str],
) -> list[Record]:
    """Records from ``root/<class>/**`` (or ``root/<split>/<class>/**``).

    ``read(path)`` returns ``(item, digest)``, ``None`` for an unreadable file, or raises
    ``SkipItem(reason)``; skipped files get one warning per reason, naming them.
    """
    if not any(root.iterdir()):
        raise DataError(f"data folder {str(root)!r} is empty; expected " + "; or ".join(LAYOUTS))
    splits = split_dirs(root)
    groups: list[tuple[str | None, Path]] = [(s, d) for s, d in splits.items()] if splits else [(None, root)]
    if splits:
        others = [d.name for d in _subdirs(root) if SPLIT_ALIASES.get(d.name.lower()) is None]
        if others:
            warnings.append(f"folders {', '.join(others[:5])} in {str(root)!r} ignored: the data is pre-split")
    pairs: list[tuple[str | None, Path]] = []
    for split, base in groups:
        class_dirs = _subdirs(base)
        if not class_dirs:
            raise DataError(
                f"{str(base)!r} has no class subfolders; expected {str(base)}/<class>/<files> "
                "with one subfolder per class"
            )
        loose = [f for f in base.iterdir() if f.is_file() and f.suffix.lower() in exts]
        if loose:
            warnings.append(f"{len(loose)} {kind} file(s) directly in {str(base)!r} have no class folder; ignored")
        pairs += [(split, c) for c in class_dirs]
    scan = _Scan(root, exts, read)
    for split, cdir in _class_folders(root, pairs, scan.links, [b for _, b in groups]):
        scan.class_dir(cdir, split)
    scan.report(kind, warnings)
    return scan.records


def _class_folders(root: Path, pairs: list[tuple[str | None, Path]], links: Links,
                   bases: list[Path]) -> list[tuple[str | None, Path]]:
    """The (split, class folder) pairs to read: those reached through a link are read when ``links``
    would follow it (never a second copy of a class or split, nor the data root itself)."""
    real_root = os.path.realpath(root)

    def plain(c: Path) -> bool:
        return os.path.realpath(c) == os.path.join(real_root, os.path.relpath(c, root))

    links.data = [os.path.realpath(c) for _, c in pairs if plain(c)]
    kept = []
    for split, cdir in pairs:
        real = None if plain(cdir) else links.follow(str(cdir))
        if plain(cdir) or real is not None:
            kept.append((split, cdir))
        if real is not None:
            links.add(real)
    for base in bases:  # a dangling link is no folder: _subdirs leaves it out
        links.dangling += [(str(d), "") for d in sorted(base.iterdir()) if d.is_symlink() and not d.exists()]
    return kept


class _Scan:
    """What a folder scan found: records, unreadable and skipped files, skipped links, other files."""

    def __init__(self, root: Path, exts: set[str], read: Callable[[Path], tuple[object, str] | None]):
        self.root, self.exts, self.read = root, exts, read
        self.records: list[Record] = []
        self.bad: list[str] = []
        self.skipped: dict[str, list[str]] = {}
        self.links = Links([])  # the class folders, once chosen (_class_folders)
        self.other_files = 0

    def class_dir(self, cdir: Path, split: str | None) -> None:
        for f in walk_files(cdir, self.links):
            if f.suffix.lower() not in self.exts:
                self.other_files += 1
                continue
            try:
                got = self.read(f)
            except SkipItem as exc:
                self.skipped.setdefault(str(exc), []).append(str(f.relative_to(self.root)))
                continue
            if got is None:
                self.bad.append(str(f.relative_to(self.root)))
                continue
            item, digest = got
            self.records.append(Record(item, (cdir.name,), digest, split, str(f.relative_to(self.root))))

    def report(self, kind: str, warnings: list[str]) -> None:
        """Warnings for what was skipped; an error when nothing usable was found."""
        root, bad, skipped = self.root, self.bad, self.skipped
        warnings += self.links.warnings(root)
        if self.other_files:
            warnings.append(f"{self.other_files} file(s) that are not {kind} files ignored")
        if not self.records and (bad or skipped):
            every = bad + [f for files in skipped.values() for f in files]
            raise DataError(
                f"every {kind} file under {str(root)!r} is unreadable ({len(every)} files, e.g. {every[0]}); "
                f"expected valid {kind} files — check the files are not corrupt or truncated"
            )
        for reason, files in skipped.items():
            more = f" and {len(files) - 5} more" if len(files) > 5 else ""
            warnings.append(f"{len(files)} {kind} file(s) skipped, {reason}: {', '.join(files[:5])}{more}")
        if bad:
            warnings.append(f"{len(bad)} unreadable {kind} file(s) skipped (e.g. {', '.join(bad[:3])})")
        if not self.records:
            raise DataError(
                f"no {kind} files found under {str(root)!r}; expected {sorted(self.exts)} files in class subfolders"
            )


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
