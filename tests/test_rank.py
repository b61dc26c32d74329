"""`autotransfer rank` end to end: cached features, every estimator, the CSV, ranks and notes."""

from __future__ import annotations

import pandas as pd
import pytest

from autotransfer._rank import subsample


@pytest.mark.slow  # the digits zoo
def test_rank_cli_writes_transferability_csv(cli, zoo, target_dir, tmp_path):
    specs = [zoo["digits-test_resnet"].spec, zoo["shuffled-test_resnet"].spec]
    out = tmp_path / "run"
    r = cli("rank", "--data", str(target_dir), "--sources", ",".join(specs), "--out", str(out),
            "--estimators", "logme,knn,leep,nce,hscore_shrinkage", "--cache-dir", str(tmp_path / "cache"))
    assert r.code == 0, r.err[-2000:]
    df = pd.read_csv(out / "leaderboards" / "transferability.csv")
    assert list(df.columns) == ["source", "provider", "modality", "feature_dim", "n_samples", "logme", "knn", "leep",
                                "nce", "hscore_shrinkage", "rank_logme", "rank_knn", "rank_leep", "rank_nce",
                                "rank_hscore_shrinkage", "rank", "extract_seconds", "score_seconds", "notes"]
    assert len(df) == 2 and sorted(df["rank"]) == [1, 2]
    assert (df["n_samples"] == 100).all() and (df["feature_dim"] == 96).all()
    # the zoo's sources have classifier heads, so LEEP and NCE apply
    assert df["leep"].notna().all() and df["nce"].notna().all()
    # the collapsed (harmful) source is ranked last by every estimator that measures features
    by = df.set_index("source")
    harmful, helpful = specs[1], specs[0]
    for est in ("logme", "knn", "hscore_shrinkage"):
        assert by.loc[helpful, est] > by.loc[harmful, est], est
    assert "rank" in r.out and str(out / "leaderboards" / "transferability.csv") in r.out
    # a second run reads features from the cache
    r2 = cli("rank", "--data", str(target_dir), "--sources", ",".join(specs), "--out", str(out),
             "--estimators", "logme", "--cache-dir", str(tmp_path / "cache"))
    assert r2.code == 0
    df2 = pd.read_csv(out / "leaderboards" / "transferability.csv")
    assert df2.set_index("source").loc[helpful, "logme"] == pytest.approx(by.loc[helpful, "logme"], rel=1e-9)


def test_rank_errors_are_one_line(cli, target_dir, tmp_path):
    r = cli("rank", "--data", str(target_dir), "--sources", "timm:not_a_model")
    assert r.code == 2 and "error:" in r.err and "Traceback" not in r.err and "not_a_model" in r.err
    r = cli("rank", "--data", str(target_dir), "--sources", "timm:resnet18", "--offline")
    assert r.code == 2 and "no usable source" in r.err and "@/path/weights.safetensors" in r.err


def test_subsample_is_stratified_and_changes_the_fingerprint(digits_dir):
    from autotransfer import load_dataset

    ds = load_dataset(digits_dir)
    sub = subsample(ds, 200, seed=0)
    y = sub.labels[sub.splits["train"], 0]
    assert 180 <= len(y) <= 200
    counts = [(y == k).sum() for k in range(10)]
    assert max(counts) - min(counts) <= 2
    assert sub.fingerprint != ds.fingerprint
    assert subsample(ds, None) is ds
