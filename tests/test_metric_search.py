"""The metric that chooses (``--metric``), the intervals on every score, the runner-up within one standard
error, and the answer's weak spots on test (issue 24, items 3-5)."""

from __future__ import annotations

import json
import math
import re
import shutil

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState, create_trial

from autotransfer import metrics as M
from autotransfer.errors import AutotransferError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_scored_is_score_with_interval_and_standard_error_oriented():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    p = rng.dirichlet(np.ones(3), 90)
    for name in M.METRICS:
        band = M.scored(name, y, p)
        value, low, high = M.score_with_interval(name, y, p)
        sign = 1 if M.METRICS[name].higher_is_better else -1
        assert band.value == sign * value
        assert (band.low, band.high) == ((low, high) if sign == 1 else (-high, -low))
        assert band.se == pytest.approx(M.standard_error(name, y, p), rel=1e-12)
        assert band.low <= band.value <= band.high


def test_a_metric_that_is_not_registered_is_one_line():
    from autotransfer._search.config import SearchConfig
    from autotransfer._train_config import TrainConfig

    for make in (SearchConfig, TrainConfig):
        with pytest.raises(AutotransferError, match="unknown metric 'f2': expected one of auto, accuracy"):
            make(metric="f2")


def test_the_probe_chooses_its_l2_by_the_metric():
    """Imbalanced (270 / 30) and a weak signal: accuracy prefers the strong penalty that predicts the majority."""
    import torch

    from autotransfer import probe

    rng = np.random.default_rng(0)

    def split():
        x, y = rng.normal(size=(300, 20)), np.r_[np.zeros(270, int), np.ones(30, int)]
        x[y == 1, :3] += 0.6
        return torch.tensor(x), torch.tensor(y)[:, None]

    (x, y), (xv, yv) = split(), split()
    by_acc = probe.solve_path(x, y, xv, yv, metric="accuracy")
    by_bal = probe.solve_path(x, y, xv, yv, metric="balanced_accuracy")
    assert by_bal.l2 < by_acc.l2
    truth = yv[:, 0].numpy()
    assert by_bal.scores == [M.balanced_accuracy(truth, by_bal.val_preds[:, 0])]
    assert by_acc.scores == [M.accuracy(truth, by_acc.val_preds[:, 0])]
    assert M.balanced_accuracy(truth, by_bal.val_preds[:, 0]) > M.balanced_accuracy(truth, by_acc.val_preds[:, 0])


def _trial(number, value, role="search", params=1000, se=0.01, curve=None, source="a"):
    attrs = {"role": role, "total_params": params, "val_interval": [value - 2 * se, value + 2 * se, se],
             "fixed": None}
    if role == "scratch":
        attrs["baseline_source"] = source
    attrs = {k: v for k, v in attrs.items() if v is not None}
    return create_trial(state=TrialState.COMPLETE, value=value, user_attrs=attrs,
                        intermediate_values=curve or {0: value})


def _study(*trials):
    study = optuna.create_study(direction="maximize")
    for t in trials:
        study.add_trial(t)
    return study


def test_the_pruner_compares_oriented_log_losses_behind_scratch():
    """Log loss is reported negated, so a trial whose log loss is higher than scratch's is behind it."""
    from autotransfer._search.pruner import BEHIND_SCRATCH, ScratchBaselinePruner

    y = np.repeat(np.arange(3), 20)
    good = np.full((60, 3), 0.1)
    good[np.arange(60), y] = 0.8
    bad = np.full((60, 3), 1 / 3)
    scratch_curve = {e: M.task_values("log_loss", y, good.argmax(1), [good])[0] for e in range(4)}
    worse = M.task_values("log_loss", y, bad.argmax(1), [bad])[0]
    assert worse < scratch_curve[0] < 0  # lower (worse) once negated
    study = _study(_trial(0, scratch_curve[3], role="scratch", curve=scratch_curve))
    running = study.ask()
    running.set_user_attr("role", "search")
    for e in range(3):
        running.report(worse, e)
    pruner = ScratchBaselinePruner(warmup_epochs=1, patience=2, margin=0.02)
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == running.number)
    assert pruner.prune(study, frozen) and pruner.reasons[frozen.number] == BEHIND_SCRATCH


def test_the_answer_is_the_cheaper_runner_up_within_one_standard_error(tmp_path):
    from autotransfer._search.answer import choose_answer, save_val_probs

    labels = np.repeat(np.arange(2), 30)
    models = tmp_path / "trials"
    for n in (1, 2):
        (models / f"trial_{n}").mkdir(parents=True)
        (models / f"trial_{n}" / "config.json").write_text("{}")
    base = _trial(0, 0.60, role="scratch")
    big, small = _trial(1, 0.80, params=10_000, se=0.03), _trial(2, 0.78, params=1_000, se=0.03)
    study = _study(base, big, small)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    chosen = choose_answer(complete, models, "accuracy", labels)
    assert chosen.cheaper and chosen.trial.number == 2 and chosen.runner_up.number == 1
    assert not chosen.paired and chosen.diff_se == pytest.approx(math.hypot(0.03, 0.03))  # no probabilities kept
    # both trials' validation probabilities kept: the paired bootstrap's standard error of the difference
    rng = np.random.default_rng(1)
    pa = rng.dirichlet(np.ones(2), 60)
    pb = pa.copy()
    pb[:6] = pb[:6, ::-1]
    save_val_probs(models / "trial_1", [pa])
    save_val_probs(models / "trial_2", [pb])
    paired = choose_answer(complete, models, "accuracy", labels)
    assert paired.paired and paired.diff_se == pytest.approx(M.paired_difference("accuracy", labels, pa, pb)[1])
    # far apart (a tiny standard error): the best stays, however costly
    apart = _study(base, _trial(1, 0.80, params=10_000, se=0.001), _trial(2, 0.70, params=1_000, se=0.001))
    kept = choose_answer(apart.get_trials(states=(TrialState.COMPLETE,)), tmp_path / "none", "accuracy", labels)
    assert kept.trial.number == 1 and not kept.within_se and not kept.cheaper
    # within one standard error but not better than scratch: never the answer
    close = _study(_trial(0, 0.78, role="scratch"), _trial(1, 0.80, params=10_000, se=0.05),
                   _trial(2, 0.77, params=1_000, se=0.05))
    stays = choose_answer(close.get_trials(states=(TrialState.COMPLETE,)), models, "accuracy", labels)
    assert stays.trial.number == 1 and stays.within_se and "not better than scratch" in stays.kept_because


def test_a_resumed_study_keeps_its_metric_and_refuses_another_by_name(tmp_path):
    import dataclasses

    from autotransfer._search.config import SearchConfig
    from autotransfer._search.plan import SearchPlan
    from autotransfer._search.record import StudyRecord

    plan = SearchPlan(SearchConfig(metric="auto"), None, None, tmp_path, "cpu", "fp32", 4, 2, 60.0, "sqlite://",
                      "s", 0.0, "accuracy", "accuracy: balanced")
    resumed = plan.resumed(StudyRecord(epochs=3, metric="balanced_accuracy", metric_reason="why"))
    assert (resumed.epochs, resumed.metric, resumed.metric_reason) == (3, "balanced_accuracy", "why")
    assert resumed.train_config.metric == "balanced_accuracy"
    assert plan.resumed(StudyRecord()).metric == "accuracy"  # a study from before the metric chose by accuracy
    asked = dataclasses.replace(plan, config=SearchConfig(metric="macro_f1"), metric="macro_f1")
    with pytest.raises(AutotransferError, match="chooses by balanced_accuracy but this search asks --metric macro_f1"):
        asked.resumed(StudyRecord(metric="balanced_accuracy"))


def test_train_reports_and_keeps_by_the_metric(tmp_path):
    """What ``report`` gets (the pruner's input in a search) is the metric's score of the model's predictions."""
    from helpers_training import timm_spec, write_digits

    import autotransfer
    from autotransfer.datasets import load

    data = write_digits(tmp_path / "d", classes=range(3), per_class=30, size=16)
    for k, drop in ((1, 20), (2, 24)):  # imbalanced: 30 / 10 / 6 items
        for f in sorted((data / str(k)).iterdir())[:drop]:
            f.unlink()
    ds = load(data, seed=0)
    reported = []
    # auto: 30 vs 6 training-split items is imbalanced, but validation holds a handful of the rare classes
    assert M.resolve_metric("auto", ds.split_labels("train"), [3], ds.split_labels("val"))[0] == "accuracy"
    res = autotransfer.train(ds, timm_spec(tmp_path, "test_resnet", size=16), "full", epochs=2,
                             metric="balanced_accuracy", report=lambda e, v: reported.append(v), keep="best",
                             device="cpu", cache_dir=False)
    assert res.metric == "balanced_accuracy"
    y = ds.split_labels("val")[:, 0]
    preds, probs = res.model.predict(ds.split_items("val"))
    assert res.val_score == M.balanced_accuracy(y, preds[:, 0]) == reported[res.best_epoch]
    assert res.val_score != M.accuracy(y, preds[:, 0])
    assert np.allclose(res.val_probs[0], probs[0], atol=1e-5)
    band = M.scored("balanced_accuracy", y, preds[:, 0])
    assert (res.val_band.low, res.val_band.high, res.val_band.se) == (band.low, band.high, band.se)


# --- end to end: a search on an imbalanced digits target ---------------------------------------------------


@pytest.fixture(scope="module")
def imbalanced(zoo, target_dir, tmp_path_factory):
    """digits 5-9 with 20/20/20/5/3 training and 70/70/70/25/20 validation items (every class at least the
    20 balanced accuracy needs), searched with --metric auto."""
    import autotransfer

    tmp = tmp_path_factory.mktemp("imbalanced")
    data = tmp / "data"
    shutil.copytree(target_dir, data)
    keep = {"train": {"8": 5, "9": 3}, "val": {"5": 70, "6": 70, "7": 70, "8": 25, "9": 20}}
    for split, counts in keep.items():
        for cls, n in counts.items():
            for f in sorted((data / split / cls).iterdir())[n:]:
                f.unlink()
    res = autotransfer.search(data, out=tmp / "run", sources=[zoo["digits-test_resnet"].spec,
                                                             zoo["shuffled-test_resnet"].spec],
                              strategies=["linear_probe", "full"], trials=4, epochs=2, top_k=1, progress=False,
                              estimators=["logme"], cache_dir=str(tmp / "cache"))
    return res, data


def _csv(res, name):
    return pd.read_csv(res.out_dir / "leaderboards" / f"{name}.csv")


@pytest.mark.slow
def test_auto_chooses_by_balanced_accuracy_and_every_recorded_value_is_it(imbalanced):
    import autotransfer
    from autotransfer.datasets import load

    res, data = imbalanced
    s = res.summary
    assert s["metric"] == "balanced_accuracy" and "imbalanced (20 vs 3 items, 6.67x" in s["metric_reason"]
    report = (res.out_dir / "report.md").read_text()
    assert f"Chosen by {s['metric_reason']}." in report and "Every score is balanced accuracy" in report
    ds = load(data)
    y_val = ds.split_labels("val")[:, 0]
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{res.out_dir / 'study.db'}")
    checked = 0
    for folder in sorted((res.out_dir / "trials").glob("trial_*")):  # the kept models: their values are recomputed
        t = study.trials[int(folder.name.split("_")[1])]
        preds, _ = autotransfer.load_model(folder).predict(ds.split_items("val"))
        assert t.value == pytest.approx(M.balanced_accuracy(y_val, preds[:, 0]), abs=1e-12)
        assert t.value != pytest.approx(M.accuracy(y_val, preds[:, 0]), abs=1e-6)  # the two disagree here
        # what trial.report got at the kept epoch, the pruner's input, is the same number
        assert t.intermediate_values[t.user_attrs["best_epoch"] if t.user_attrs.get("fixed") is None
                                     else max(t.intermediate_values)] == t.value
        checked += 1
    assert checked >= 2
    # the scratch comparison: the reference every transfer trial is compared with is the baseline's balanced accuracy
    trials = _csv(res, "trials")
    scratch = trials[trials["role"] == "scratch"].iloc[0]
    assert s["scratch_val_score"] == pytest.approx(scratch["val_score"])
    base = next(t for t in study.trials if t.user_attrs.get("role") == "scratch")
    for row in trials[(trials["role"] != "scratch") & trials["val_score"].notna()].itertuples():
        last = max(study.trials[row.trial].intermediate_values)
        want = max(v for e, v in base.intermediate_values.items() if e <= last)
        assert row.baseline_val_same_epoch == pytest.approx(want)
    assert s["negative_transfer"] == (s["val_score"] <= s["scratch_val_score"])


@pytest.mark.slow
def test_every_score_has_its_interval_and_they_match_a_reference(imbalanced):
    import autotransfer
    from autotransfer._search.answer import load_val_probs
    from autotransfer.datasets import load

    res, data = imbalanced
    for name in ("summary", "trials", "transferability"):
        table = _csv(res, name)
        scores = [c for c in table.columns if c.endswith("_score")]
        assert scores, name
        for col in scores:
            prefix = col.removesuffix("_score")
            assert {f"{prefix}_low", f"{prefix}_high"} <= set(table.columns), (name, col)
            has = table[col].notna()
            assert table.loc[has, f"{prefix}_low"].notna().all(), (name, col)
            assert (table.loc[has, f"{prefix}_low"] <= table.loc[has, col] + 1e-12).all()
            assert (table.loc[has, col] <= table.loc[has, f"{prefix}_high"] + 1e-12).all()
    assert "val_se" in _csv(res, "trials").columns and "val_se" in _csv(res, "summary").columns
    ds = load(data)
    s = res.summary
    # test: the stratified bootstrap of the exported model's test predictions
    preds, _ = autotransfer.load_model(res.best_dir).predict(ds.split_items("test"))
    ref = M.scored("balanced_accuracy", ds.split_labels("test")[:, 0], preds[:, 0])
    assert (s["test_score"], s["test_low"], s["test_high"]) == pytest.approx((ref.value, ref.low, ref.high), abs=1e-12)
    # validation: each kept trial's interval from the probabilities it kept (and its own predictions)
    trials = _csv(res, "trials").set_index("trial")
    y_val = ds.split_labels("val")[:, 0]
    for folder in (res.out_dir / "trials").glob("trial_*"):
        row = trials.loc[int(folder.name.split("_")[1])]
        val_preds = autotransfer.load_model(folder).predict(ds.split_items("val"))[0][:, 0]
        band = M.scored("balanced_accuracy", y_val, val_preds)
        assert (row["val_low"], row["val_high"]) == pytest.approx((band.low, band.high), abs=1e-12)
        assert row["val_se"] == pytest.approx(band.se, abs=1e-12)
        probs = load_val_probs(folder)
        assert probs is not None and probs[0].shape == (len(y_val), 5)
    assert not (res.best_dir / "val_probs.npz").exists()  # best/ is the exported model only
    # the probes' row in transferability.csv is their trial's
    trans = _csv(res, "transferability").set_index("source")
    probes = trials[trials["strategy"] == "linear_probe"]
    assert len(probes) == 2
    for row in probes.itertuples():
        got = trans.loc[[s for s in trans.index if s.endswith(row.source.split("@")[-1])][0]]
        assert (got["probe_val_score"], got["probe_val_low"], got["probe_val_high"]) == pytest.approx(
            (row.val_score, row.val_low, row.val_high))
    line = next(x for x in (res.out_dir / "report.md").read_text().splitlines() if x.startswith("**Answer:**"))
    assert re.search(r"test \d\.\d{3} \(\d\.\d\d–\d\.\d\d\)", line), line
    assert f"test {s['test_score']:.3f} ({s['test_low']:.2f}–{s['test_high']:.2f})" in line
    # the runner-up comparison is on record
    assert s["runner_up"] is not None and s["runner_up_diff_se"] > 0 and "standard error" in s["note"]


@pytest.mark.slow
def test_weak_spots_match_evaluate_on_the_test_split(imbalanced, cli, tmp_path):
    res, data = imbalanced
    out = tmp_path / "conf.csv"
    r = cli("evaluate", "--model", str(res.best_dir), "--data", str(data / "test"), "--out", str(out), "--json")
    assert r.code == 0, r.err
    [task] = json.loads(r.out)["tasks"]
    confusion = pd.read_csv(res.out_dir / "leaderboards" / "confusion.csv", dtype={"true": str})
    assert confusion.equals(pd.read_csv(out, dtype={"true": str}))
    per_class = pd.read_csv(res.out_dir / "leaderboards" / "per_class.csv", dtype={"class": str})
    assert list(per_class.columns) == ["task", "class", "precision", "recall", "f1", "support"]
    assert per_class["class"].tolist() == task["classes"]
    for row in per_class.to_dict("records"):
        want = task["per_class"][row["class"]]
        assert [row[k] for k in ("precision", "recall", "f1", "support")] == pytest.approx(
            [want[k] for k in ("precision", "recall", "f1", "support")])
    report = (res.out_dir / "report.md").read_text()
    weak = report.split("## Weak spots: the answer on test", 1)[1].split("\n## ", 1)[0]
    worst = min(task["classes"], key=lambda c: task["per_class"][c]["recall"])
    assert weak.index(f"| {worst} |") < min(weak.index(f"| {c} |") for c in task["classes"] if c != worst)
    assert "true ↓ predicted →" in weak


def test_each_task_s_validation_interval_is_that_task_s_own_wilson_or_bootstrap_interval():
    from types import SimpleNamespace

    from autotransfer._search.trial import task_intervals

    rng = np.random.default_rng(1)
    labels = np.stack([rng.integers(0, 3, 80), rng.integers(0, 2, 80)], axis=1)
    probs = [rng.dirichlet(np.ones(3), 80), rng.dirichlet(np.ones(2), 80)]
    two = SimpleNamespace(tasks=[SimpleNamespace(name="topic"), SimpleNamespace(name="kind")],
                          split_labels=lambda split: labels)
    got = task_intervals(two, "accuracy", probs)
    for i, name in enumerate(("topic", "kind")):
        hits = int((probs[i].argmax(axis=1) == labels[:, i]).sum())
        assert got[name] == pytest.approx(list(M.wilson_interval(hits, 80)))  # one task's accuracy: Wilson's
    balanced = task_intervals(two, "balanced_accuracy", probs)
    for i, name in enumerate(("topic", "kind")):
        band = M.scored("balanced_accuracy", labels[:, [i]], [probs[i]])
        assert balanced[name] == pytest.approx([band.low, band.high])
    one = SimpleNamespace(tasks=[SimpleNamespace(name="topic")], split_labels=lambda split: labels[:, :1])
    assert task_intervals(one, "accuracy", probs[:1]) is None  # one task: the trial's own interval
