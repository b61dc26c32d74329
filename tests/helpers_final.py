"""A search's exported best/ moved to another folder and used with an empty HOME (refit, ensemble)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def check_moved_model(cli_subprocess, best_dir: Path, run_dir: Path, test_dir: Path, tmp_path: Path,
                      test_score: float) -> None:
    """Move ``best_dir`` out of its run (then deleted), and check that ``predict`` and ``evaluate`` with an
    empty HOME reproduce ``test_score`` on ``test_dir`` (a class-folder test split)."""
    moved = tmp_path / "elsewhere" / "model"
    shutil.copytree(best_dir, moved)
    shutil.rmtree(run_dir)
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}
    preds = tmp_path / "preds.csv"
    r = cli_subprocess("predict", "--model", str(moved), "--data", str(test_dir), "--out", str(preds), env=env)
    assert r.code == 0, r.err[-2000:]
    p = pd.read_csv(preds)
    acc = float(np.mean(p["prediction"].astype(str) == p["item"].str.split("/").str[0].astype(str)))
    assert acc == pytest.approx(test_score)
    r = cli_subprocess("evaluate", "--model", str(moved), "--data", str(test_dir), "--json",
                       "--out", str(tmp_path / "cm.csv"), env=env)
    assert r.code == 0, r.err[-2000:]
    assert json.loads(r.out)["tasks"][0]["accuracy"] == pytest.approx(test_score)
