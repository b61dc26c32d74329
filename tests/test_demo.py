"""`autotransfer demo`, the README's first command, end to end and offline (zoo built from scratch)."""

from __future__ import annotations

import pandas as pd


def test_demo_ranks_the_planted_harmful_source_last_and_exports_an_answer(cli, tmp_path):
    out = tmp_path / "demo"
    env = {"AUTOTRANSFER_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    r = cli("demo", "--out", str(out), "--trials", "5", "--no-progress", env=env)
    assert r.code == 0, r.err[-3000:]
    run = out / "run"
    trans = pd.read_csv(run / "leaderboards" / "transferability.csv")
    assert len(trans) == 4  # two helpful architectures, the shuffled-label source, the synthetic-task source
    harmful = trans[trans["source"].str.contains("shuffled")]
    assert int(harmful["rank"].iloc[0]) == 4  # ranked last, so with top-k 3 it is never trained
    trials = pd.read_csv(run / "leaderboards" / "trials.csv")
    assert len(trials) == 5
    assert not trials["source"].str.contains("shuffled").any()
    # one scratch baseline per architecture among the kept sources, run first
    assert list(trials.loc[trials["role"] == "scratch", "source"]) == ["scratch:test_resnet", "scratch:test_vit"]
    summary = pd.read_csv(run / "leaderboards" / "summary.csv").iloc[0]
    assert 0.5 < summary["test_score"] <= 1.0 and summary["val_score"] >= summary["scratch_val_score"]
    assert "answer:" in r.out and str(run / "report.md") in r.out
    assert (run / "best" / "config.json").exists() and (run / "report.md").exists()

    # a second demo reuses the zoo (no retraining) and the finished study (no new trials)
    zoo = sorted((tmp_path / "cache" / "zoo").rglob("*.safetensors"))  # $AUTOTRANSFER_CACHE_DIR/zoo
    assert len(zoo) == 4
    stamps = [p.stat().st_mtime_ns for p in zoo]
    r2 = cli("demo", "--out", str(out), "--trials", "5", "--no-progress", env=env)
    assert r2.code == 0, r2.err[-3000:]
    assert [p.stat().st_mtime_ns for p in zoo] == stamps
    assert len(pd.read_csv(run / "leaderboards" / "trials.csv")) == 5
