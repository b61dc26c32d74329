"""Reading a run folder's leaderboards (``DIR/leaderboards/*.csv``) back as pandas DataFrames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import AutotransferError

NAMES = ("transferability", "trials", "summary")  # DIR/leaderboards/<name>.csv


def read_leaderboards(out_dir: str | Path) -> dict[str, Any]:
    """The leaderboards that exist in ``out_dir``, by name (in ``NAMES`` order)."""
    import pandas as pd

    lb = Path(out_dir) / "leaderboards"
    return {name: pd.read_csv(lb / f"{name}.csv") for name in NAMES if (lb / f"{name}.csv").exists()}


def leaderboard(out_dir: str | Path) -> dict[str, Any]:
    """A search run folder's leaderboards as pandas DataFrames: ``"transferability"`` (one row per
    source, best first), ``"trials"`` (one row per trial) and ``"summary"`` (one row: the answer).

    ``out_dir`` is the folder a search wrote (``autotransfer.search(data, out=DIR)`` or
    ``autotransfer search --out DIR``); ``SearchResult.out_dir`` names it. A missing file is an
    ``AutotransferError`` naming the folder and the fix.
    """
    tables = read_leaderboards(out_dir)
    missing = [f"{name}.csv" for name in NAMES if name not in tables]
    if missing:
        where = Path(out_dir) / "leaderboards"
        raise AutotransferError(
            f"no {', '.join(missing)} in {str(where)!r}; expected the run folder of a finished search — "
            f"run autotransfer.search(data, out={str(out_dir)!r}) (or 'autotransfer search --out DIR'), "
            "or pass the folder it wrote"
        )
    return tables
