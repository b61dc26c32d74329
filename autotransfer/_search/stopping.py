"""When the search stops asking for trials: one rule per class, composed by the runner.

Shaped like Optuna's pruners: each rule checks its arguments where it is made and answers one
question about a study, ``reason(study)``: why the search should end now (the user's note), or
None to go on. The runner asks them between trials, under the study lock, in the order it lists
them. ``counted`` (which trials count toward ``--trials``) is the one count the rules and the
runner share.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import optuna
from optuna.trial import TrialState

from ..metrics import get_metric
from . import storage as st
from .budget import MIN_USEFUL_EPOCHS
from .record import SEARCH, StudyRecord, TrialRecord

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def counted(study: optuna.Study, top_probes: int) -> int:
    """Trials that count toward ``--trials``: as ``storage.counted``, except that probing the sources
    beyond the top-k is part of ranking (``top_probes``: as many probes count as the top-k sources have)."""
    probes = sum(1 for t in study.get_trials(deepcopy=False, states=_FINISHED) if TrialRecord.from_frozen(t).fixed)
    return st.counted(study) - max(0, probes - top_probes)


def cheapest_epoch(study: optuna.Study) -> float | None:
    """Seconds per epoch of the cheapest finished trial that trained (no probe, no baseline), or None."""
    records = [TrialRecord.from_frozen(t) for t in study.get_trials(deepcopy=False, states=_FINISHED)]
    costs = [float(r.epoch_seconds) for r in records if r.epoch_seconds and not r.is_scratch and not r.fixed]
    return min(costs) if costs else None


def perfect_trial(study: optuna.Study) -> int | None:
    """The first complete trial with a perfect validation score (1.0), once no trial is running."""
    if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        return None
    perfect = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
               if t.value is not None and t.value >= 1.0]
    return min(perfect) if perfect else None


def stalled(study: optuna.Study) -> int:
    """How many sampled trials have finished (complete or pruned) since the best validation score so far
    was reached (by any trial: probe, baseline or sampled; its first holder on ties)."""
    done = study.get_trials(deepcopy=False, states=_FINISHED)
    values = [(t.value, -t.number) for t in done if t.state == TrialState.COMPLETE and t.value is not None
              and not math.isnan(t.value)]
    if not values:
        return 0
    first_best = -max(values)[1]
    return sum(1 for t in done if t.number > first_best and TrialRecord.from_frozen(t).role == SEARCH)


class StoppingRule(ABC):
    """One reason to end the search between trials."""

    hint = ""  # what the note adds after "the search ends after N of M trials"

    @abstractmethod
    def reason(self, study: optuna.Study) -> str | None:
        """Why the search should end now, or None to go on."""


class PerfectScore(StoppingRule):
    """A trial with a perfect validation score (1.0: accuracy, balanced accuracy or macro-F1) cannot be
    beaten (the answer is the best on validation, ties going to the first), so nothing after it can
    change the answer."""

    hint = " (--stall-trials 0 runs them all)"

    def reason(self, study: optuna.Study) -> str | None:
        perfect = perfect_trial(study)
        if perfect is None:
            return None
        title = get_metric(StudyRecord.from_study(study).selection_metric).score_title
        return f"trial {perfect} reached validation {title} 1.0, which no later trial can beat (ties keep the first)"


class Stalled(StoppingRule):
    """``trials`` sampled trials in a row finished without raising the best validation score: the
    sampler is spending the budget on configurations it has learnt are worse."""

    hint = " (--stall-trials 0 runs them all)"

    def __init__(self, trials: int):
        if trials < 1:
            raise ValueError(f"trials must be at least 1, but got {trials=}.")
        self.trials = trials

    def reason(self, study: optuna.Study) -> str | None:
        if stalled(study) < self.trials:
            return None
        return f"the last {self.trials} sampled trials did not raise the best validation score"


class TooLittleTime(StoppingRule):
    """What is left of the budget does not fit ``min_epochs`` epochs of the cheapest fine-tuning trial
    so far: a sampled trial started now would only be cut (default: ``MIN_USEFUL_EPOCHS``)."""

    hint = "; raise --timeout for more"

    def __init__(self, budget: Any, min_epochs: int | None = None):
        self.budget = budget  # a ``Budget``: its ``remaining()`` seconds
        self.min_epochs = MIN_USEFUL_EPOCHS if min_epochs is None else min_epochs
        if self.min_epochs < 1:
            raise ValueError(f"min_epochs must be at least 1, but got min_epochs={self.min_epochs}.")

    def reason(self, study: optuna.Study) -> str | None:
        cheapest = cheapest_epoch(study)
        left = self.budget.remaining()
        if cheapest is None or left >= self.min_epochs * cheapest:
            return None
        return (f"{max(0.0, left):.0f} s of the time budget are left, under {self.min_epochs} epochs of the cheapest "
                f"fine-tuning trial so far ({cheapest:.0f} s each)")
