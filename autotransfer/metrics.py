"""The metrics that choose a model, and the intervals that say how sure each score is.

A metric scores labels against probabilities (or predicted class indices, for the metrics that
only need the argmax): ``accuracy``, ``balanced_accuracy``, ``macro_f1`` (higher is better) and
``log_loss`` (lower is better; ``Metric.higher_is_better`` says which, so callers flip once).
Labels are class indices, ``(n,)`` for one task or ``(n, T)`` for several; probabilities are
one ``(n, C)`` array or a list of one per task. With several tasks a score is the mean of the
tasks' scores. The confusion-matrix metrics match ``sklearn.metrics`` (balanced accuracy: mean
recall over the classes present in the labels; macro-F1: mean F1 over the classes present in the
labels or the predictions, 0 where undefined; log loss: the true class's probability clipped at
float64's eps).

``score_with_interval`` gives every score a 95% interval: Wilson's for one task's accuracy, else a
seeded stratified bootstrap (``BOOTSTRAP_RESAMPLES`` resamples, the same answer on every call).
numpy only: the search's report and the CLI import this without torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import AutotransferError

IMBALANCE_RATIO = 1.5  # largest / smallest training class count from which "auto" means balanced accuracy
# ... when every class has at least this many validation items; below it, balanced accuracy weighs a few items'
# luck so heavily that it chose worse models than accuracy did (see resolve_metric)
MIN_VAL_ITEMS = 20
# at 2000 an endpoint's seed-to-seed standard deviation is about 2% of the interval's width (measured: 5 classes,
# n = 50..5000, the three bootstrapped metrics), well under the third decimal a report prints for n >= 200
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
_CHUNK = 250  # resamples drawn at once for the item-level (log loss) bootstrap: bounds memory at ~250 x n
_CONFUSION_ENTRIES = 1 << 22  # confusion-matrix entries built at once (32 MB): 2000 resamples of 45 classes


@dataclass(frozen=True)
class Metric:
    """One selection metric."""

    name: str  # what --metric takes
    title: str  # how a report names it
    higher_is_better: bool  # False for losses: compare with ``better``
    needs_probabilities: bool  # True: predicted classes alone cannot score it
    from_confusion: Callable[[np.ndarray], np.ndarray] | None  # (..., C, C) counts -> (...) scores

    def better(self, a: float, b: float) -> bool:
        """Whether score ``a`` is strictly better than ``b`` under this metric."""
        return a > b if self.higher_is_better else a < b

    @property
    def direction(self) -> str:
        """Optuna's study direction for this metric: "maximize" or "minimize"."""
        return "maximize" if self.higher_is_better else "minimize"

    @property
    def score_title(self) -> str:
        """How a report names the oriented score: the title, a loss's as negated ("negated log loss")."""
        return self.title if self.higher_is_better else f"negated {self.title}"

    def oriented(self, value: float) -> float:
        """``value`` as a higher-is-better number (a loss negated): what a pruner or a "best so far"
        comparison written for accuracy can take unchanged."""
        return value if self.higher_is_better else -value


def confusion_matrix(labels: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``[true][predicted]`` over ``n_classes`` classes, int64."""
    out = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(out, (np.asarray(labels, np.int64), np.asarray(pred, np.int64)), 1)
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (sklearn's zero_division=0)."""
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def _diag(conf: np.ndarray) -> np.ndarray:
    return np.diagonal(conf, axis1=-2, axis2=-1).astype(np.float64)


def _accuracy_conf(conf: np.ndarray) -> np.ndarray:
    total = conf.sum(axis=(-2, -1))
    return np.where(total > 0, _diag(conf).sum(-1) / np.maximum(total, 1), np.nan)


def _balanced_conf(conf: np.ndarray) -> np.ndarray:
    support = conf.sum(-1)
    present = support > 0
    recall = _ratio(_diag(conf), support)
    k = present.sum(-1)
    return np.where(k > 0, (recall * present).sum(-1) / np.maximum(k, 1), np.nan)


def _macro_f1_conf(conf: np.ndarray) -> np.ndarray:
    # F1 = 2tp / (2tp + fp + fn) = 2tp / (row sum + column sum); sklearn averages over the classes seen
    seen = conf.sum(-1) + conf.sum(-2)
    f1 = _ratio(2 * _diag(conf), seen)
    k = (seen > 0).sum(-1)
    return np.where(k > 0, (f1 * (seen > 0)).sum(-1) / np.maximum(k, 1), np.nan)


def per_class(conf: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 (0 where undefined) and support of each class of a ``[true][pred]`` matrix."""
    conf = np.asarray(conf)
    support, predicted = conf.sum(1), conf.sum(0)
    return {"precision": _ratio(_diag(conf), predicted), "recall": _ratio(_diag(conf), support),
            "f1": _ratio(2 * _diag(conf), support + predicted), "support": support.astype(np.int64)}


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("accuracy", "accuracy", True, False, _accuracy_conf),
    Metric("balanced_accuracy", "balanced accuracy", True, False, _balanced_conf),
    Metric("macro_f1", "macro-F1", True, False, _macro_f1_conf),
    Metric("log_loss", "log loss", False, True, None),
)}


def get_metric(name: str | Metric) -> Metric:
    """The registered metric called ``name``; an unknown name is one line listing the valid ones."""
    if isinstance(name, Metric):
        return name
    if name not in METRICS:
        raise AutotransferError(f"unknown metric {name!r}: expected one of auto, {', '.join(METRICS)} "
                                "(pass --metric with one of these)")
    return METRICS[name]


def check_metric(name: str) -> str:
    """``name`` when it is ``auto`` or a registered metric; else the one-line error listing them."""
    if name != "auto":
        get_metric(name)
    return name


def _as_tasks(labels: Any, scores: Any, metric: Metric) -> list[tuple[np.ndarray, np.ndarray]]:
    """(labels, scores) per task, checked: each task's labels (n,) int64 and its probabilities (n, C)
    float64 or predicted classes (n,) int64."""
    y = np.asarray(labels)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or not np.issubdtype(y.dtype, np.integer):
        raise AutotransferError(f"labels of shape {y.shape} ({y.dtype}) cannot be scored: expected class indices, "
                                "(n,) for one task or (n, tasks); pass integer labels")
    per_task = list(scores) if isinstance(scores, (list, tuple)) else [scores]
    if len(per_task) != y.shape[1]:
        raise AutotransferError(f"{len(per_task)} task(s) of probabilities for {y.shape[1]} task(s) of labels: "
                                "pass one (n, classes) array per label column")
    out = []
    for t, s in enumerate(per_task):
        s = np.asarray(s)
        if s.ndim not in (1, 2) or s.shape[0] != y.shape[0]:
            raise AutotransferError(f"task {t}: probabilities of shape {s.shape} for {y.shape[0]} labels: expected "
                                    f"({y.shape[0]}, classes) probabilities or ({y.shape[0]},) predicted classes")
        if s.ndim == 1 and metric.needs_probabilities:
            raise AutotransferError(f"{metric.name} needs probabilities, but task {t} has predicted classes only: "
                                    "pass the (n, classes) probabilities")
        if s.ndim == 2 and not np.isfinite(s).all():
            raise AutotransferError(f"task {t}: the probabilities hold nan or inf; score only the items the model "
                                    "could read (drop rows whose prediction failed)")
        n_classes = s.shape[1] if s.ndim == 2 else int(max(y[:, t].max(initial=0), s.max(initial=0))) + 1
        if y.shape[0] and (y[:, t].min() < 0 or y[:, t].max() >= n_classes):
            raise AutotransferError(f"task {t}: labels range over {y[:, t].min()}..{y[:, t].max()} but the "
                                    f"probabilities have {n_classes} classes; pass labels as 0-based class indices")
        out.append((y[:, t].astype(np.int64), s.astype(np.float64) if s.ndim == 2 else s.astype(np.int64)))
    return out


def _predicted(s: np.ndarray) -> np.ndarray:
    return s.argmax(axis=1) if s.ndim == 2 else s


def _item_log_loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    eps = np.finfo(np.float64).eps
    return -np.log(np.clip(p[np.arange(len(y)), y], eps, 1 - eps))


def _task_score(metric: Metric, y: np.ndarray, s: np.ndarray) -> float:
    if not len(y):
        return math.nan
    if metric.from_confusion is None:
        return float(_item_log_loss(y, s).mean())
    n_classes = s.shape[1] if s.ndim == 2 else int(max(y.max(), s.max())) + 1
    return float(metric.from_confusion(confusion_matrix(y, _predicted(s), n_classes)))


def task_scores(metric: str | Metric, labels: Any, probs: Any) -> list[float]:
    """``metric`` of each task's ``probs`` (or predicted classes) against its column of ``labels``."""
    m = get_metric(metric)
    return [_task_score(m, y, s) for y, s in _as_tasks(labels, probs, m)]


def score(metric: str | Metric, labels: Any, probs: Any) -> float:
    """``metric`` of ``probs`` (or predicted classes) against ``labels``; the mean over tasks when there are several."""
    return float(np.mean(task_scores(metric, labels, probs)))


def accuracy(labels: Any, probs: Any) -> float:
    """Share of items whose most probable class is the true one (mean over tasks). Higher is better."""
    return score("accuracy", labels, probs)


def balanced_accuracy(labels: Any, probs: Any) -> float:
    """Mean recall over the classes present in ``labels`` (mean over tasks). Higher is better."""
    return score("balanced_accuracy", labels, probs)


def macro_f1(labels: Any, probs: Any) -> float:
    """Mean F1 over the classes present in the labels or the predictions (mean over tasks). Higher is better."""
    return score("macro_f1", labels, probs)


def log_loss(labels: Any, probs: Any) -> float:
    """Mean negative log-probability of the true class (mean over tasks). Lower is better."""
    return score("log_loss", labels, probs)


def class_ratio(train_labels: Any, num_classes: Sequence[int] | None = None) -> tuple[float, int, int]:
    """(largest / smallest class count, largest, smallest) over the tasks' training labels: the most skewed
    task's. A class listed in ``num_classes`` with no training item makes the ratio infinite."""
    y = np.asarray(train_labels)
    y = y[:, None] if y.ndim == 1 else y
    worst = (1.0, 0, 0)
    for t in range(y.shape[1]):
        size = num_classes[t] if num_classes is not None else int(y[:, t].max(initial=-1)) + 1
        counts = np.bincount(y[:, t], minlength=size)
        counts = counts if num_classes is not None else counts[counts > 0]
        if not len(counts):
            continue
        hi, lo = int(counts.max()), int(counts.min())
        ratio = math.inf if lo == 0 else hi / lo
        if ratio > worst[0]:
            worst = (ratio, hi, lo)
    return worst


def fewest_items(labels: Any, num_classes: Sequence[int]) -> int:
    """The fewest items any class of any task has in ``labels`` ((n,) or (n, tasks)); 0 for a class with none."""
    y = np.asarray(labels).reshape(len(labels), -1)
    return min(int(np.bincount(y[:, t], minlength=int(c)).min()) for t, c in enumerate(num_classes))


def resolve_metric(name: str, train_labels: Any, num_classes: Sequence[int] | None = None,
                   val_labels: Any = None) -> tuple[str, str]:
    """The metric a search chooses by, and one sentence saying why (for the summary and the report).

    ``auto`` is balanced accuracy when the training classes are imbalanced — the largest class has at
    least ``IMBALANCE_RATIO`` (1.5) times the items of the smallest, in any task — and accuracy otherwise.
    Why 1.5: accuracy weighs each class's recall by its share of the items, so at a ratio r a point of
    the rare class's recall counts 1/r of one of the largest class's: at 1.5 already a third less, and a
    model that trades the rare class away for the common one starts to win. Balanced accuracy weighs
    them alike, and its price is noise: for two classes with equal recall its variance is
    (1 + r)^2 / (4r) times accuracy's, 1.04 at r = 1.5 (2% wider intervals), 1.33 at r = 3. Below 1.5 the two
    metrics rank models nearly alike (on equal counts they are the same number), so accuracy, the
    number users read most easily, stays; the real offline corpora stay on it (digits 1.05x, BBC news 1.32x).

    With ``val_labels``, balanced accuracy also needs ``MIN_VAL_ITEMS`` (20) validation items in every class:
    it averages per-class recalls, so a class with 3 validation items moves it by a third of 1/C per item,
    and a search comparing many trials (and epochs) by it picks whichever was luckiest on those few items.
    Measured on the suite's imbalanced task (40/20/10/5/3 training items, benchmarks/bench_final.py): with
    3 validation items in the rarest class, choosing by balanced accuracy lost 2.9 pp of test balanced
    accuracy to choosing by accuracy over 10 search seeds (3 of them picked a configuration 8-11 pp worse).
    """
    if name != "auto":
        return get_metric(name).name, f"{get_metric(name).title}, as asked (--metric {name})"
    ratio, hi, lo = class_ratio(train_labels, num_classes)
    if ratio >= IMBALANCE_RATIO:
        skew = "a class with no training item" if math.isinf(ratio) else f"{hi} vs {lo} items, {ratio:.2f}x"
        fewest = None
        if val_labels is not None and len(val_labels):
            y = np.asarray(val_labels).reshape(len(val_labels), -1)
            fewest = fewest_items(y, num_classes or [int(y[:, t].max()) + 1 for t in range(y.shape[1])])
        if fewest is not None and fewest < MIN_VAL_ITEMS:
            return "accuracy", (f"accuracy: the training classes are imbalanced ({skew}), but the validation split "
                                f"has {fewest} item(s) of its smallest class, under the {MIN_VAL_ITEMS} balanced "
                                "accuracy needs to measure a class's recall (pass --metric balanced_accuracy to "
                                "choose by it anyway)")
        return "balanced_accuracy", (f"balanced accuracy: the training classes are imbalanced ({skew}, at or "
                                     f"above {IMBALANCE_RATIO}x), and accuracy would let a model ignore a rare class")
    return "accuracy", (f"accuracy: the training classes are balanced (largest/smallest {ratio:.2f}x, below "
                        f"{IMBALANCE_RATIO}x)")


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of ``successes`` out of ``n`` (95% at z = 1.96); (nan, nan) when n is 0.

    Unlike p ± z·se it stays inside [0, 1] and is not empty at 0 or n successes, which matters on
    validation splits of a few dozen items.
    """
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise AutotransferError(f"wilson_interval(successes={successes}, n={n}): expected 0 <= successes <= n")
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # at 0 or n successes the bound is exactly 0 or 1; the formula leaves a rounding residue of ~1e-17
    return (0.0 if successes == 0 else max(0.0, centre - half), 1.0 if successes == n else min(1.0, centre + half))


def bootstrap_scores(metric: str | Metric, labels: Any, probs: Any, n_resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """``metric`` on ``n_resamples`` stratified bootstrap resamples of the items, seeded: the same array on
    every call.

    Items are resampled with replacement within each class of the first task, the way the splits are
    drawn (stratified on it), so every resample keeps the split's class counts. For the
    confusion-matrix metrics the resample is drawn as counts: within a class, how many resampled items
    fall in each (labels, predictions) cell is multinomial, which is the same distribution as drawing
    items and costs O(cells), not O(n), per resample.
    """
    m = get_metric(metric)
    tasks = _as_tasks(labels, probs, m)
    return _draws(m, tasks, np.full(len(tasks), 1 / len(tasks)), n_resamples, seed)


def _draws(m: Metric, tasks: list[tuple[np.ndarray, np.ndarray]], coef: np.ndarray, n_resamples: int,
           seed: int) -> np.ndarray:
    """sum_t coef[t] * (task t's score) on each stratified resample (strata: the first task's classes)."""
    if n_resamples < 1:
        raise AutotransferError(f"n_resamples={n_resamples}: expected at least 1 bootstrap resample")
    rng = np.random.default_rng(seed)
    first = tasks[0][0]
    strata = [np.flatnonzero(first == k) for k in np.unique(first)]
    if m.from_confusion is None:
        losses = np.sum([c * _item_log_loss(y, s) for c, (y, s) in zip(coef, tasks, strict=True)], axis=0)
        return _bootstrap_means(losses, strata, n_resamples, rng)
    return _bootstrap_confusion(m, tasks, strata, n_resamples, rng) @ coef


def paired_difference(metric: str | Metric, labels: Any, probs_a: Any, probs_b: Any) -> tuple[float, float]:
    """(score of a - score of b, its standard error) for two models scored on the same items.

    The standard error comes from one stratified bootstrap that resamples the items once for both
    models, so what they share (the same hard items) cancels: the honest test of "are these two apart"
    on one validation split, tighter than the two scores' own errors combined.
    """
    m = get_metric(metric)
    ta, tb = _as_tasks(labels, probs_a, m), _as_tasks(labels, probs_b, m)
    coef = np.r_[np.full(len(ta), 1 / len(ta)), np.full(len(tb), -1 / len(tb))]
    diff = score(m, labels, probs_a) - score(m, labels, probs_b)
    if not len(ta[0][0]):
        return (math.nan, math.nan)
    return (diff, float(np.std(_draws(m, ta + tb, coef, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED), ddof=1)))


def _bootstrap_means(values: np.ndarray, strata: list[np.ndarray], n_resamples: int,
                     rng: np.random.Generator) -> np.ndarray:
    total = np.zeros(n_resamples)
    for idx in strata:
        for start in range(0, n_resamples, _CHUNK):
            size = min(_CHUNK, n_resamples - start)
            total[start:start + size] += values[idx][rng.integers(0, len(idx), size=(size, len(idx)))].sum(1)
    return total / sum(len(idx) for idx in strata)


def _bootstrap_confusion(m: Metric, tasks: list[tuple[np.ndarray, np.ndarray]], strata: list[np.ndarray],
                         n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    sizes = [s.shape[1] if s.ndim == 2 else int(max(y.max(), s.max())) + 1 for y, s in tasks]
    preds = [_predicted(s) for _, s in tasks]
    # a cell is one (every task's label, every task's prediction) combination
    flat = np.stack([y * c + p for (y, _), p, c in zip(tasks, preds, sizes, strict=True)], axis=1)
    cells, inverse = np.unique(flat, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    counts = np.zeros((n_resamples, len(cells)), np.int64)
    for idx in strata:
        present, per_cell = np.unique(inverse[idx], return_counts=True)
        counts[:, present] += rng.multinomial(len(idx), per_cell / len(idx), size=n_resamples)
    scores = np.zeros((n_resamples, len(tasks)))  # each task's score on each resample
    for t, c in enumerate(sizes):
        # the cells' counts summed per confusion entry (cells of several tasks share one task's entry)
        order = np.argsort(cells[:, t], kind="stable")
        entries, starts = np.unique(cells[order, t], return_index=True)
        per_entry = np.add.reduceat(counts[:, order], starts, axis=1)
        step = max(1, _CONFUSION_ENTRIES // (c * c))  # resamples per block: bounds memory at many classes
        for start in range(0, n_resamples, step):
            block = per_entry[start:start + step]
            conf = np.zeros((len(block), c * c), np.int64)
            conf[:, entries] = block
            scores[start:start + len(block), t] = m.from_confusion(conf.reshape(len(block), c, c))
    return scores


def bootstrap_interval(metric: str | Metric, labels: Any, probs: Any, confidence: float = 0.95,
                       n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """The percentile interval of the stratified bootstrap (``bootstrap_scores``): (low, high)."""
    if not 0 < confidence < 1:
        raise AutotransferError(f"confidence={confidence}: expected a level between 0 and 1, e.g. 0.95")
    return _percentiles(bootstrap_scores(metric, labels, probs, n_resamples, seed), confidence)


def _percentiles(draws: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    low, high = np.quantile(draws, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def _wilson_applies(m: Metric, labels: Any) -> bool:
    return m.name == "accuracy" and (np.ndim(labels) == 1 or np.shape(labels)[1] == 1)


def score_with_interval(metric: str | Metric, labels: Any, probs: Any) -> tuple[float, float, float]:
    """(score, low, high): the score with its 95% interval, Wilson's for one task's accuracy (a
    proportion of independent items), the stratified bootstrap's for every other metric and for the
    mean accuracy over several tasks (their items are the same, so not independent)."""
    m = get_metric(metric)
    value = score(m, labels, probs)
    if math.isnan(value):
        return (value, math.nan, math.nan)
    if _wilson_applies(m, labels):
        n = len(np.asarray(labels))
        return (value, *wilson_interval(round(value * n), n))
    return (value, *bootstrap_interval(m, labels, probs))


@dataclass(frozen=True)
class Scored:
    """A score, its 95% interval and its standard error, higher is better: a loss is negated (sklearn's
    ``neg_log_loss``), so ``low <= value <= high`` and a larger number is a better model for every metric."""

    value: float
    low: float
    high: float
    se: float

    @classmethod
    def missing(cls) -> Scored:
        """No score (an empty split)."""
        return cls(math.nan, math.nan, math.nan, math.nan)


def scored(metric: str | Metric, labels: Any, probs: Any) -> Scored:
    """``score_with_interval`` and ``standard_error`` in one pass (one set of bootstrap draws), oriented
    (``Metric.oriented``): what the search records for every validation and test score."""
    m = get_metric(metric)
    value = score(m, labels, probs)
    if math.isnan(value):
        return Scored.missing()
    if _wilson_applies(m, labels):
        n = len(np.asarray(labels))
        low, high = wilson_interval(round(value * n), n)
        se = math.sqrt(value * (1 - value) / n)
    else:
        draws = bootstrap_scores(m, labels, probs)
        low, high = _percentiles(draws)
        se = float(np.std(draws, ddof=1))
    if not m.higher_is_better:
        value, low, high = -value, -high, -low
    return Scored(float(value), float(low), float(high), float(se))


def scorable(metric: str | Metric, preds: Any, probs: Sequence[Any]) -> list[np.ndarray]:
    """What ``metric`` is computed from, per task: the probabilities where it needs them (log loss), else
    the predicted classes ``preds`` ((n, tasks) or one column per task), so that a metric of the argmax
    scores the model's own predictions (an argmax of rounded probabilities could break a tie otherwise)."""
    if get_metric(metric).needs_probabilities:
        return list(probs)
    p = np.asarray(preds)
    return [p] if p.ndim == 1 else [p[:, t] for t in range(p.shape[1])]


def task_values(metric: str | Metric, labels: Any, preds: Any, probs: Sequence[Any]) -> list[float]:
    """Each task's score, oriented (a loss negated), of a model's predicted classes ``preds`` and, for a
    metric that needs them, its per-task probabilities ``probs`` (see ``scorable``)."""
    m = get_metric(metric)
    return [m.oriented(v) for v in task_scores(m, labels, scorable(m, preds, probs))]


def standard_error(metric: str | Metric, labels: Any, probs: Any) -> float:
    """The score's standard error: sqrt(p(1 - p) / n) for one task's accuracy (the kept-epoch rule's),
    else the standard deviation of the stratified bootstrap's scores."""
    m = get_metric(metric)
    if _wilson_applies(m, labels):
        n = len(np.asarray(labels))
        p = score(m, labels, probs)
        return math.sqrt(p * (1 - p) / n) if n else math.nan
    if not len(np.asarray(labels)):
        return math.nan
    return float(np.std(bootstrap_scores(m, labels, probs), ddof=1))
