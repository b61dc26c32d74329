"""One trial of the search: what it trains, its budget, its heartbeat, and what it tells the study."""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from .. import sources as sources_mod
from .._train import standard_error, train
from ..console import note, warn
from ..data import Dataset
from ..errors import AutotransferError
from ..metrics import scored
from ..monitor import StopTraining
from ..sources import display_source
from ..strategies import SCRATCH_RECIPE
from . import rundir
from . import storage as st
from .answer import save_val_probs
from .budget import MIN_BASELINE_EPOCHS, Budget, TrialMonitor
from .final import keep_every_trial
from .optuna_private import storage_of, trial_id
from .plan import SearchPlan
from .pruner import ScratchBaselinePruner
from .record import SCRATCH, StudyRecord, TrialRecord
from .scratch_size import affordable_side, epoch_seconds, native_side, resized_spec
from .space import WEIGHT_DECAY, SearchSpace, TrialConfig


@dataclass
class Context:
    """What every trial of one search shares: the plan, and the state the search builds up."""

    plan: SearchPlan
    screen: SearchSpace  # every ranked source: the probes that choose the top-k run over it
    budget: Budget
    pruner: ScratchBaselinePruner
    scores: dict[str, dict[str, Any]]  # source -> its transferability row
    space: SearchSpace | None = None  # the top-k sources, sampled; None until the probes have chosen them
    probe_dataset: Dataset | None = None  # ranking's training subsample, the probes' data (None: all of it)


def _heartbeat(study: optuna.Study, trial: optuna.Trial, stop: threading.Event) -> None:
    while not stop.wait(st.HEARTBEAT_SECONDS):
        try:
            storage_of(study).record_heartbeat(trial_id(trial))
        except Exception:  # a heartbeat is best-effort; the next one retries
            pass


def _trial_config(trial: optuna.Trial, record: TrialRecord, ctx: Context) -> TrialConfig:
    if record.is_scratch:
        # a baseline is fixed, not sampled: one top source's architecture from random init with the
        # core's own recipe (every parameter trains, at its default lr), whatever --strategies and plugins say

        recipe = SCRATCH_RECIPE
        return TrialConfig(record.baseline_source, recipe.name, recipe.default_lr, WEIGHT_DECAY.default, {})
    if record.fixed:  # a strategy that converges: run once per source, never sampled
        return ctx.screen.fixed_config(record.fixed["source"], record.fixed["strategy"])
    if ctx.space is None:
        raise AutotransferError("internal: a sampled trial was asked before the top-k sources were chosen")
    return ctx.space.suggest(trial)


def _monitor(study: optuna.Study, trial: optuna.Trial, role: str, cfg: TrialConfig, ctx: Context) -> TrialMonitor:
    """The trial's plan: baselines get their part of the baselines' share, others run to the deadline."""
    budget = ctx.budget
    soft, floor, cap = budget.hard_deadline, 1, None
    if role == SCRATCH:
        left = _baselines_left(study)
        share = budget.share_left()
        soft, floor, cap = budget.now() + share / left, MIN_BASELINE_EPOCHS, budget.now() + share
    bar = None
    if ctx.plan.config.progress:
        from tqdm.auto import tqdm

        label = f"trial {trial.number} {'scratch:' if role == SCRATCH else ''}{cfg.source} {cfg.strategy}"
        bar = tqdm(total=ctx.plan.epochs, desc=label, unit="epoch", leave=False, dynamic_ncols=True, position=1,
                   bar_format="{desc}: {n:.1f}/{total} epochs [{elapsed}<{remaining}] {postfix}")
    return TrialMonitor(budget, ctx.plan.epochs, soft, floor, bar, floor_deadline=cap)


def run_trial(study: optuna.Study, trial: optuna.Trial, ctx: Context) -> None:
    """Train ``trial``'s configuration and tell the study how it ended (a failure is told, not raised)."""
    record = TrialRecord.from_frozen(trial)
    role = record.kind
    if record.role is None:
        TrialRecord(role=role).save(trial)
    cfg = _trial_config(trial, record, ctx)
    # what the trial is, at the top level: a probe's or a baseline's params are empty, so without these
    # optuna-dashboard shows them as anonymous rows (its trial table can show user attributes as columns)
    arch = (StudyRecord.from_study(study).architectures or {}).get(cfg.source, cfg.source)
    TrialRecord(config={"source": cfg.source, "strategy": cfg.strategy, "lr": cfg.lr,
                        "weight_decay": cfg.weight_decay, "params": cfg.params},
                source=display_source(f"scratch:{arch}" if role == SCRATCH else cfg.source),
                strategy=cfg.strategy).save(trial)
    if role == SCRATCH and _baselines_share_spent(study, ctx):
        TrialRecord(skipped="the baselines' share of the time budget is spent",
                    prune_reason="budget: baselines' share spent").save(trial)
        study.tell(trial, state=TrialState.PRUNED)
        return
    source = ctx.screen.sources[cfg.source]
    if role == SCRATCH:
        source = _baseline_source(study, trial, source, ctx)
    TrialRecord(provider=str(getattr(source, "provider", "")), precision=ctx.plan.precision).save(trial)
    _TrialRun(study, trial, role, cfg, ctx).run(source)


def _baselines_left(study: optuna.Study) -> int:
    """This baseline and the ones still waiting."""
    return 1 + sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                   if TrialRecord.from_frozen(t).is_scratch)


def _baseline_source(study: optuna.Study, trial: optuna.Trial, source: Any, ctx: Context) -> Any:
    """``source``, or its architecture at a smaller input size when its part of the baselines' share
    cannot train the epochs the baseline's own stopping rules need at the source's size (``scratch_size``)."""
    side = native_side(source)
    row = ctx.scores.get(source.name) or {}
    n = int(row.get("n_samples") or 0)
    per_item = float(row.get("extract_seconds") or 0.0) / n if n else ctx.budget.item_seconds
    if side is None or per_item <= 0:
        return source
    epochs = min(ctx.plan.epochs, ctx.pruner.warmup_epochs + ctx.pruner.patience + 1)
    seconds = ctx.budget.share_left() / _baselines_left(study)
    smaller = affordable_side(side, per_item, len(ctx.plan.dataset.splits["train"]), len(ctx.plan.dataset.splits["val"]),
                              seconds, epochs)
    if smaller is None:
        return source
    resized = sources_mod.resolve_source(resized_spec(source.spec, smaller), ctx.plan.source_options)
    why = (f"trained from scratch at {smaller} px instead of {side} px: {epochs} epochs at {side} px would take "
           f"about {epochs * epoch_seconds(per_item, len(ctx.plan.dataset.splits['train']), len(ctx.plan.dataset.splits['val'])):.0f} s"
           f" of its {seconds:.0f} s share of the time budget")
    TrialRecord(input_size=smaller, scratch_note=why).save(trial)
    note(f"scratch baseline {source.name}: {why}")
    return resized


def _baselines_share_spent(study: optuna.Study, ctx: Context) -> bool:
    """The baselines' time share is used up and one baseline has completed (the first always runs)."""
    return ctx.budget.share_left() <= 0 and any(
        TrialRecord.from_frozen(t).is_scratch for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


class _TrialRun:
    """One trial while it trains: its heartbeat, its budget monitor, its val curve, and how it ends."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial, role: str, cfg: TrialConfig, ctx: Context):
        self.study, self.trial, self.role, self.cfg, self.ctx = study, trial, role, cfg, ctx
        self.stop = threading.Event()
        threading.Thread(target=_heartbeat, args=(study, trial, self.stop), daemon=True).start()
        self.reason = ""  # why it was pruned ("" while it runs on)
        self.curve: dict[int, float] = {}
        self.band: Any = None  # the best epoch's ``metrics.Scored`` last recorded
        self.n_val = len(ctx.plan.dataset.split_items("val"))
        self.start, self.began = time.perf_counter(), ctx.budget.now()
        self.monitor = _monitor(study, trial, role, cfg, ctx)

    def run(self, source: Any) -> None:
        ctx, cfg = self.ctx, self.cfg
        data = ctx.plan.dataset
        if TrialRecord.from_frozen(self.trial).fixed and ctx.probe_dataset is not None:
            data = ctx.probe_dataset  # a probe solves on the features ranking extracted
            TrialRecord(train_items=len(data.splits["train"])).save(self.trial)
        config = dataclasses.replace(ctx.plan.train_config, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                     report=self.report, pretrained=self.role != SCRATCH, monitor=self.monitor)
        try:  # cfg.params are the strategy's own (partial's depth among them)
            result = train(data, source, cfg.strategy, config, **cfg.params)
        except StopTraining:  # the budget ended before its first epoch did
            self._end()
            TrialRecord(prune_reason="timeout").save(self.trial)
            self._tell(TrialState.PRUNED)
        except KeyboardInterrupt:
            self._end(account=False)
            TrialRecord(fail_reason="interrupted").save(self.trial)
            self._tell(TrialState.FAIL)
            st.retry_callback()(self.study, storage_of(self.study).get_trial(trial_id(self.trial)))
            raise
        except Exception as exc:  # a trial's failure never ends the search (a full disk does)
            rundir.raise_if_write_failure(exc)
            self._end()
            self._failed(exc)
        else:
            self._end()
            self._finished(result)

    def report(self, epoch: int, val: float) -> bool:
        """The training loop's ``report``: record the epoch, and whether the trial should stop."""
        trial, monitor, ctx = self.trial, self.monitor, self.ctx
        monitor.reported(epoch, val)
        TrialRecord(epoch_seconds=round(monitor.per_epoch(epoch + 1), 4), planned_epochs=int(monitor.planned)).save(trial)
        trial.report(float(val), epoch)
        self.curve[epoch] = float(val)
        if monitor.best is not None and monitor.best is not self.band:  # a new best epoch: its interval
            self.band = monitor.best
            TrialRecord(val_interval=_interval(self.band)).save(trial)
        if self.role != SCRATCH and trial.should_prune():
            self.reason = ctx.pruner.reasons.get(trial.number, "pruned")
            return True
        if self.role == SCRATCH:  # scratch that cannot catch up with the best finished trial cannot be the answer
            best = ctx.pruner.best_finished(self.study)
            if best is not None and ctx.pruner.hopeless(self.curve, monitor.planned, best):
                TrialRecord(cut_reason=f"it could not catch up with the best finished trial ({best:.3f})").save(trial)
                return True
        # the best's standard error: the kept-epoch rule's (an accuracy's, when no band was handed over)
        band = self.band.se if self.band is not None else standard_error(max(self.curve.values()), self.n_val)
        peak = ctx.pruner.converged(self.curve, monitor.planned, band)
        if peak is not None:  # early stopping: no later epoch could come within one standard error of its best
            TrialRecord(cut_reason=f"its validation score stopped improving after epoch {peak + 1} "
                                   f"({self.curve[peak]:.3f}) and cannot come back within one "
                                   f"standard error ({band:.3f}) of it").save(trial)
            return True
        return False

    def _end(self, account: bool = True) -> None:
        self.stop.set()
        self.monitor.close()
        if account and self.role == SCRATCH:
            self.ctx.budget.share_used += self.ctx.budget.now() - self.began

    def _tell(self, state: TrialState, value: float | None = None) -> None:
        TrialRecord(seconds=round(time.perf_counter() - self.start, 2)).save(self.trial)
        self.study.tell(self.trial, value, state=state)

    def _failed(self, exc: Exception) -> None:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not isinstance(exc, AutotransferError):
            reason = f"{type(exc).__name__}: {reason}"
        TrialRecord(fail_reason=reason[:300]).save(self.trial)
        self._tell(TrialState.FAIL)
        warn(f"trial {self.trial.number} ({self.cfg.source}, {self.cfg.strategy}) failed: {reason}")

    def _finished(self, result: Any) -> None:
        trial, monitor = self.trial, self.monitor
        TrialRecord(planned_epochs=int(monitor.planned)).save(trial)
        if monitor.epoch_seconds:
            TrialRecord(epoch_seconds=round(monitor.per_epoch(result.epochs_run), 4)).save(trial)
        if (monitor.stopped and self.role != SCRATCH and not self.reason
                and not TrialRecord.from_frozen(trial).cut_reason):
            # the budget ended it after at least one epoch: the kept epoch's weights were validated like any
            # other epoch's, so the trial completes with them (a candidate for the answer), as a baseline does
            TrialRecord(cut_reason=f"the search's time budget ended it after {result.epochs_run} of "
                                   f"{self.ctx.plan.epochs} epochs; it keeps epoch {result.best_epoch + 1}").save(trial)
        TrialRecord(epochs_run=int(result.epochs_run), best_epoch=int(result.best_epoch),
                    trainable_params=int(result.trainable_params), total_params=int(result.total_params),
                    task_scores={k: float(v) for k, v in result.task_scores.items()}
                    if getattr(result, "task_scores", None) else None).save(trial)
        if self.reason:
            TrialRecord(prune_reason=self.reason).save(trial)
            self._tell(TrialState.PRUNED)
            return
        if result.val_band is not None:  # the kept epoch's, the value it completes with
            TrialRecord(val_interval=_interval(result.val_band), task_intervals=task_intervals(
                self.ctx.plan.dataset, result.metric, result.val_probs)).save(trial)
        self._tell(TrialState.COMPLETE, float(result.val_score))
        _keep_if_best(self.study, trial.number, self.role, result, self.ctx)


def task_intervals(dataset: Any, metric: str, val_probs: list[Any]) -> dict[str, list[float]] | None:
    """Each task's validation score interval, [low, high], from the kept epoch's probabilities (None for one
    task, whose interval is the trial's own)."""
    if len(dataset.tasks) < 2 or len(val_probs) != len(dataset.tasks):
        return None
    labels = dataset.split_labels("val")
    bands = [scored(metric, labels[:, [i]], [probs]) for i, probs in enumerate(val_probs)]
    return {t.name: [float(b.low), float(b.high)] for t, b in zip(dataset.tasks, bands, strict=True)}


def _interval(band: Any) -> list[float]:
    """A ``metrics.Scored`` as the record stores it: [low, high, standard error]."""
    return [float(band.low), float(band.high), float(band.se)]


# models kept per role: the two best transfer trials (the answer and the runner-up the one-standard-error
# choice may prefer, ``answer``), the best scratch baseline
KEPT = {False: 2, True: 1}


def _keep_if_best(study: optuna.Study, number: int, role: str, result: Any, ctx: Context) -> None:
    """Save the model (and its validation probabilities) when it is among the ``KEPT`` best of its role
    so far; drop the one it pushes out. With --ensemble, every completed trial's model is kept: the
    ensemble chooses among them."""
    scratch = role == SCRATCH
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if TrialRecord.from_frozen(t).is_scratch == scratch]
    keep = {t.number for t in sorted(done, key=lambda t: (-t.value, t.number))[:KEPT[scratch]]}
    keep_all = keep_every_trial(ctx)
    if number not in keep and not keep_all:
        return
    target = ctx.plan.models_dir / f"trial_{number}"
    result.save(target)
    save_val_probs(target, result.val_probs)
    if keep_all:
        return
    for other in ctx.plan.models_dir.glob("trial_*"):
        n = int(other.name.split("_")[1])
        if n not in keep and any(t.number == n for t in done):
            shutil.rmtree(other, ignore_errors=True)
