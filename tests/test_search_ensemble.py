"""``--ensemble N``: greedy selection over the completed trials, on validation only, exported as best/."""

from __future__ import annotations

import json
import shutil

import numpy as np
import optuna
import pytest
from helpers_final import check_moved_model

import autotransfer
from autotransfer._search import final
from autotransfer._search.answer import VAL_PROBS
from autotransfer._search.record import StudyRecord, TrialRecord
from autotransfer._search.storage import default_storage
from autotransfer.datasets import load

pytestmark = pytest.mark.usefixtures("one_thread")


class _Planted:
    """A trial's model that knows the answers: perfect on test, always wrong on validation."""

    def __init__(self, dataset, real):
        self.real = real
        self.classes = dataset.tasks[0].num_classes
        val = set(dataset.split_items("val"))
        self.label = {}
        for item, y in zip(dataset.items, dataset.labels[:, 0], strict=True):
            self.label[item] = (int(y) + 1) % self.classes if item in val else int(y)

    def predict(self, items, batch_size=64):
        y = np.array([self.label[i] for i in items])
        probs = np.eye(self.classes, dtype=np.float32)[y]
        return y[:, None], [probs]

    def param_counts(self):
        return self.real.param_counts()

    def to(self, device):
        return self


def _plant(out, number_of_trials: int) -> int:
    """A completed trial, poor on validation, added to the run's study; its model folder a copy of trial 0's
    weights without the validation probabilities trial 0 kept (they are not the planted model's)."""
    study = optuna.load_study(study_name="autotransfer-target", storage=default_storage(out))
    config = {"source": "planted", "strategy": "partial", "lr": 1e-3, "weight_decay": 0.01, "params": {}}
    study.add_trial(optuna.trial.create_trial(
        value=0.05, user_attrs=TrialRecord(role="search", config=config, source="planted",
                                           strategy="partial").to_user_attrs()))
    number = len(study.get_trials(deepcopy=False)) - 1
    models = out / "trials"
    # its weights are trial 0's, its validation probabilities its own: predicted through the planted model
    shutil.copytree(next(models.glob("trial_*")), models / f"trial_{number}",
                    ignore=shutil.ignore_patterns(VAL_PROBS))
    assert number >= number_of_trials - 1
    return number


@pytest.mark.slow
def test_a_trial_perfect_on_test_and_poor_on_validation_is_never_chosen(zoo, target_dir, tmp_path, monkeypatch,
                                                                         cli_subprocess):
    out = tmp_path / "run"
    kw = dict(out=out, sources=[zoo["digits-test_resnet"].spec], trials=4, epochs=3, estimators=["logme"],
              strategies=["linear_probe", "partial"], progress=False, cache_dir=str(tmp_path / "cache"),
              ensemble=5, stall_trials=0)
    first = autotransfer.search(target_dir, **kw)
    kept = sorted(int(p.name.split("_")[1]) for p in (out / "trials").glob("trial_*"))
    complete = [t for t in first.trials if t["state"] == "COMPLETE"]
    assert kept == sorted(t["trial"] for t in complete)  # every completed trial's model is a candidate
    planted = _plant(out, len(first.trials))
    dataset = load(target_dir)
    loaded = []
    real_load = final.load_model

    def load_model(path, **options):
        model = real_load(path, **options)
        loaded.append(str(path))
        return _Planted(dataset, model) if str(path).endswith(f"trial_{planted}") else model

    monkeypatch.setattr(final, "load_model", load_model)
    res = autotransfer.search(target_dir, **{**kw, "trials": len(first.trials) + 1, "refit": "on"})
    assert any(p.endswith(f"trial_{planted}") for p in loaded)  # it was a candidate
    s = res.summary
    assert f"trial {planted} " not in f"{s['ensemble_members']} "
    assert StudyRecord.from_study(optuna.load_study(study_name="autotransfer-target",
                                                    storage=default_storage(out))).answer != planted
    # on this data the probe and the scratch baseline together beat the probe alone on validation (0.811 to 0.798)
    assert s["exported"] in ("refit ensemble", "refit soup") and s["test_score_single"] is not None
    kind = s["exported"].removeprefix("refit ")
    # --refit with an ensemble that won: each member retrained on train + val, never on test
    assert s["refit"] == "on" and s["test_score"] == s["test_score_refit"]
    assert s["refit_train_items"] == len(dataset.split_items("train")) + len(dataset.split_items("val"))
    assert s["ensemble_val_score"] > s["val_score"] and s["ensemble_test_score"] is not None
    cfg = json.loads((res.best_dir / "config.json").read_text())
    if kind == "soup":  # one model: one model's inference cost
        assert float(s["inference_cost"]) == 1.0
    else:
        cost = float(s["inference_cost"])
        assert cost == pytest.approx(cfg["parameters"] / cfg["single_parameters"]) and cost > 1.0
    assert str(planted) not in map(str, cfg.get("trials") or cfg.get("soup", {}).get("trials", []))
    card = (res.best_dir / "README.md").read_text()  # an ensemble gets a card too, naming its members
    assert s["ensemble_members"] in card and "Every member was retrained on train + validation" in card
    assert f"{s['ensemble_val_score']:.4f}" in card.split("## Scores", 1)[1]
    check_moved_model(cli_subprocess, res.best_dir, out, target_dir / "test", tmp_path, s["test_score_refit"])
