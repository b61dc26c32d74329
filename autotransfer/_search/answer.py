"""The answer: the best transfer trial on validation, never worse than scratch; when the runner-up is
within one standard error of it, the cheaper of the two to run.

Every trial's value is the study's metric, higher is better (a loss negated). The best completed
transfer trial is the answer unless no transfer trial beat the best scratch baseline (negative
transfer: scratch is the answer). Validation cannot tell apart two trials whose difference is within
one standard error of it, so when the runner-up (the second-best transfer trial) is that close, still
beats scratch, has fewer parameters (what it costs to run) and has its weights here, it is the answer.
The difference's standard error is the paired bootstrap's (``metrics.paired_difference``) when both
trials' validation probabilities are on disk (kept beside their weights, ``VAL_PROBS``), else the
unpaired one from their recorded standard errors.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial

from ..metrics import paired_difference
from .record import TrialRecord

VAL_PROBS = "val_probs.npz"  # a kept trial's per-task validation probabilities, beside its weights


def save_val_probs(folder: Path, probs: list[np.ndarray]) -> None:
    """Keep a trial's per-task validation probabilities in its model folder (nothing when there are none)."""
    if probs:
        np.savez_compressed(Path(folder) / VAL_PROBS, *[np.asarray(p, np.float32) for p in probs])


def load_val_probs(folder: Path) -> list[np.ndarray] | None:
    """The probabilities ``save_val_probs`` kept, or None when the folder has none (another worker's trial)."""
    path = Path(folder) / VAL_PROBS
    if not path.is_file():
        return None
    with np.load(path) as f:
        return [f[f"arr_{i}"] for i in range(len(f.files))]


@dataclass(frozen=True)
class Answer:
    """What ``choose_answer`` decided, and the comparison the summary reports."""

    trial: FrozenTrial  # the chosen trial
    baseline: FrozenTrial | None  # the best scratch baseline (None: none completed)
    negative: bool  # no transfer trial beat scratch on validation, so the answer is the scratch baseline
    runner_up: FrozenTrial | None = None  # the trial it was compared with (the best transfer trial when negative)
    diff: float | None = None  # the best's validation score minus the runner-up's (>= 0)
    diff_se: float | None = None  # that difference's standard error
    paired: bool = False  # diff_se is the paired bootstrap's (both trials' validation probabilities were here)
    cheaper: bool = False  # the runner-up was within one standard error and cheaper to run: it is the answer
    kept_because: str = ""  # within one standard error, yet the answer stays: why

    @property
    def within_se(self) -> bool:
        """Whether validation cannot tell the answer and the runner-up apart (within one standard error)."""
        return self.diff is not None and self.diff_se is not None and self.diff <= self.diff_se


def _cost(t: FrozenTrial) -> int | None:
    """What a trial's model costs to run: its parameters, all of them (None: not recorded)."""
    return TrialRecord.from_frozen(t).total_params


def _se(t: FrozenTrial) -> float | None:
    interval = TrialRecord.from_frozen(t).val_interval
    return float(interval[2]) if interval and len(interval) > 2 and interval[2] is not None else None


def difference_se(a: FrozenTrial, b: FrozenTrial, models_dir: Path, metric: str,
                  labels: np.ndarray) -> tuple[float | None, bool]:
    """(standard error of a's validation score minus b's, whether it is the paired one)."""
    pa, pb = load_val_probs(models_dir / f"trial_{a.number}"), load_val_probs(models_dir / f"trial_{b.number}")
    if pa is not None and pb is not None and len(pa) == len(pb) and all(len(p) == len(labels) for p in pa + pb):
        return paired_difference(metric, labels, pa, pb)[1], True
    sa, sb = _se(a), _se(b)
    return (math.hypot(sa, sb), False) if sa is not None and sb is not None else (None, False)


def choose_answer(complete: list[FrozenTrial], models_dir: Path, metric: str, labels: np.ndarray) -> Answer | None:
    """The answer among the ``complete`` trials (None when none completed); see the module docstring."""
    scratch = [t for t in complete if TrialRecord.from_frozen(t).is_scratch]
    transfer = sorted((t for t in complete if not TrialRecord.from_frozen(t).is_scratch),
                      key=lambda t: (-t.value, t.number))
    base = max(scratch, key=lambda t: t.value) if scratch else None
    best = transfer[0] if transfer else None
    negative = base is not None and (best is None or best.value <= base.value)
    answer = base if negative else best
    if answer is None:
        return None
    other = best if negative else (transfer[1] if len(transfer) > 1 else None)
    if other is None:
        return Answer(answer, base, negative)
    se, paired = difference_se(answer, other, models_dir, metric, labels)
    found = Answer(answer, base, negative, other, answer.value - other.value, se, paired)
    if negative or not found.within_se:
        return found
    why = _kept_because(answer, other, base, models_dir)
    if why:
        return dataclasses.replace(found, kept_because=why)
    return Answer(other, base, negative, answer, found.diff, se, paired, cheaper=True)


def _kept_because(answer: FrozenTrial, other: FrozenTrial, base: FrozenTrial | None, models_dir: Path) -> str:
    """Why ``other``, within one standard error of ``answer``, does not become the answer ("" when it does)."""
    a_cost, o_cost = _cost(answer), _cost(other)
    if a_cost is None or o_cost is None or o_cost >= a_cost:
        return "the runner-up is not cheaper to run"
    if base is not None and other.value <= base.value:
        return "the runner-up is not better than scratch on validation"
    if not (models_dir / f"trial_{other.number}" / "config.json").is_file():
        return "the runner-up's weights are on another worker"
    return ""


def describe(answer: Answer, title: str) -> str:
    """The summary's sentence on the runner-up comparison ("" when there was no runner-up)."""
    if answer.runner_up is None or answer.diff is None:
        return ""
    other = answer.runner_up
    gap = f"{answer.diff:.4f} on validation {title}" + (
        f" (the difference's standard error {answer.diff_se:.4f}, {'paired' if answer.paired else 'unpaired'})"
        if answer.diff_se is not None else " (no standard error recorded)")
    if answer.cheaper:
        return (f"trial {answer.trial.number} and trial {other.number} (the best on validation) differ by {gap}, within "
                f"one standard error, so validation cannot tell them apart: the answer is trial {answer.trial.number}, "
                f"the cheaper to run ({_cost(answer.trial):,} vs {_cost(other):,} parameters)")
    if answer.negative:
        return f"the best transfer trial ({other.number}) trails the scratch baseline by {gap}"
    if answer.within_se:
        return (f"the answer and the runner-up (trial {other.number}) differ by {gap}, within one standard error, so "
                f"validation cannot tell them apart; the answer stays: {answer.kept_because}")
    return f"the answer leads the runner-up (trial {other.number}) by {gap}, more than one standard error"


def comparison_columns(answer: Answer) -> dict[str, Any]:
    """The summary's columns on the comparison."""
    return {"runner_up": answer.runner_up.number if answer.runner_up is not None else None,
            "runner_up_diff": answer.diff, "runner_up_diff_se": answer.diff_se,
            "within_se": answer.within_se if answer.runner_up is not None else None}
