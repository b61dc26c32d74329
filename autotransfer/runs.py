"""Run folders: where a command writes when no ``--out`` is given.

Light (no torch): the CLI's commands, the search and the leaderboard all name the default here.
"""

from __future__ import annotations

from pathlib import Path

RUNS = Path("autotransfer-runs")  # in the working folder: one run folder per data (or study) name


def run_dir(out: str | Path | None, name: str) -> Path:
    """``out``, or the default run folder ``autotransfer-runs/<name>``."""
    return Path(out) if out else RUNS / name
