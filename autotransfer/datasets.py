"""Loading a dataset through the plugins' ``load_dataset`` hook.

This module sits above ``autotransfer.data`` (the layouts, validation and splits, which know no
plugin manager) and above ``autotransfer.plugins``, as ``autotransfer.sources`` does for sources.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .checks import SEED, check_number
from .data import LAYOUTS, Dataset
from .data.splits import parse_split
from .errors import DataError
from .plugins import get_plugin_manager

__all__ = ["load"]


def load(
    path: Any,
    *,
    text_col: str | None = None,
    label_col: str | list[str] | None = None,
    split: Any = None,
    seed: int = 0,
) -> Dataset:
    """Load the dataset at ``path`` through the plugins' ``load_dataset`` hook.

    A ``Dataset`` passed in is returned unchanged. Errors are ``DataError`` with one line
    naming the input, what was expected and the fix.
    """
    if isinstance(path, Dataset):
        return path

    check_number("seed", seed, SEED, 0)
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(
            f"data path {str(path)!r} does not exist; expected a folder or a table file — check the path"
        )
    if isinstance(label_col, str):
        label_col = [c.strip() for c in label_col.split(",") if c.strip()] or None
    options = {
        "text_col": text_col,
        "label_col": label_col,
        "split": parse_split(split) if split is not None else (0.7, 0.15, 0.15),
        "seed": seed,
    }
    if p.is_dir() and not any(p.iterdir()):
        raise DataError(f"data folder {str(path)!r} is empty; expected " + "; or ".join(LAYOUTS))
    ds = get_plugin_manager().load_dataset(str(p), options)
    if ds is None:
        raise DataError(
            f"{str(path)!r} is not a dataset in any known layout; expected " + "; or ".join(LAYOUTS)
        )
    return ds
