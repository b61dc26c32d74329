"""Run folders: where a command writes when no ``--out`` is given, and whose data a folder holds.

Light (no torch, no optuna): ranking and the search both refuse a folder inside the data or one
that holds another data's run, so the checks sit here, below both.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from .errors import AutotransferError

RUNS = Path("autotransfer-runs")  # in the working folder: one run folder per data (or study) name
MARKER = "run.json"  # whose folder this is: {"data", "fingerprint", "study", "storage" (None: its study.db)}


def run_dir(out: str | Path | None, name: str) -> Path:
    """``out``, or the default run folder ``autotransfer-runs/<name>``."""
    return Path(out) if out else RUNS / name


def refuse_other_data(out_dir: Path, dataset: Any, data: Any) -> dict[str, Any] | None:
    """Refuse a folder inside the data, or one that holds another data's search (returns the
    folder's owner record, if any).

    A second search with other data would overwrite ``best/``, the leaderboards and the trial
    models of the first one; nothing in the folder is touched when it is refused.
    """
    refuse_inside_data(out_dir, dataset.path or data)
    owner = _owner(out_dir)
    if owner and owner.get("fingerprint") != dataset.fingerprint and owner.get("data") == str(data):
        raise AutotransferError(
            f"--out {out_dir} holds a search of {data} as it was (fingerprint {str(owner.get('fingerprint'))[:12]}), "
            f"but its files, labels or split differ now (fingerprint {dataset.fingerprint[:12]}; --seed and "
            f"--split change the split); pass another --out, or delete {out_dir} to start over"
        )
    if owner and owner.get("fingerprint") != dataset.fingerprint:
        raise AutotransferError(
            f"--out {out_dir} holds the search of other data ({owner.get('data') or 'unknown'}, fingerprint "
            f"{str(owner.get('fingerprint'))[:12]}), not of {data} (fingerprint {dataset.fingerprint[:12]}); "
            f"pass another --out, or delete {out_dir} to start over"
        )
    return owner


def refuse_inside_data(out_dir: Path, data: Any, default: bool = False) -> None:
    """Runs never go inside the data folder: the next load would read the run's files as items (its
    folder as a class), the data's fingerprint would change, and the run could not be resumed.
    ``default``: ``out_dir`` is ``autotransfer-runs``, the parent of the default ``--out``."""
    if not isinstance(data, str | Path) or not Path(data).is_dir():
        return
    root, run = Path(data).resolve(), Path(out_dir).resolve()
    if run == root or root in run.parents:
        shown = "the default --out ./autotransfer-runs/<data-name>" if default else f"--out {out_dir}"
        raise AutotransferError(
            f"{shown} is inside --data {data}: the next load would read the run's files as data; pass an --out "
            f"outside {data}" + (", or run from another folder" if default else "")
        )


def _owner(out_dir: Path) -> dict[str, Any] | None:
    """Who the folder belongs to: its marker, or (folders made before the marker) its study's data."""
    marker = out_dir / MARKER
    if marker.is_file():
        try:
            return json.loads(marker.read_text())
        except (OSError, ValueError):
            return None
    db = out_dir / "study.db"
    if not db.is_file():
        return None

    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            rows = conn.execute("SELECT key, value_json FROM study_user_attributes "
                                "WHERE key IN ('fingerprint', 'data') ORDER BY study_id").fetchall()
    except sqlite3.Error:
        return None
    found: dict[str, Any] = {}
    for key, value in rows:  # the first study in the file is the folder's
        found.setdefault(key, json.loads(value))
    return found if "fingerprint" in found else None
