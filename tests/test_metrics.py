"""``autotransfer.metrics``: the selection metrics against sklearn, the "auto" rule, and the intervals
against reference computations written here."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from sklearn import metrics as skm

from autotransfer import metrics as M
from autotransfer.errors import AutotransferError

# sklearn, the reference here, warns when a resample's predictions hold a class its labels do not
pytestmark = pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")


def _case(seed: int, n: int = 150, classes: int = 4, skill: float = 1.5):
    """Labels and probabilities of a weak classifier; some classes never predicted, some never present."""
    rng = np.random.default_rng(seed)
    y = rng.choice(classes, size=n, p=np.r_[0.5, np.full(classes - 2, 0.5 / (classes - 2)), 0.0])
    logits = rng.normal(size=(n, classes))
    logits[np.arange(n), y] += skill
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, probs


@pytest.mark.parametrize("seed", range(5))
def test_metrics_equal_sklearn_on_probabilities_and_on_predicted_classes(seed):
    y, p = _case(seed)
    pred = p.argmax(1)
    expected = {"accuracy": skm.accuracy_score(y, pred),
                "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
                "macro_f1": skm.f1_score(y, pred, average="macro", zero_division=0),
                "log_loss": skm.log_loss(y, y_proba=p, labels=range(p.shape[1]))}
    for name, value in expected.items():
        assert M.score(name, y, p) == pytest.approx(value, abs=1e-12)
        assert getattr(M, name)(y, p) == pytest.approx(value, abs=1e-12)
        if name != "log_loss":
            assert M.score(name, y, pred) == pytest.approx(value, abs=1e-12)
    assert [m.higher_is_better for m in M.METRICS.values()] == [True, True, True, False]
    assert M.METRICS["log_loss"].better(0.2, 0.3) and M.METRICS["accuracy"].better(0.3, 0.2)
    assert M.METRICS["log_loss"].direction == "minimize" and M.METRICS["log_loss"].oriented(0.2) == -0.2
    assert M.METRICS["macro_f1"].direction == "maximize" and M.METRICS["macro_f1"].oriented(0.2) == 0.2


def test_log_loss_clips_a_zero_probability_like_sklearn():
    y = np.array([0, 1, 1])
    p = np.array([[1.0, 0.0], [1.0, 0.0], [0.25, 0.75]])
    assert M.log_loss(y, p) == pytest.approx(skm.log_loss(y, y_proba=p), rel=1e-9)
    assert math.isfinite(M.log_loss(y, p))


def test_multi_task_score_is_the_mean_of_the_tasks_scores():
    (y0, p0), (y1, p1) = _case(1, classes=4), _case(2, classes=3)
    labels = np.stack([y0, y1], axis=1)
    for name in M.METRICS:
        per_task = [M.score(name, y0, p0), M.score(name, y1, p1)]
        assert M.score(name, labels, [p0, p1]) == pytest.approx(np.mean(per_task), abs=1e-12)
        assert M.task_scores(name, labels, [p0, p1]) == pytest.approx(per_task, abs=1e-12)
    assert M.balanced_accuracy(labels, [p0, p1]) == pytest.approx(
        (skm.balanced_accuracy_score(y0, p0.argmax(1)) + skm.balanced_accuracy_score(y1, p1.argmax(1))) / 2)


def test_per_class_and_confusion_match_sklearn():
    y, p = _case(3)
    pred = p.argmax(1)
    conf = M.confusion_matrix(y, pred, 4)
    assert conf.tolist() == skm.confusion_matrix(y, pred, labels=range(4)).tolist()
    prec, rec, f1, sup = skm.precision_recall_fscore_support(y, pred, labels=range(4), zero_division=0)
    got = M.per_class(conf)
    for key, ref in (("precision", prec), ("recall", rec), ("f1", f1), ("support", sup)):
        assert np.allclose(got[key], ref, atol=1e-12), key


def test_an_unknown_metric_or_bad_input_is_one_line_naming_the_fix():
    with pytest.raises(AutotransferError) as e:
        M.get_metric("auc")
    msg = str(e.value)
    assert "\n" not in msg and "'auc'" in msg
    assert "auto, accuracy, balanced_accuracy, macro_f1, log_loss" in msg
    y, p = _case(0)
    with pytest.raises(AutotransferError, match="needs probabilities"):
        M.log_loss(y, p.argmax(1))
    with pytest.raises(AutotransferError, match=r"shape \(149, 4\) for 150 labels"):
        M.accuracy(y, p[:-1])
    with pytest.raises(AutotransferError, match="0-based class indices"):
        M.accuracy(y + 3, p)
    with pytest.raises(AutotransferError, match="2 task\\(s\\) of probabilities for 1"):
        M.accuracy(y, [p, p])


def test_auto_needs_twenty_validation_items_in_every_class_for_balanced_accuracy():
    def labels(*counts):
        return np.repeat(np.arange(len(counts)), counts)

    train = labels(40, 20, 10, 5, 3)
    name, why = M.resolve_metric("auto", train, [5], val_labels=labels(40, 20, 10, 5, 3))
    assert name == "accuracy" and "40 vs 3 items, 13.33x" in why and "has 3 item(s) of its smallest class" in why
    assert "--metric balanced_accuracy" in why
    assert M.resolve_metric("auto", train, [5], val_labels=labels(90, 60, 40, 30, 20))[0] == "balanced_accuracy"
    assert M.resolve_metric("auto", train, [5], val_labels=labels(90, 60, 40, 30, 19))[0] == "accuracy"
    # a class missing from validation altogether, known from the class count
    assert M.resolve_metric("auto", train, [6], val_labels=labels(90, 60, 40, 30, 20))[0] == "accuracy"
    # balanced training classes stay on accuracy whatever validation holds; an asked metric is kept
    assert M.resolve_metric("auto", labels(20, 20), [2], val_labels=labels(3, 3))[0] == "accuracy"
    assert M.resolve_metric("balanced_accuracy", train, [5], val_labels=labels(3, 3, 3, 3, 3))[0] == "balanced_accuracy"
    # several tasks: every task's every class counts
    two_val = np.stack([labels(30, 30, 30), labels(60, 30)], axis=1)
    two_train = np.stack([labels(20, 20, 20), labels(40, 20)], axis=1)
    assert M.resolve_metric("auto", two_train, [3, 2], val_labels=two_val)[0] == "balanced_accuracy"
    assert M.fewest_items(two_val, [3, 2]) == 30 and M.fewest_items(two_val, [4, 2]) == 0


def test_auto_is_balanced_accuracy_from_a_largest_to_smallest_ratio_of_1_5():
    def labels(*counts):
        return np.repeat(np.arange(len(counts)), counts)

    assert M.resolve_metric("auto", labels(20, 20, 20))[0] == "accuracy"
    assert M.resolve_metric("auto", labels(29, 20, 25))[0] == "accuracy"  # 1.45x
    name, why = M.resolve_metric("auto", labels(30, 20, 25))  # 1.5x
    assert name == "balanced_accuracy" and "30 vs 20 items, 1.50x" in why and "imbalanced" in why
    name, why = M.resolve_metric("auto", labels(40, 20, 10, 5, 3))
    assert name == "balanced_accuracy" and "40 vs 3 items, 13.33x" in why
    # a class with no training item at all, known from the class count
    assert M.resolve_metric("auto", labels(20, 20), num_classes=[3])[0] == "balanced_accuracy"
    # several tasks: the most skewed one decides
    two = np.stack([labels(20, 20, 20), labels(40, 20)], axis=1)
    assert M.resolve_metric("auto", two)[0] == "balanced_accuracy"
    assert M.resolve_metric("macro_f1", labels(40, 3)) == ("macro_f1", "macro-F1, as asked (--metric macro_f1)")
    with pytest.raises(AutotransferError, match="'f1'"):
        M.resolve_metric("f1", labels(2, 2))
    # the real digits (1.05x) stay on accuracy
    from sklearn.datasets import load_digits

    assert M.resolve_metric("auto", load_digits().target)[0] == "accuracy"


def _wilson_reference(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The two p with (k/n - p)^2 = z^2 p (1 - p) / n: the roots of a quadratic, solved here directly."""
    phat = k / n
    a = 1 + z * z / n
    b = -(2 * phat + z * z / n)
    c = phat * phat
    disc = math.sqrt(max(b * b - 4 * a * c, 0.0))
    return ((-b - disc) / (2 * a), (-b + disc) / (2 * a))


@pytest.mark.parametrize(("k", "n"), [(0, 10), (10, 10), (7, 10), (45, 50), (1, 3), (512, 1000), (20, 23)])
def test_wilson_interval_is_the_quadratics_roots(k, n):
    low, high = M.wilson_interval(k, n)
    ref = _wilson_reference(k, n)
    assert low == pytest.approx(ref[0], abs=1e-12) and high == pytest.approx(ref[1], abs=1e-12)
    assert 0 <= low <= k / n <= high <= 1
    z99 = M.wilson_interval(k, n, z=2.576)
    assert z99[0] <= low and z99[1] >= high


def test_wilson_interval_bad_counts_are_one_line():
    assert all(math.isnan(v) for v in M.wilson_interval(0, 0))
    with pytest.raises(AutotransferError, match="expected 0 <= successes <= n"):
        M.wilson_interval(11, 10)


def _brute_force_bootstrap(fn, y_first, n_resamples, seed):
    """Resample item indices with replacement within each class of ``y_first``; ``fn(idx)`` per resample."""
    rng = np.random.default_rng(seed)
    strata = [np.flatnonzero(y_first == k) for k in np.unique(y_first)]
    return np.array([fn(np.concatenate([rng.choice(s, size=len(s)) for s in strata])) for _ in range(n_resamples)])


@pytest.mark.slow  # a brute-force bootstrap in Python loops
def test_bootstrap_intervals_match_a_brute_force_stratified_bootstrap_with_sklearn():
    y, p = _case(4, n=120, classes=3, skill=1.2)
    pred = p.argmax(1)
    refs = {"balanced_accuracy": lambda i: skm.balanced_accuracy_score(y[i], pred[i]),
            "macro_f1": lambda i: skm.f1_score(y[i], pred[i], average="macro", zero_division=0),
            "log_loss": lambda i: skm.log_loss(y[i], y_proba=p[i], labels=range(3))}
    for name, fn in refs.items():
        draws = _brute_force_bootstrap(fn, y, 2000, seed=123)
        ref_low, ref_high = np.quantile(draws, [0.025, 0.975])
        value, low, high = M.score_with_interval(name, y, p)
        scale = abs(ref_high - ref_low)  # Monte Carlo error of two independent 2000-draw estimates: ~3% of the width
        assert low == pytest.approx(ref_low, abs=0.1 * scale), name
        assert high == pytest.approx(ref_high, abs=0.1 * scale), name
        assert low < value < high
        assert M.standard_error(name, y, p) == pytest.approx(draws.std(ddof=1), rel=0.1), name


def test_bootstrap_is_seeded_and_keeps_the_class_counts():
    y, p = _case(5)
    assert M.score_with_interval("macro_f1", y, p) == M.score_with_interval("macro_f1", y, p)
    assert not np.array_equal(M.bootstrap_scores("macro_f1", y, p, 50, seed=1),
                              M.bootstrap_scores("macro_f1", y, p, 50, seed=2))
    # class 0 always right, class 1 always wrong: every stratified resample has balanced accuracy 0.5
    # (an unstratified one would move with the class shares)
    y2 = np.r_[np.zeros(30, int), np.ones(10, int)]
    pred2 = np.zeros(40, int)
    assert M.bootstrap_interval("balanced_accuracy", y2, pred2) == (0.5, 0.5)
    low, high = M.bootstrap_interval("accuracy", y2, pred2)
    assert low == high == 0.75


@pytest.mark.slow  # a brute-force bootstrap in Python loops
def test_multi_task_bootstrap_matches_a_brute_force_joint_resample():
    (y0, p0), (y1, p1) = _case(6, n=100, classes=3), _case(7, n=100, classes=4)
    labels = np.stack([y0, y1], axis=1)
    draws = _brute_force_bootstrap(
        lambda i: (skm.balanced_accuracy_score(y0[i], p0[i].argmax(1))
                   + skm.balanced_accuracy_score(y1[i], p1[i].argmax(1))) / 2, y0, 2000, seed=9)
    ref_low, ref_high = np.quantile(draws, [0.025, 0.975])
    value, low, high = M.score_with_interval("balanced_accuracy", labels, [p0, p1])
    scale = ref_high - ref_low
    assert low == pytest.approx(ref_low, abs=0.1 * scale) and high == pytest.approx(ref_high, abs=0.1 * scale)
    # accuracy over two tasks is a mean of dependent proportions: bootstrapped, not Wilson's
    acc, acc_low, acc_high = M.score_with_interval("accuracy", labels, [p0, p1])
    assert (acc_low, acc_high) == M.bootstrap_interval("accuracy", labels, [p0, p1])


def test_single_task_accuracy_interval_is_wilsons():
    y, p = _case(8, n=60)
    correct = int((p.argmax(1) == y).sum())
    assert np.allclose(M.score_with_interval("accuracy", y, p), (correct / 60, *_wilson_reference(correct, 60)),
                       rtol=0, atol=1e-12)
    assert M.standard_error("accuracy", y, p) == pytest.approx(math.sqrt(correct / 60 * (1 - correct / 60) / 60))


def test_metrics_module_imports_no_torch():
    code = "import sys, autotransfer.metrics; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow  # a brute-force bootstrap in Python loops
def test_paired_difference_matches_a_brute_force_paired_bootstrap_and_beats_unpaired_errors():
    y, pa = _case(9, n=120, classes=3, skill=1.5)
    rng = np.random.default_rng(10)
    pb = pa.copy()
    flip = rng.choice(120, 15, replace=False)  # b: a with 15 items' probabilities scrambled
    pb[flip] = rng.dirichlet(np.ones(3), 15)
    for name, fn in (("balanced_accuracy", lambda yy, p: skm.balanced_accuracy_score(yy, p.argmax(1))),
                     ("log_loss", lambda yy, p: skm.log_loss(yy, y_proba=p, labels=range(3)))):
        diff, se = M.paired_difference(name, y, pa, pb)
        assert diff == pytest.approx(fn(y, pa) - fn(y, pb), abs=1e-12)
        draws = _brute_force_bootstrap(lambda i, fn=fn: fn(y[i], pa[i]) - fn(y[i], pb[i]), y, 2000, seed=11)
        assert se == pytest.approx(draws.std(ddof=1), rel=0.1), name
        unpaired = math.hypot(M.standard_error(name, y, pa), M.standard_error(name, y, pb))
        assert se < 0.6 * unpaired, name
    assert M.paired_difference("macro_f1", y, pa, pa) == (0.0, 0.0)
