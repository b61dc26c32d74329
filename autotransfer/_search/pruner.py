"""ScratchBaselinePruner: prune a trial whose validation curve falls behind scratch's."""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial, TrialState

from ..errors import AutotransferError
from .record import TrialRecord

BEHIND_SCRATCH = "behind scratch"
CANNOT_CATCH_UP = "cannot catch up"  # even optimistically extrapolated, it ends below the best finished trial
NEGLIGIBLE = 0.05  # remaining cost, as a fraction of a baseline epoch, below which pruning saves nothing


class ScratchBaselinePruner(BasePruner):
    """Prune trials that trail the from-scratch baselines; delegate the rest to an efficiency pruner.

    After ``warmup_epochs`` epochs, a trial whose validation score is below the best scratch
    baseline's at the same epoch by more than ``margin`` for ``patience`` consecutive epochs is
    pruned (reason ``"behind scratch"``). Otherwise ``inner`` (e.g. a median or successive-halving
    pruner) decides, and its prunes are recorded under its own name. Baselines (one per
    architecture) are never pruned. Epochs count from 0; a baseline's last value stands for
    epochs it has not reached yet (it may still be running on another worker, or its budget
    ended it early).

    A trial that cannot catch up is pruned too (reason ``"cannot catch up"``): after warm-up and
    ``patience`` + 1 epochs, its best value plus its steepest gain per epoch over the last
    ``patience`` epochs, for every epoch it has left (``planned_epochs``), is still more than
    ``margin`` below the best finished trial of any role. The answer is chosen on validation, so
    such a trial cannot change it; the extrapolation is optimistic (learning curves flatten, and
    under a cosine schedule their gains shrink), so it errs toward training on. The search applies
    the same test to a scratch baseline: one that cannot catch up is stopped there (and still
    completes as the reference for the epochs it reached), since scratch could not be the answer.

    Cost-aware: a trial whose remaining cost (epochs left × its seconds per epoch, from the
    ``planned_epochs`` / ``epoch_seconds`` user attributes) is at most ``NEGLIGIBLE`` of the cheapest
    baseline epoch is never pruned, by either rule: stopping it saves nothing, and a cheap trial
    (a probe on cached features) may be far from its final value at a matched epoch.
    """

    def __init__(self, warmup_epochs: int = 1, patience: int = 2, margin: float = 0.02,
                 inner: BasePruner | None = None):
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs cannot be negative, but got {warmup_epochs=}.")
        if patience < 1:
            raise ValueError(f"patience must be at least 1, but got {patience=}.")
        if margin < 0:
            raise ValueError(f"margin cannot be negative, but got {margin=}.")
        self.warmup_epochs = warmup_epochs
        self.patience = patience
        self.margin = margin
        self.inner = inner
        self.reasons: dict[int, str] = {}  # trial number -> why it was pruned (this process's trials)

    @staticmethod
    def baseline_curves(study: optuna.Study) -> list[dict[int, float]]:
        """The intermediate values of every non-failed scratch baseline (one per architecture)."""
        return [dict(t.intermediate_values)
                for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING,
                                                                   TrialState.PRUNED))
                if TrialRecord.from_frozen(t).is_scratch and t.intermediate_values]

    @staticmethod
    def reference(curves: list[dict[int, float]], epoch: int) -> float | None:
        """The best scratch value at ``epoch``: per baseline its value there, or its last value when it
        has not got that far yet; the maximum over baselines (None when none has reached the epoch)."""
        refs = []
        for c in curves:
            last = max(c)
            v = c.get(epoch, c[last] if epoch > last else None)
            if v is not None and not math.isnan(v):
                refs.append(v)
        return max(refs) if refs else None

    @staticmethod
    def cheap_to_finish(study: optuna.Study, trial: FrozenTrial) -> bool:
        """Whether what is left of ``trial`` costs at most ``NEGLIGIBLE`` of the cheapest baseline epoch."""
        record = TrialRecord.from_frozen(trial)
        planned, per_epoch, step = record.planned_epochs, record.epoch_seconds, trial.last_step
        if planned is None or per_epoch is None or step is None:
            return False
        left = max(0, int(planned) - step - 1) * float(per_epoch)
        if left == 0:
            return True
        records = [TrialRecord.from_frozen(t) for t in study.get_trials(deepcopy=False)]
        base = [float(r.epoch_seconds) for r in records if r.is_scratch and r.epoch_seconds]
        return bool(base) and left <= NEGLIGIBLE * min(base)

    def behind(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        curve = trial.intermediate_values
        curves = self.baseline_curves(study)
        step = trial.last_step
        if step is None or not curves or step < self.warmup_epochs:
            return False
        streak = 0
        for epoch in range(step, -1, -1):
            if epoch < self.warmup_epochs or epoch not in curve:
                break
            ref = self.reference(curves, epoch)
            value = curve[epoch]
            if ref is None or math.isnan(value) or value >= ref - self.margin:
                break
            streak += 1
        return streak >= self.patience

    def cannot_catch_up(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        best = self.best_finished(study)
        return best is not None and self.hopeless(trial.intermediate_values,
                                                  TrialRecord.from_frozen(trial).planned_epochs, best)

    @staticmethod
    def best_finished(study: optuna.Study) -> float | None:
        """The best value of any finished (complete) trial, baselines included."""
        return max((t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                    if t.value is not None and not math.isnan(t.value)), default=None)

    def hopeless(self, curve: dict[int, float], planned: int | None, best: float) -> bool:
        """Whether ``curve`` (epoch -> val), planned to run ``planned`` epochs, cannot end within
        ``margin`` of ``best`` even at its steepest gain over the last ``patience`` epochs."""
        step = max(curve) if curve else None
        if planned is None or step is None or step < self.warmup_epochs + self.patience:
            return False
        recent = [curve.get(e) for e in range(step - self.patience, step + 1)]
        if any(v is None or math.isnan(v) for v in recent):
            return False
        slope = max(0.0, max(b - a for a, b in zip(recent, recent[1:], strict=False)))
        reachable = max(v for v in curve.values() if not math.isnan(v)) + slope * max(0, int(planned) - 1 - step)
        return reachable < best - self.margin

    def converged(self, curve: dict[int, float], planned: int | None, band: float = 0.0) -> int | None:
        """The epoch of ``curve``'s best when the curve has stopped improving, else None.

        Stopped improving: its best is more than ``patience`` epochs old, and its last value plus its
        steepest gain per epoch over the last ``patience`` epochs, for every epoch it has left,
        does not come within ``band`` of that best (the same optimistic extrapolation as
        ``hopeless``). ``band`` is the best's standard error on the validation split: a run keeps
        its latest epoch within one standard error of its best (``_train.kept_epoch``), so a curve
        that stays inside the band trains to the end of its schedule, and one that cannot re-enter
        it ends there, complete, with its kept epoch's weights (early stopping). Measured on the
        imagenet benchmark task: lite0's LP-FT trials peak at epoch 3 of 8 and their last epochs,
        a point lower on validation, are 3 points better on test.
        """
        values = {e: v for e, v in curve.items() if not math.isnan(v)}
        if planned is None or not values:
            return None
        step = max(curve)
        if step >= int(planned) - 1:
            return None  # nothing left to save
        best_epoch = max(values, key=lambda e: (values[e], -e))  # the first epoch at the maximum
        if step - best_epoch <= self.patience:
            return None
        recent = [curve.get(e) for e in range(step - self.patience, step + 1)]
        if any(v is None or math.isnan(v) for v in recent):
            return None
        slope = max(0.0, max(b - a for a, b in zip(recent, recent[1:], strict=False)))
        reachable = recent[-1] + slope * (int(planned) - 1 - step)
        return best_epoch if reachable <= values[best_epoch] - max(0.0, band) else None

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        if TrialRecord.from_frozen(trial).is_scratch or self.cheap_to_finish(study, trial):
            return False
        if self.behind(study, trial):
            self.reasons[trial.number] = BEHIND_SCRATCH
            return True
        if self.cannot_catch_up(study, trial):
            self.reasons[trial.number] = CANNOT_CATCH_UP
            return True
        if self.inner is not None and self.inner.prune(FineTuningPeers(study), trial):
            self.reasons[trial.number] = f"efficiency ({type(self.inner).__name__.replace('Pruner', '').lower()})"
            return True
        return False


class FineTuningPeers:
    """The study as the efficiency pruner sees it: only the trials that trained over several epochs and
    are not scratch baselines. A baseline's curve (random init, far below) and a probe's single point
    would sit in the median's reference and hold it down: on the midsize suite task the median rule
    pruned fine-tuning trials only at epoch 5 of 8, once the 4-epoch scratch baseline had no value at
    that epoch. Everything else is the study's."""

    def __init__(self, study: optuna.Study):
        self._study = study

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[FrozenTrial]:
        return [t for t in self._study.get_trials(deepcopy=deepcopy, states=states)
                if len(t.intermediate_values) > 1 and not TrialRecord.from_frozen(t).is_scratch]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


# the median's reference is the completed fine-tuning trials (FineTuningPeers); it starts with the first one,
# which is the best probe's LP-FT at its defaults: a later trial below it at the same epoch (after the warmup)
# spends its remaining epochs where the search already has a better curve
MEDIAN_STARTUP_TRIALS = 1


def make_inner_pruner(name: str, warmup_epochs: int) -> BasePruner | None:
    """The efficiency pruner chained after the baseline check: 'median', 'halving' or 'none'."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=max(1, warmup_epochs))
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, warmup_epochs + 1))
    if name == "none":
        return None

    raise AutotransferError(f"--efficiency-pruner {name!r} is not one of median, halving, none")
