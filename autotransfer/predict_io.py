"""Reading items to predict: folders with or without class subfolders, files, or tables."""

from __future__ import annotations

from pathlib import Path

from .console import warn
from .data.folders import IMAGE_EXTS, TEXT_EXTS
from .data.links import Links, walk_files
from .data.tables import TABLE_EXTS, pick_text_column, read_table
from .errors import DataError


def read_items(path: Path, modality: str, text_col: str | None = None) -> tuple[list, list[str]]:
    """(items, display names) for ``path``; labels, if any, are ignored."""
    if not path.exists():
        raise DataError(f"--data {str(path)!r} does not exist; expected a folder of items or a table")
    if path.is_file() and path.suffix.lower() in TABLE_EXTS:
        if modality != "text":
            raise DataError(f"--data {str(path)!r} is a table but the model takes {modality}s; pass a folder of images")
        df = read_table(path)
        col = pick_text_column(df, text_col, repr(str(path)))
        texts = df[col].fillna("").astype(str).tolist()
        if not texts:
            raise DataError(f"--data {str(path)!r} has a header but no rows; expected a table with one row per "
                            "item to predict")
        return texts, [f"row {i}" for i in range(len(texts))]
    exts = IMAGE_EXTS if modality == "image" else TEXT_EXTS
    links = Links([path])
    files = [path] if path.is_file() else [f for f in walk_files(path, links) if f.suffix.lower() in exts]
    for line in links.warnings(path):
        warn(line)
    if not files:
        raise DataError(f"no {modality} files ({', '.join(sorted(exts))}) under {str(path)!r}")
    names = [str(f.relative_to(path)) if path.is_dir() else f.name for f in files]
    if modality == "image":
        return [str(f) for f in files], names
    return [f.read_bytes().decode("utf-8", errors="replace").strip() for f in files], names
