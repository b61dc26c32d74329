"""``autotransfer.search`` (``search`` here): rank, then an Optuna study with the scratch baseline as the reference."""

from __future__ import annotations

import math
import re
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from ..console import note, warn
from ..data import Dataset, load
from ..errors import AutotransferError
from ..monitor import StopTraining
from . import rundir
from . import storage as st
from .budget import MIN_BASELINE_EPOCHS, Budget, TrialMonitor, now
from .config import SearchConfig
from .pruner import (
    CUT_REASON,
    EPOCH_SECONDS,
    PLANNED_EPOCHS,
    ROLE,
    SCRATCH,
    ScratchBaselinePruner,
    make_inner_pruner,
)
from .space import SearchSpace, TrialConfig

DEFAULT_STRATEGIES = ("linear_probe", "partial", "full", "lp_ft", "lora")
BASELINE_STRATEGY = "full"  # the scratch baseline trains every parameter from random init
DEFAULT_STRATEGY_FIRST = ("linear_probe", "lp_ft", "partial", "full")  # each source's first trial uses the first that applies


@dataclass
class SearchResult:
    """What a search found; the same numbers as ``summary.csv``."""

    out_dir: Path  # the run directory
    summary: dict[str, Any]  # the summary.csv row
    trials: list[dict[str, Any]]  # the trials.csv rows
    transferability: list[dict[str, Any]]  # the transferability.csv rows
    best_dir: Path | None  # exported model (DIR/best), None if it lives on another worker
    negative_transfer: bool  # no source beat the scratch baseline on validation
    searched_sources: list[str] = field(default_factory=list)  # the top-k fine-tuned, chosen by their probes

    @property
    def best_source(self) -> str:
        return self.summary["best_source"]

    @property
    def test_score(self) -> float | None:
        return self.summary["test_score"]


@dataclass
class _Context:
    dataset: Dataset
    out_dir: Path
    screen: SearchSpace  # every ranked source: the probes that choose the top-k run over it
    epochs: int
    seed: int
    device: str
    cache_dir: str | None
    budget: Budget
    pruner: ScratchBaselinePruner
    scores: dict[str, dict[str, Any]]  # source -> its transferability row
    top_k: int = 3
    scratch_baselines: int | None = None
    progress: bool = False  # a progress bar inside each trial
    space: SearchSpace | None = None  # the top-k sources, sampled; None until the probes have chosen them
    precision: str = "fp32"  # resolved (bf16 / fp16 / fp32): every trial trains at it
    models_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.models_dir = self.out_dir / "trials"


def default_budget(n_train: int, top_k: int) -> tuple[int, int, float]:
    """(trials, epochs, timeout seconds) when not given: small data affords more of each."""
    epochs = 12 if n_train < 1000 else 8 if n_train < 10000 else 5
    trials = 4 + 4 * top_k if n_train < 10000 else 2 + 3 * top_k
    timeout = 3600.0 if n_train < 10000 else 4 * 3600.0
    return trials, epochs, timeout


_SIZE_SUFFIX = re.compile(r"(?:\d+[a-z]?|[_-](?:b\d+|[smlx]|xl|xxl|nano|pico|femto|mini|tiny|small|base|medium|large"
                          r"|huge|giant))+$", re.IGNORECASE)


def architecture_family(arch: str) -> str:
    """``arch`` without its size suffix: the scaled members of one family share a scratch baseline.

    ``tf_efficientnet_lite0/1/2`` -> ``tf_efficientnet_lite``, ``resnet18/50`` -> ``resnet``,
    ``convnext_tiny/small`` -> ``convnext``, ``efficientnet_b0/b3`` -> ``efficientnet``. A name
    with no size suffix is its own family.
    """
    name = arch.rsplit("/", 1)[-1]
    while True:
        short = _SIZE_SUFFIX.sub("", name).rstrip("_-")
        if not short or short == name:
            return name
        name = short


def baseline_sources(architectures: dict[str, str], ranked: list[str], limit: int | None,
                     cost: Callable[[str], float] | None = None) -> list[str]:
    """One source per architecture family among the ranked top sources, best-ranked family first.

    Each gets a scratch baseline (its architecture from random init): a small target task is often
    learnt best from scratch by an architecture other than the top-ranked source's, and a transfer
    trial must beat the best of them. Within a family the cheapest member (``cost``; else the
    best-ranked) stands for it: trained from scratch on a small target, a family's scaled variants
    differ in cost, not in how well they learn (measured on the imagenet benchmark task, 8 epochs:
    val 0.407 / 0.407 / 0.353 for lite0 / lite1 / lite2, in 148 / 174 / 205 s). ``limit`` caps
    how many (None: all).
    """
    families: dict[str, list[str]] = {}
    for s in ranked:
        families.setdefault(architecture_family(architectures.get(s, s)), []).append(s)
    picked = [min(members, key=cost) if cost else members[0] for members in families.values()]
    return picked[:limit]


def _heartbeat(study: optuna.Study, trial: optuna.Trial, stop: threading.Event) -> None:
    while not stop.wait(st.HEARTBEAT_SECONDS):
        try:
            study._storage.record_heartbeat(trial._trial_id)
        except Exception:  # a heartbeat is best-effort; the next one retries
            pass


def _accuracy(model: Any, dataset: Dataset, split: str) -> float:
    preds, _ = model.predict(dataset.split_items(split))
    y = dataset.split_labels(split)
    return float(np.mean([(preds[:, t] == y[:, t]).mean() for t in range(y.shape[1])]))


def _trial_config(trial: optuna.Trial, role: str, ctx: _Context) -> TrialConfig:
    if role == SCRATCH:
        # a baseline is fixed, not sampled: full training of one top source's architecture
        # from random init at the default lr, whatever --strategies says
        from ..strategies import get_strategy
        from .space import WEIGHT_DECAY

        full = get_strategy(BASELINE_STRATEGY)
        return TrialConfig(trial.user_attrs["baseline_source"], full.name, full.default_lr, WEIGHT_DECAY.default, {})
    fixed = trial.user_attrs.get("fixed")
    if fixed:  # a strategy that converges: run once per source, never sampled
        return ctx.screen.fixed_config(fixed["source"], fixed["strategy"])
    if ctx.space is None:
        raise AutotransferError("internal: a sampled trial was asked before the top-k sources were chosen")
    return ctx.space.suggest(trial)


def _monitor(study: optuna.Study, trial: optuna.Trial, role: str, cfg: TrialConfig, ctx: _Context) -> TrialMonitor:
    """The trial's plan: baselines get their part of the baselines' share, others run to the deadline."""
    budget = ctx.budget
    soft, floor, cap = budget.hard_deadline, 1, None
    if role == SCRATCH:
        left = sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                   if t.user_attrs.get(ROLE) == SCRATCH) + 1
        share = budget.share_left()
        soft, floor, cap = now() + share / left, MIN_BASELINE_EPOCHS, now() + share
    bar = None
    if ctx.progress:
        from tqdm.auto import tqdm

        label = f"trial {trial.number} {'scratch:' if role == SCRATCH else ''}{cfg.source} {cfg.strategy}"
        bar = tqdm(total=ctx.epochs, desc=label, unit="epoch", leave=False, dynamic_ncols=True, position=1,
                   bar_format="{desc}: {n:.1f}/{total} epochs [{elapsed}<{remaining}] {postfix}")
    return TrialMonitor(budget, ctx.epochs, soft, floor, bar, floor_deadline=cap)


def _run_trial(study: optuna.Study, trial: optuna.Trial, ctx: _Context) -> None:
    from .._train import train

    role = trial.user_attrs.get(ROLE) or "search"
    if ROLE not in trial.user_attrs:
        trial.set_user_attr(ROLE, role)
    cfg = _trial_config(trial, role, ctx)
    trial.set_user_attr("config", {"source": cfg.source, "strategy": cfg.strategy, "lr": cfg.lr,
                                   "weight_decay": cfg.weight_decay, "params": cfg.params})
    if role == SCRATCH and ctx.budget.share_left() <= 0 and any(
            t.user_attrs.get(ROLE) == SCRATCH for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))):
        trial.set_user_attr(st.SKIPPED, "the baselines' share of the time budget is spent")
        trial.set_user_attr("prune_reason", "budget: baselines' share spent")
        study.tell(trial, state=TrialState.PRUNED)
        return
    source = ctx.screen.sources[cfg.source]
    trial.set_user_attr("provider", str(getattr(source, "provider", "")))
    trial.set_user_attr("precision", ctx.precision)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(study, trial, stop), daemon=True)
    beat.start()
    state: dict[str, Any] = {"reason": "", "last": None, "curve": {}}
    start, began = time.perf_counter(), now()
    monitor = _monitor(study, trial, role, cfg, ctx)

    def report(epoch: int, val: float) -> bool:
        state["last"] = val
        monitor.reported(epoch, val)
        trial.set_user_attr(EPOCH_SECONDS, round(monitor.per_epoch(epoch + 1), 4))
        trial.set_user_attr(PLANNED_EPOCHS, int(monitor.planned))
        trial.report(float(val), epoch)
        state["curve"][epoch] = float(val)
        if role != SCRATCH and trial.should_prune():
            state["reason"] = ctx.pruner.reasons.get(trial.number, "pruned")
            return True
        if role == SCRATCH:  # scratch that cannot catch up with the best finished trial cannot be the answer
            best = ctx.pruner.best_finished(study)
            if best is not None and ctx.pruner.hopeless(state["curve"], monitor.planned, best):
                trial.set_user_attr(CUT_REASON, f"it could not catch up with the best finished trial ({best:.3f})")
                return True
        return False

    params = dict(cfg.params)
    depth = params.pop("depth", None)
    try:
        result = train(ctx.dataset, source, cfg.strategy, depth=depth, lr=cfg.lr, epochs=ctx.epochs,
                       weight_decay=cfg.weight_decay, seed=ctx.seed, device=ctx.device, report=report,
                       pretrained=role != SCRATCH, evaluate_test=False, cache_dir=ctx.cache_dir,
                       progress=False, monitor=monitor, precision=ctx.precision, **params)
    except StopTraining:  # the budget ended before its first epoch did
        stop.set()
        monitor.close()
        _account(ctx, role, began)
        trial.set_user_attr("prune_reason", "timeout")
        trial.set_user_attr("seconds", round(time.perf_counter() - start, 2))
        study.tell(trial, state=TrialState.PRUNED)
        return
    except KeyboardInterrupt:
        stop.set()
        monitor.close()
        trial.set_user_attr("fail_reason", "interrupted")
        trial.set_user_attr("seconds", round(time.perf_counter() - start, 2))
        study.tell(trial, state=TrialState.FAIL)
        st.retry_callback()(study, study._storage.get_trial(trial._trial_id))
        raise
    except Exception as exc:  # a trial's failure never ends the search (a full disk does)
        rundir.raise_if_write_failure(exc)
        stop.set()
        monitor.close()
        _account(ctx, role, began)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not isinstance(exc, AutotransferError):
            reason = f"{type(exc).__name__}: {reason}"
        trial.set_user_attr("fail_reason", reason[:300])
        trial.set_user_attr("seconds", round(time.perf_counter() - start, 2))
        study.tell(trial, state=TrialState.FAIL)
        warn(f"trial {trial.number} ({cfg.source}, {cfg.strategy}) failed: {reason}")
        return
    stop.set()
    monitor.close()
    _account(ctx, role, began)
    trial.set_user_attr(PLANNED_EPOCHS, int(monitor.planned))
    if monitor.epoch_seconds:
        trial.set_user_attr(EPOCH_SECONDS, round(monitor.per_epoch(result.epochs_run), 4))
    if monitor.stopped and role != SCRATCH and not state["reason"]:
        state["reason"] = monitor.stopped  # a cut transfer trial is not complete; a cut baseline still is
    trial.set_user_attr("epochs_run", int(result.epochs_run))
    trial.set_user_attr("best_epoch", int(result.best_epoch))
    trial.set_user_attr("seconds", round(time.perf_counter() - start, 2))
    trial.set_user_attr("trainable_params", int(result.trainable_params))
    trial.set_user_attr("total_params", int(result.total_params))
    if getattr(result, "task_scores", None):
        trial.set_user_attr("task_scores", {k: float(v) for k, v in result.task_scores.items()})
    if state["reason"]:
        trial.set_user_attr("prune_reason", state["reason"])
        study.tell(trial, state=TrialState.PRUNED)
        return
    study.tell(trial, float(result.val_score))
    _keep_if_best(study, trial.number, role, result, ctx)


def _account(ctx: _Context, role: str, began: float) -> None:
    if role == SCRATCH:
        ctx.budget.share_used += now() - began


def _keep_if_best(study: optuna.Study, number: int, role: str, result: Any, ctx: _Context) -> None:
    """Save the model when it is the best of its role so far; drop the one it replaces."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if (t.user_attrs.get(ROLE) == SCRATCH) == (role == SCRATCH)]
    best = max(done, key=lambda t: (t.value, -t.number))
    if best.number != number:
        return
    target = ctx.models_dir / f"trial_{number}"
    result.save(target)
    for other in ctx.models_dir.glob("trial_*"):
        n = int(other.name.split("_")[1])
        if n != number and any(t.number == n for t in done):
            shutil.rmtree(other, ignore_errors=True)


def search(data: Any, config: SearchConfig | None = None, **overrides: Any) -> SearchResult:
    """Rank the sources, search source × strategy × hyper-parameters, export the winner.

    ``config`` is a ``SearchConfig`` (every option and its default); keyword arguments override
    its fields (``search(data, trials=20)``), and an unknown one is a one-line error naming the
    valid ones. A rerun with the same ``out`` (or the same ``storage`` and ``study_name``) resumes
    the study and tops it up to ``trials``. A full disk mid-search is one line; the study is kept.
    """
    cfg = SearchConfig.from_options(config, **overrides)
    with rundir.write_errors(cfg.out, cfg.storage):
        return _run_search(data, cfg)


def _run_search(data: Any, cfg: SearchConfig) -> SearchResult:
    (out, trials, timeout, sources, top_k, strategies, estimators, primary, epochs, storage, study_name, seed,
     device, offline, trust_remote_code, label_col, text_col, split, max_samples, cache_dir, warmup_epochs,
     patience, margin, efficiency_pruner, scratch_baselines, progress, precision) = (
        cfg.out, cfg.trials, cfg.timeout, cfg.sources, cfg.top_k, cfg.strategies, cfg.estimators, cfg.primary,
        cfg.epochs, cfg.storage, cfg.study_name, cfg.seed, cfg.device, cfg.offline, cfg.trust_remote_code,
        cfg.label_col, cfg.text_col, cfg.split, cfg.max_samples, cfg.cache_dir, cfg.warmup_epochs, cfg.patience,
        cfg.margin, cfg.efficiency_pruner, cfg.scratch_baselines, cfg.progress, cfg.precision)
    from .._rank import DEFAULT_ESTIMATORS, rank_sources, warn_not_applicable, write_transferability
    from ..features import resolve_device
    from ..plugins import get_plugin_manager
    from ..precision import resolve_precision
    from ..sources import SourceOptions, default_source_specs, resolve_sources
    from .report import write_reports

    t0 = now()
    ds = load(data, text_col=text_col, label_col=label_col, split=split, seed=seed)
    out_dir = Path(out) if out else Path("autotransfer-runs") / ds.name
    rundir.prepare(out_dir, ds, data, storage, study_name)  # before ranking: other data, unwritable, unreachable
    n_train = len(ds.splits["train"])
    d_trials, d_epochs, d_timeout = default_budget(n_train, top_k)
    trials = trials or d_trials
    epochs = epochs or d_epochs
    timeout = timeout or d_timeout
    if trials < 1 or epochs < 1 or top_k < 1:
        raise AutotransferError(f"--trials, --epochs and --top-k must be at least 1, got {trials}, {epochs}, {top_k}")
    if scratch_baselines is not None and scratch_baselines < 1:
        raise AutotransferError(f"--scratch-baselines must be at least 1, got {scratch_baselines}; "
                                "leave it out for one baseline per architecture among the top-k sources")

    precision = resolve_precision(precision, resolve_device(device))  # once: trials.csv and summary say it
    opts = SourceOptions(offline=offline, trust_remote_code=trust_remote_code)
    specs = list(sources) if sources else default_source_specs(ds.modality, opts)
    srcs = resolve_sources(specs, opts, modality=ds.modality)
    est_names = list(estimators) if estimators else [e for e in DEFAULT_ESTIMATORS
                                                      if e in get_plugin_manager().registry("estimators")]
    rows = rank_sources(ds, srcs, est_names, primary=primary, max_samples=max_samples, device=device,
                        cache_dir=cache_dir, seed=seed, progress=progress, precision=precision)
    warn_not_applicable(rows)
    write_transferability(rows, est_names, out_dir)
    scores = {r["source"]: r for r in rows}

    url = storage or st.default_storage(out_dir)
    name = study_name or f"autotransfer-{ds.name}"
    strategy_names = list(strategies) if strategies else [
        s for s in DEFAULT_STRATEGIES if s in get_plugin_manager().registry("strategies")]
    st.quiet_optuna()
    pruner = ScratchBaselinePruner(warmup_epochs, patience, margin, inner=make_inner_pruner(efficiency_pruner, warmup_epochs))
    sampler = optuna.samplers.TPESampler(multivariate=True, group=True, constant_liar=True, seed=seed,
                                         n_startup_trials=max(4, top_k + 1))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with st.RunOwner(out_dir) as owner:
        with st.study_lock(url, name, out_dir):
            rdb = st.open_storage(url)  # under the lock: the first worker creates the tables
            study = optuna.create_study(storage=rdb, study_name=name, direction="maximize", sampler=sampler,
                                        pruner=pruner, load_if_exists=True)
            attrs = study.user_attrs
            made = "ranked" in attrs or "sources" in attrs  # "sources" alone: a study from before screening
            if made:
                if attrs.get("fingerprint") != ds.fingerprint:
                    raise st.other_data_error(name, url, attrs.get("fingerprint", ""), ds.fingerprint)
                ranked = list(attrs.get("ranked") or attrs["sources"])
                missing = [s for s in ranked if s not in {x.name for x in srcs}]
                if missing:
                    raise AutotransferError(
                        f"study {name!r} searches sources {', '.join(missing)} that this worker cannot load; "
                        "pass the same --sources on every worker"
                    )
            else:
                ranked = [r["source"] for r in rows if r["rank"] is not None]
            by_name = {s.name: s for s in srcs}
            screen = SearchSpace([by_name[s] for s in ranked], strategy_names)
            if not made:
                study.set_user_attr("ranked", list(screen.sources))
                study.set_user_attr("top_k", top_k)
                study.set_user_attr("fingerprint", ds.fingerprint)
                study.set_user_attr("epochs", epochs)
                study.set_user_attr("data", str(data))
                study.set_user_attr("primary", primary)
                study.set_user_attr("estimators", est_names)
                study.set_user_attr("scores", {r["source"]: {e: r.get(e) for e in est_names} for r in rows})
                study.set_user_attr("architectures", {s.name: (getattr(s, "architecture", "") or s.name)
                                                      for s in screen.sources.values()})
                study.set_user_attr("dataset", {
                    "name": ds.name, "modality": ds.modality, "tasks": ds.task_names,
                    **{f"n_{k}": int(len(v)) for k, v in ds.splits.items()}})
            epochs = int(study.user_attrs.get("epochs", epochs))
            if owner.sole and url == st.default_storage(out_dir):
                orphans = st.fail_orphans(study)
                if orphans:
                    warn(f"trial(s) {', '.join(map(str, orphans))} were left running by a stopped search; "
                         "marked failed and queued again")
            if not study.get_trials(deepcopy=False):
                for source, strategy in screen.fixed_trials():  # the probes: every ranked source
                    study.enqueue_trial({}, user_attrs={ROLE: "default", "fixed": {"source": source,
                                                                                   "strategy": strategy}})

        budget = Budget(t0, timeout, len(ds.splits.get("test", [])))
        for r in rows:  # a first guess at forward costs (the test reserve), until trials measure them
            if r["source"] in screen.sources and r.get("n_samples"):
                budget.measured(int(r["n_samples"]), float(r.get("extract_seconds") or 0.0))
        ctx = _Context(ds, out_dir, screen, epochs, seed, device, cache_dir, budget=budget, pruner=pruner,
                       scores=scores, top_k=top_k, scratch_baselines=scratch_baselines, progress=progress,
                       precision=precision)
        interrupted = False
        bar = _progress(progress, trials)
        try:
            while True:
                with st.study_lock(url, name, out_dir):
                    st.fail_stale(study)
                    done = counted(study, ctx)
                    chosen = _choose_top(study, ctx)  # False until every probe has finished
                    waiting = bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
                    end = chosen and ctx.space is not None and ctx.space.exhausted and not waiting
                    if ((done >= trials or end or not (chosen or waiting)) and budget.remaining() > 0
                            and st.others_running(study)):
                        continue  # a dead worker's trial is yet to be retried, or the choice needs its probe
                    if done >= trials or budget.remaining() <= 0:
                        break
                    if end:
                        note(f"every configuration of the search space has run ({done} trials): "
                             "the strategies searched train to convergence, nothing is left to sample")
                        break
                    if not (chosen or waiting):  # cannot happen under the lock; never sample unchosen
                        continue
                    trial = st.ask(study)
                _run_trial(study, trial, ctx)
                rows_now = write_reports(study, ctx, final=False)
                get_plugin_manager().notify("trial_finished", trial_row=next(
                    (r for r in rows_now if r["trial"] == trial.number), {}))
                _tick(bar, study, ctx, trials, t0, timeout)
            if budget.remaining() <= 0 and counted(study, ctx) < trials:
                note(f"the time budget (--timeout {timeout:.0f} s) ended after {counted(study, ctx)} of {trials} "
                     "trials; raise --timeout for more")
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if bar is not None:
                bar.close()
        if interrupted:
            try:  # write what finished; nothing may have finished yet
                _finish(study, ctx, t0, data)
            except AutotransferError:
                write_reports(study, ctx, final=False)
            note(f"interrupted: leaderboards for the finished trials are in {out_dir / 'leaderboards'}; "
                 "rerun the same command to resume")
            raise KeyboardInterrupt
        return _finish(study, ctx, t0, data)


def counted(study: optuna.Study, ctx: _Context) -> int:
    """Trials that count toward ``--trials``: as ``storage.counted``, except that probing the sources
    beyond the top-k is part of ranking (as many probes count as the top-k sources have)."""
    per_top = sum(1 for s, _ in ctx.screen.fixed_trials() if s in list(ctx.screen.sources)[:ctx.top_k])
    probes = sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
                 if t.user_attrs.get("fixed"))
    return st.counted(study) - max(0, probes - per_top)


def probe_scores(study: optuna.Study) -> dict[str, float]:
    """Each source's best completed probe (a strategy solved to convergence) on validation."""
    best: dict[str, float] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        fixed = t.user_attrs.get("fixed")
        if fixed and t.value is not None:
            best[fixed["source"]] = max(t.value, best.get(fixed["source"], -math.inf))
    return best


def top_by_probe(ranked: Sequence[str], probes: dict[str, float], top_k: int) -> list[str]:
    """The ``top_k`` sources to fine-tune: best solved probe on validation first; the estimators'
    order breaks ties and places sources whose probe did not complete after those whose did."""
    order = {s: i for i, s in enumerate(ranked)}
    return sorted(ranked, key=lambda s: (-probes.get(s, -math.inf), order[s]))[:top_k]


def _choose_top(study: optuna.Study, ctx: _Context) -> bool:
    """Make ``ctx.space`` the top-k sources' sampled space once every probe has finished (False until then).

    The estimators rank every source from training features alone; the probes (a linear probe
    solved to convergence: seconds on cached features) then see validation, and a source that
    the estimators misplace (real ImageNet features on a small target) is not left out of the
    expensive trials. The first worker to get here chooses and enqueues the scratch baselines
    and the default trials, under the study lock; the others read the choice.
    """
    if ctx.space is not None:
        return True
    attrs = study.user_attrs
    if "sources" not in attrs:
        pending = [t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
                   if t.user_attrs.get("fixed")]
        if pending:
            return False
        ranked = list(ctx.screen.sources)
        probes = probe_scores(study)
        top = top_by_probe(ranked, probes, ctx.top_k)
        study.set_user_attr("sources", top)
        study.set_user_attr("probe_scores", probes)
        if probes and len(ranked) > len(top):
            note(f"fine-tuning the top {len(top)} of {len(ranked)} sources by their solved probe on validation: "
                 + ", ".join(f"{s} {probes[s]:.3f}" if s in probes else s for s in top))
        ctx.space = SearchSpace([ctx.screen.sources[s] for s in top], list(ctx.screen.strategies), quiet=True)
        _enqueue_after_choice(study, ctx.space, ctx.scratch_baselines)
        return True
    ctx.space = SearchSpace([ctx.screen.sources[s] for s in attrs["sources"]], list(ctx.screen.strategies),
                            quiet=True)
    return True


def _enqueue_after_choice(study: optuna.Study, space: SearchSpace, scratch_baselines: int | None) -> None:
    """The fixed trials that follow the probes, in the order that keeps the baselines in budget.

    1. the scratch baselines, one per architecture family among the top-k, cheapest first, so the
       budget's share for them buys at least one, and the priciest is the one that may not fit;
    2. each top source's default sampled strategy (when no converging strategy applies to it).
    No skip_if_exists for baselines: they have empty params; the caller holds the study lock.
    """
    def cost(s: str) -> float:
        return cost_proxy(space.sources[s])

    bases = baseline_sources(study.user_attrs["architectures"], list(space.sources), scratch_baselines, cost)
    for base_source in sorted(bases, key=cost):
        study.enqueue_trial({}, user_attrs={ROLE: SCRATCH, "baseline_source": base_source})
    for s in space.sampled_sources:
        if any(space.strategies[t].converges for t in space.applicable[s]):
            continue
        first = next((x for x in DEFAULT_STRATEGY_FIRST if x in space.sampled[s]), space.sampled[s][0])
        study.enqueue_trial(space.fixed(s, first), user_attrs={ROLE: "default"}, skip_if_exists=True)


def cost_proxy(source: Any) -> float:
    """Relative cost of training ``source``'s architecture: parameters × input pixels (images)."""
    from ..strategies import source_info

    params = float(sum(source_info(source).group_sizes))
    size = (getattr(source, "data_config", None) or {}).get("input_size") if source.modality == "image" else None
    return params * (float(math.prod(size[1:])) if size else 1.0)


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="trials", unit="trial", leave=True, dynamic_ncols=True)


def _tick(bar: Any, study: optuna.Study, ctx: _Context, total: int, t0: float, timeout: float) -> None:
    if bar is None:
        return
    ts = study.get_trials(deepcopy=False)
    n = counted(study, ctx)
    pruned = sum(t.state == TrialState.PRUNED for t in ts)
    failed = sum(t.state == TrialState.FAIL for t in ts)
    best = max((t.value for t in ts if t.state == TrialState.COMPLETE and t.value is not None), default=float("nan"))
    bar.n = min(n, total)
    bar.set_postfix_str(f"pruned={pruned} failed={failed} best={best:.4f} "
                        f"elapsed={now() - t0:.0f}/{timeout:.0f}s")
    bar.refresh()


def _finish(study: optuna.Study, ctx: _Context, t0: float, data: Any) -> SearchResult:
    """Pick the answer (never worse than scratch on validation), test it once, export it, write reports."""
    from ..model import load_model
    from ..plugins import get_plugin_manager
    from .report import write_reports

    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    scratch = [t for t in complete if t.user_attrs.get(ROLE) == SCRATCH]
    transfer = [t for t in complete if t.user_attrs.get(ROLE) != SCRATCH]
    base = max(scratch, key=lambda t: t.value) if scratch else None
    best = max(transfer, key=lambda t: (t.value, -t.number)) if transfer else None
    negative = base is not None and (best is None or best.value <= base.value)
    answer = base if negative else best
    if answer is None:
        raise AutotransferError(
            f"no trial completed in {str(ctx.out_dir)!r} (see leaderboards/trials.csv for the reasons); "
            "raise --timeout or --trials, or check the failures"
        )
    tests: dict[int, float | None] = {}
    best_dir: Path | None = None
    for t in {answer.number: answer, **({base.number: base} if base else {})}.values():
        mdir = ctx.models_dir / f"trial_{t.number}"
        if not mdir.exists():
            tests[t.number] = None
            continue
        model = load_model(mdir, device="cpu")
        tests[t.number] = _accuracy(model, ctx.dataset, "test")
        if t.number == answer.number:
            best_dir = ctx.out_dir / "best"
            if best_dir.exists():
                shutil.rmtree(best_dir)
            shutil.copytree(mdir, best_dir)
    if best_dir is None:
        note(f"the chosen model (trial {answer.number}) was trained by another worker; "
             "its weights are in that worker's --out directory")
    summary_extra = {"answer": answer.number, "baseline": base.number if base else None, "tests": tests,
                     "negative": negative, "seconds": now() - t0, "data": str(data)}
    rows = write_reports(study, ctx, final=True, extra=summary_extra)
    from .report import read_summary, read_transferability

    summary = read_summary(ctx.out_dir)
    get_plugin_manager().notify("search_finished", result={**summary, "out_dir": str(ctx.out_dir)})
    return SearchResult(ctx.out_dir, summary, rows, read_transferability(ctx.out_dir), best_dir, negative,
                        list(study.user_attrs.get("sources", [])))

