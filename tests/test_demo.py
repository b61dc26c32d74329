"""`autotransfer demo`, the README's first command, end to end and offline (zoo built from scratch)."""

from __future__ import annotations

import pandas as pd
import pytest

# the README's first command as a user runs it, in a fresh process: HF_HUB_OFFLINE must hold from the
# first import of huggingface_hub
pytestmark = pytest.mark.slow


def test_demo_ranks_the_planted_harmful_source_last_and_exports_an_answer(cli_subprocess, tmp_path):
    out = tmp_path / "demo"
    env = {"AUTOTRANSFER_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    # a timeout far above what it needs: the trial count, not the clock, ends this run
    r = cli_subprocess("demo", "--out", str(out), "--trials", "5", "--timeout", "900", "--no-progress", env=env)
    assert r.code == 0, r.err[-3000:]
    run = out / "run"
    trans = pd.read_csv(run / "leaderboards" / "transferability.csv")
    # two helpful architectures, the shuffled-label source, the synthetic-task source, real ImageNet lite0
    assert len(trans) == 5 and trans["source"].str.startswith("efficientnet-lite0").any()
    harmful = trans[trans["source"].str.contains("shuffled")]
    assert int(harmful["rank"].iloc[0]) == 5  # ranked last by the estimators
    trials = pd.read_csv(run / "leaderboards" / "trials.csv")
    # every source's probe is solved first; probing the 2 beyond the top-3 is part of ranking
    assert len(trials) == 5 + 2
    probes = trials[trials["strategy"] == "linear_probe"]
    assert sorted(probes["trial"]) == [0, 1, 2, 3, 4] and (probes["state"] == "COMPLETE").all()
    assert probes["source"].tolist() == trans.sort_values("rank")["source"].tolist()  # in the estimators' order
    # the probes choose the 3 sources to fine-tune; the harmful one's probe is the worst, and it is never fine-tuned
    by_probe = probes.sort_values("val_score", ascending=False, kind="stable")["source"].tolist()
    assert "shuffled" in by_probe[-1]
    kept = by_probe[:3]
    tuned = trials[(trials["role"] != "scratch") & (trials["strategy"] != "linear_probe")]
    assert tuned["source"].isin(kept).all()
    # one scratch baseline per architecture among the kept sources
    assert set(trials.loc[trials["role"] == "scratch", "source"]) <= {
        "scratch:test_resnet", "scratch:test_vit", "scratch:tf_efficientnet_lite0"}
    summary = pd.read_csv(run / "leaderboards" / "summary.csv").iloc[0]
    assert 0.5 < summary["test_score"] <= 1.0 and summary["val_score"] >= summary["scratch_val_score"]
    # the answer says truthfully which outcome occurred
    assert ("answer: scratch won" in r.out) == bool(summary["negative_transfer"])
    assert ("answer: transfer won" in r.out) == (not bool(summary["negative_transfer"]))
    assert str(run / "report.md") in r.out
    assert (run / "best" / "config.json").exists() and (run / "report.md").exists()

    # a second demo reuses the zoo (no retraining) and the finished study (no new trials)
    zoo = sorted((tmp_path / "cache" / "zoo").rglob("*.safetensors"))  # $AUTOTRANSFER_CACHE_DIR/zoo
    assert len(zoo) == 4
    stamps = [p.stat().st_mtime_ns for p in zoo]
    r2 = cli_subprocess("demo", "--out", str(out), "--trials", "5", "--timeout", "900", "--no-progress", env=env)
    assert r2.code == 0, r2.err[-3000:]
    assert [p.stat().st_mtime_ns for p in zoo] == stamps
    assert len(pd.read_csv(run / "leaderboards" / "trials.csv")) == 7
