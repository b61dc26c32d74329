"""What optuna-dashboard shows of a search's study (``optuna-dashboard sqlite:///RUN/study.db``): every
trial names its source and strategy (probes and baselines have no sampled params), the objective is
named, and the study records the settings the report draws with (issue 25, item 6)."""

from __future__ import annotations

import optuna
import pandas as pd
import pytest

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # a zoo search


def test_every_trial_names_its_source_and_strategy_and_the_objective_is_named(zoo, target_dir, tmp_path):
    import autotransfer

    res = autotransfer.search(target_dir, out=tmp_path / "run", sources=[zoo["digits-test_resnet"].spec],
                              strategies=["linear_probe", "full"], trials=3, epochs=1, estimators=["logme"],
                              margin=0.04, progress=False, cache_dir=str(tmp_path / "cache"))
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{res.out_dir / 'study.db'}")
    rows = pd.read_csv(res.out_dir / "leaderboards" / "trials.csv")
    attrs = {t.number: (t.user_attrs.get("source"), t.user_attrs.get("strategy")) for t in study.trials}
    assert attrs == {r.trial: (r.source, r.strategy) for r in rows.itertuples()}
    assert ("scratch:test_resnet", "scratch") in attrs.values()
    assert ("timm:test_resnet@digits-test_resnet.safetensors", "linear_probe") in attrs.values()
    assert study.metric_names == ["validation accuracy"]
    assert study.user_attrs["pruner"] == {"margin": 0.04, "warmup_epochs": 1, "patience": 2}
    assert study.user_attrs["answer"] in attrs
