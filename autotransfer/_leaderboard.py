"""Reading a run folder's leaderboards (``DIR/leaderboards/*.csv``) back as pandas DataFrames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .csvsafe import read_csv
from .errors import AutotransferError

NAMES = ("transferability", "trials", "summary")  # DIR/leaderboards/<name>.csv


def read_leaderboards(out_dir: str | Path) -> dict[str, Any]:
    """The leaderboards that exist in ``out_dir``, by name (in ``NAMES`` order)."""
    lb = Path(out_dir) / "leaderboards"
    return {name: _read(lb / f"{name}.csv") for name in NAMES if (lb / f"{name}.csv").exists()}


def _read(path: Path) -> Any:
    """One leaderboard; an empty, cut or garbled file is a one-line error naming it and the fix."""
    import pandas as pd

    try:
        df = read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AutotransferError(f"{str(path)!r} is not a readable leaderboard ({why}); expected the CSV a search "
                                f"writes — {_REBUILD}") from None
    if df.empty and path.stem == "summary":
        raise AutotransferError(f"{str(path)!r} has a header but no row; expected the search's answer — {_REBUILD}")
    return df


_REBUILD = ("rebuild it with 'autotransfer leaderboard DIR --storage URL --study-name NAME' "
            "(the run folder's study.db: --storage sqlite:///DIR/study.db), or rerun the search")


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
