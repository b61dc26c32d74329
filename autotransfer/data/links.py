"""Symbolic links in data folders, treated one way wherever files are listed (class folders, layout
sniffing, the folders ``predict`` reads).

A link, to a file or a folder, is followed wherever it points (a dataset of links into a shared
image store works), except:

- a link into the data being read (a class folder, its own or another's, or a folder holding one:
  the data root, a split, an ancestor) is not followed: those files are read once, where they lie,
  under their own class. Followed, a link back up the tree would put other classes' (or splits')
  items in this class;
- a dangling link (its target does not exist, or links that point at each other) is skipped;
- no real file or folder is read twice (two links to one file: the first one).

Each kind of skipped link is one warning with a count and examples; nothing is skipped silently.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class Links:
    """One walk's rules for links, and what it skipped (for the warnings)."""

    def __init__(self, data: Iterable[str | Path]):
        self.data = [os.path.realpath(p) for p in data]  # real folders whose files are read anyway
        # what was skipped, as (link, its target or ""): links to a folder holding them, links into
        # another part of the data, dangling links, links to what was already read
        self.loops: list[tuple[str, str]] = []
        self.into: list[tuple[str, str]] = []
        self.dangling: list[tuple[str, str]] = []
        self.twice: list[tuple[str, str]] = []
        self.unlisted: list[tuple[str, str]] = []  # folders that cannot be listed (no permission)
        self._seen: set[str] = set()

    def follow(self, path: str) -> str | None:
        """The real target of ``path`` (a link, or a path through one) when it may be read, else None."""
        try:
            real = os.path.realpath(path, strict=True)
        except OSError:  # missing target, or a circle of links
            self.dangling.append((path, ""))
            return None
        if _within(os.path.realpath(os.path.dirname(path)), real):
            self.loops.append((path, real))
            return None
        if any(_within(real, d) or _within(d, real) for d in self.data):
            self.into.append((path, real))
            return None
        return real

    def add(self, real: str) -> None:
        """``real`` (a followed class folder) is part of the data from now on."""
        self.data.append(real)

    def first_time(self, real: str, path: str) -> bool:
        """False (and noted) for a real file or folder, reached through a link, that was read already.

        Only what is reached through a link can be reached twice: a link back into the data is never
        followed, so the files that lie in it (most of them, kept out of this set) are met once."""
        if real in self._seen:
            self.twice.append((path, ""))
            return False
        self._seen.add(real)
        return True

    def warnings(self, root: Path) -> list[str]:
        """One line per kind of skipped link, paths shown relative to ``root``."""
        def show(items: list[tuple[str, str]]) -> str:
            named = [os.path.relpath(link, root) + (f" -> {target}" if target else "") for link, target in items[:3]]
            return ", ".join(named) + (f" and {len(items) - 3} more" if len(items) > 3 else "")

        kinds = [(self.loops, "symlink loop(s) not followed (each points at a folder that holds it)"),
                 (self.into, "symlink(s) into the data itself not followed (those files are read once, where "
                             "they lie, under their own class)"),
                 (self.dangling, "dangling symlink(s) skipped (the target does not exist)"),
                 (self.twice, "symlink(s) to a file or folder read already skipped (each is read once)"),
                 (self.unlisted, "folder(s) that cannot be listed skipped (check their permissions)")]
        return [f"{len(items)} {what}: {show(items)}" for items, what in kinds if items]


def walk_files(top: Path, links: Links | None = None) -> Iterator[Path]:
    """Every file under ``top`` (hidden files left out), files before subfolders and each in name
    order, links treated as ``links`` says (default: the rules above, with ``top`` as the data)."""
    links = links if links is not None else Links([top])
    stack = [(top, os.path.realpath(top), False)]
    while stack:
        folder, real, linked = stack.pop()
        if linked and not links.first_time(real, str(folder)):
            continue
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            links.unlisted.append((str(folder), ""))
            continue
        subfolders = []
        for entry in entries:
            target: str | None = os.path.join(real, entry.name)
            if entry.is_symlink():
                target = links.follow(entry.path)
                if target is None:
                    continue
            via_link = linked or entry.is_symlink()
            if entry.is_dir():
                subfolders.append((Path(entry.path), target, via_link))
            elif (not entry.name.startswith(".") and entry.is_file()
                  and (not via_link or links.first_time(target, entry.path))):
                yield Path(entry.path)
        stack.extend(reversed(subfolders))
