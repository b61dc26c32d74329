"""``autotransfer.search`` (``search`` here): rank, then an Optuna study with the scratch baseline as the reference."""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from .._leaderboard import leaderboard
from .._rank import plan_and_rank, subsample, write_transferability
from ..console import note, warn
from ..data import Dataset
from ..errors import AutotransferError
from ..loading import load_model
from ..metrics import Scored, get_metric
from ..plugins import get_plugin_manager
from ..rank_plan import RANK_SHARE, RankDeadline
from ..strategies import default_strategies
from . import rundir
from . import storage as st
from .announce import Announcer
from .answer import VAL_PROBS, choose_answer
from .budget import Budget
from .choice import choose_top
from .config import SearchConfig
from .final import improve, test_score
from .plan import SearchPlan, resolve_plan
from .pruner import ScratchBaselinePruner, make_inner_pruner
from .record import DEFAULT, StudyRecord, TrialRecord
from .report import read_summary, read_transferability, write_reports
from .space import SearchSpace
from .stopping import PerfectScore, Stalled, StoppingRule, TooLittleTime, counted
from .trial import Context, run_trial


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

    def leaderboard(self) -> dict[str, Any]:
        """This run's leaderboards as DataFrames: "transferability", "trials", "summary"."""
        return leaderboard(self.out_dir)


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
    """The search's steps: plan, rank, open the study, run until the budget ends, finish."""
    plan = resolve_plan(data, cfg)
    pruner = ScratchBaselinePruner(cfg.warmup_epochs, cfg.patience, cfg.margin,
                                   inner=make_inner_pruner(cfg.efficiency_pruner, cfg.warmup_epochs))
    srcs, est_names, rows, probe_data = _rank(plan)
    st.quiet_optuna()
    with st.RunOwner(plan.out_dir) as owner:
        with st.study_lock(plan.url, plan.name, plan.out_dir):
            study, screen = _open_study(plan, pruner, srcs, est_names, rows)
            write_transferability(rows, est_names, plan.out_dir)  # only once the study took this run
            plan = plan.resumed(StudyRecord.from_study(study))
            _recover_and_enqueue_probes(study, screen, plan, owner.sole)
        ctx = _context(plan, screen, pruner, rows, probe_data)
        interrupted = False
        try:
            _run_until_budget_ends(study, ctx, plan)
        except KeyboardInterrupt:
            interrupted = True
        if interrupted:  # outside the except block: the re-raised interrupt carries no chained traceback
            _finish_interrupted(study, ctx, plan)
        return _finish(study, ctx, plan.t0, data)


def _rank(plan: SearchPlan) -> tuple[list[Any], list[str], list[dict[str, Any]], Dataset | None]:
    """Resolve the sources and rank them with the estimators within ranking's share of the budget
    (``rank_plan``), in memory: transferability.csv is written once the study accepts the run. The last
    value is the ranking's training subsample (the probes train on it), None when every training item
    was ranked."""

    cfg = plan.config
    rank_end = plan.t0 + RANK_SHARE * plan.timeout

    def check() -> None:
        if cfg.clock() > rank_end:
            raise RankDeadline(f"ranking's share of the time budget ({RANK_SHARE:.0%} of --timeout) ended")

    srcs, est_names, rows, ranking = plan_and_rank(
        plan.dataset, cfg.sources, cfg.estimators, share=max(0.0, rank_end - cfg.clock()), offline=cfg.offline,
        trust_remote_code=cfg.trust_remote_code, primary=cfg.primary, max_samples=cfg.max_samples,
        device=cfg.device, cache_dir=cfg.cache_dir, seed=cfg.seed, progress=cfg.progress, precision=plan.precision,
        check=check)
    sub = None
    if ranking is not None and (ranking.items is not None or ranking.left_out):
        note(ranking.describe(len(plan.dataset.splits["train"])))
    if ranking is not None and ranking.items is not None:
        sub = subsample(plan.dataset, min(ranking.items, cfg.max_samples or ranking.items), cfg.seed)
    return srcs, est_names, rows, sub


def _open_study(plan: SearchPlan, pruner: ScratchBaselinePruner, srcs: list[Any], est_names: list[str],
                rows: list[dict[str, Any]]) -> tuple[optuna.Study, SearchSpace]:
    """Create or load the study (the caller holds its lock) and the space the probes screen.

    A new study records the ranking and the data; a resumed one must be of the same data, and
    every source it ranked must load here.
    """

    cfg = plan.config
    strategy_names = list(cfg.strategies) if cfg.strategies else default_strategies()
    sampler = optuna.samplers.TPESampler(multivariate=True, group=True, constant_liar=True, seed=cfg.seed,
                                         n_startup_trials=max(4, cfg.top_k + 1))
    rdb = st.open_storage(plan.url)  # under the lock: the first worker creates the tables
    study = optuna.create_study(storage=rdb, study_name=plan.name, direction="maximize", sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    record = StudyRecord.from_study(study)
    if record.made:
        if record.fingerprint != plan.dataset.fingerprint:
            raise st.other_data_error(plan.name, plan.url, record.fingerprint or "", plan.dataset.fingerprint)
        ranked = list(record.ranked or record.sources)
        missing = [s for s in ranked if s not in {x.name for x in srcs}]
        if missing:
            raise AutotransferError(
                f"study {plan.name!r} searches sources {', '.join(missing)} that this worker cannot load; "
                "pass the same --sources on every worker"
            )
    else:
        ranked = [r["source"] for r in rows if r["rank"] is not None]
    by_name = {s.name: s for s in srcs}
    # only strategies the user named warn when they cannot apply (LoRA on a CNN); the report lists the rest
    screen = SearchSpace([by_name[s] for s in ranked], strategy_names, quiet=not cfg.strategies)
    if not record.made:
        _record_study(study, plan, screen, est_names, rows)
    return study, screen


def _record_study(study: optuna.Study, plan: SearchPlan, screen: SearchSpace, est_names: list[str],
                  rows: list[dict[str, Any]]) -> None:
    """What a new study is of: the ranking, the data, the settings every worker must share."""
    ds, cfg = plan.dataset, plan.config
    with warnings.catch_warnings():  # experimental in Optuna; it names the objective in optuna-dashboard
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([f"validation {get_metric(plan.metric).score_title}"])
    StudyRecord(metric=plan.metric, metric_reason=plan.metric_reason,
        ranked=list(screen.sources), top_k=cfg.top_k, fingerprint=ds.fingerprint, epochs=plan.epochs,
        data=str(plan.data), primary=cfg.primary, estimators=est_names,
        scores={r["source"]: {e: r.get(e) for e in est_names} for r in rows}, searched=screen.searched(),
        pruner={"margin": cfg.margin, "warmup_epochs": cfg.warmup_epochs, "patience": cfg.patience},
        architectures={s.name: (getattr(s, "architecture", "") or s.name) for s in screen.sources.values()},
        dataset={"name": ds.name, "modality": ds.modality, "tasks": ds.task_names,
                 **{f"n_{k}": int(len(v)) for k, v in ds.splits.items()},
                 "counts": ds.class_counts()},  # split -> task -> class -> items (the model card's table)
    ).save(study)


def _recover_and_enqueue_probes(study: optuna.Study, screen: SearchSpace, plan: SearchPlan, sole: bool) -> None:
    """Requeue what a stopped search left running (sole owner of a local study), and enqueue a new
    study's first trials: every ranked source's probe. Baselines and default trials follow once the
    probes have chosen the top-k (``_enqueue_after_choice``)."""
    if sole and plan.url == st.default_storage(plan.out_dir):
        orphans = st.fail_orphans(study)
        if orphans:
            warn(f"trial(s) {', '.join(map(str, orphans))} were left running by a stopped search; "
                 "marked failed and queued again")
    if not study.get_trials(deepcopy=False):
        for source, strategy in screen.fixed_trials():  # the probes: every ranked source
            study.enqueue_trial({}, user_attrs=TrialRecord(role=DEFAULT, fixed={"source": source,
                                                                                "strategy": strategy}).to_user_attrs())


def _context(plan: SearchPlan, screen: SearchSpace, pruner: ScratchBaselinePruner, rows: list[dict[str, Any]],
             probe_dataset: Dataset | None) -> Context:
    budget = Budget(plan.t0, plan.timeout, len(plan.dataset.splits.get("test", [])), clock=plan.config.clock)
    for r in rows:  # a first guess at forward costs (the test reserve), until trials measure them
        if r["source"] in screen.sources and r.get("n_samples"):
            budget.measured(int(r["n_samples"]), float(r.get("extract_seconds") or 0.0))
    return Context(plan, screen, budget, pruner, scores={r["source"]: r for r in rows}, probe_dataset=probe_dataset)


class Step(Enum):
    """What ``_next_trial`` tells a worker to do."""

    RUN = "run"  # run the trial it asked
    WAIT = "wait"  # look again: another worker holds what is needed next
    END = "end"  # the search is over


@dataclass(frozen=True)
class Next:
    """``_next_trial``'s answer: a step, and the trial to run when the step is RUN."""

    step: Step
    trial: optuna.Trial | None = None


_WAIT, _END = Next(Step.WAIT), Next(Step.END)


def _counted(study: optuna.Study, ctx: Context) -> int:
    """``stopping.counted`` for this search: the probes of the top-k sources count, the others are ranking."""
    top = list(ctx.screen.sources)[:ctx.plan.config.top_k]
    return counted(study, sum(1 for s, _ in ctx.screen.fixed_trials() if s in top))


@dataclass(frozen=True)
class _Rules:
    """The stopping rules of one search (``stopping``); with --stall-trials 0 only the budget's."""

    perfect: StoppingRule | None  # asked once the top-k are chosen and no trial waits
    stall: StoppingRule | None  # asked once the top-k are chosen
    time: StoppingRule  # asked before a trial is sampled (none waits)

    @classmethod
    def of(cls, ctx: Context) -> _Rules:
        stall = ctx.plan.config.stall_trials
        return cls(PerfectScore() if stall else None, Stalled(stall) if stall else None,
                   TooLittleTime(ctx.budget))


def _next_trial(study: optuna.Study, ctx: Context, plan: SearchPlan, rules: _Rules) -> Next:
    """Under the study lock: the next trial to run, the end of the search, or a look again later."""
    budget = ctx.budget
    st.fail_stale(study)
    done = _counted(study, ctx)
    chosen = choose_top(study, ctx)  # False until every probe has finished
    waiting = bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    end = chosen and ctx.space is not None and ctx.space.exhausted and not waiting
    if ((done >= plan.trials or end or not (chosen or waiting)) and budget.remaining() > 0
            and st.others_running(study)):
        return _WAIT  # a dead worker's trial is yet to be retried, or the choice needs its probe
    if done >= plan.trials or budget.remaining() <= 0:
        return _END
    if chosen and not waiting and rules.perfect and _stops(rules.perfect, study, done, plan.trials):
        return _END
    if chosen and rules.stall and _stops(rules.stall, study, done, plan.trials):
        return _END
    if end:
        note(f"every configuration of the search space has run ({done} trials): "
             "the strategies searched train to convergence, nothing is left to sample")
        return _END
    if not (chosen or waiting):  # cannot happen under the lock; never sample unchosen
        return _WAIT
    if not waiting and _stops(rules.time, study, done, plan.trials):
        return _END
    return Next(Step.RUN, st.ask(study))


def _stops(rule: StoppingRule, study: optuna.Study, done: int, trials: int) -> bool:
    """Whether ``rule`` ends the search now; if so the note says why."""
    why = rule.reason(study)
    if why is not None:
        note(f"{why}: the search ends after {done} of {trials} trials{rule.hint}")
    return why is not None


def _run_until_budget_ends(study: optuna.Study, ctx: Context, plan: SearchPlan) -> None:
    """Ask, train and tell trials until ``trials`` count, the budget ends, or nothing is left to sample."""

    bar = _progress(plan.config.progress, plan.trials)
    announce = Announcer(plan.config.callbacks)
    rules = _Rules.of(ctx)
    try:
        while True:
            with st.study_lock(plan.url, plan.name, plan.out_dir):
                nxt = _next_trial(study, ctx, plan, rules)
            if nxt.step is Step.END:
                break
            if nxt.step is Step.WAIT:
                continue
            trial = nxt.trial
            run_trial(study, trial, ctx)
            announce.finished(study, trial, write_reports(study, ctx, final=False))
            _tick(bar, study, ctx, plan.trials, plan.t0, plan.timeout)
        if ctx.budget.remaining() <= 0 and _counted(study, ctx) < plan.trials:
            note(f"the time budget (--timeout {plan.timeout:.0f} s) ended after {_counted(study, ctx)} of "
                 f"{plan.trials} trials; raise --timeout for more")
    finally:
        if bar is not None:
            bar.close()


def _finish_interrupted(study: optuna.Study, ctx: Context, plan: SearchPlan) -> None:
    """Write what finished (nothing may have), say how to resume, and re-raise the interrupt."""

    try:
        _finish(study, ctx, plan.t0, plan.data, finalise=False)
    except AutotransferError:
        write_reports(study, ctx, final=False)
    note(f"interrupted: leaderboards for the finished trials are in {plan.out_dir / 'leaderboards'}; "
         "rerun the same command to resume")
    raise KeyboardInterrupt

def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="trials", unit="trial", leave=True, dynamic_ncols=True)


def _tick(bar: Any, study: optuna.Study, ctx: Context, total: int, t0: float, timeout: float) -> None:
    if bar is None:
        return
    ts = study.get_trials(deepcopy=False)
    n = _counted(study, ctx)
    pruned = sum(t.state == TrialState.PRUNED for t in ts)
    failed = sum(t.state == TrialState.FAIL for t in ts)
    best = max((t.value for t in ts if t.state == TrialState.COMPLETE and t.value is not None), default=float("nan"))
    bar.n = min(n, total)
    bar.set_postfix_str(f"pruned={pruned} failed={failed} best={best:.4f} "
                        f"elapsed={ctx.budget.now() - t0:.0f}/{timeout:.0f}s")
    bar.refresh()


def _finish(study: optuna.Study, ctx: Context, t0: float, data: Any, finalise: bool = True) -> SearchResult:
    """Pick the answer (never worse than scratch on validation), test it once, export it, write reports.

    ``finalise``: then ensemble or refit it (``final.improve``) as --ensemble and --refit say; an
    interrupted search exports the chosen trial as it is."""

    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    metric = StudyRecord.from_study(study).selection_metric
    chosen = choose_answer(complete, ctx.plan.models_dir, metric, ctx.plan.dataset.split_labels("val"))
    if chosen is None:
        raise AutotransferError(
            f"no trial completed in {str(ctx.plan.out_dir)!r} (see leaderboards/trials.csv for the reasons); "
            "raise --timeout or --trials, or check the failures"
        )
    answer, base, negative = chosen.trial, chosen.baseline, chosen.negative
    tests: dict[int, Scored | None] = {}
    confusion: dict[str, Any] = {}  # the answer's on test, per task (none: not tested here)
    best_dir: Path | None = None
    for t in {answer.number: answer, **({base.number: base} if base else {})}.values():
        mdir = ctx.plan.models_dir / f"trial_{t.number}"
        if not mdir.exists():
            tests[t.number] = None
            continue
        model = load_model(mdir, device="cpu")
        tested = test_score(model, ctx.plan.dataset, "test", metric)
        tests[t.number] = tested[0] if tested else None
        if t.number == answer.number:
            confusion = tested[1] if tested else {}
            best_dir = ctx.plan.out_dir / "best"
            if best_dir.exists():
                shutil.rmtree(best_dir)
            shutil.copytree(mdir, best_dir, ignore=shutil.ignore_patterns(VAL_PROBS))
    StudyRecord(test_confusion=confusion).save(study)  # replaces an earlier answer's
    if best_dir is None:  # an earlier answer's best/ here would not be the model summary.csv describes
        shutil.rmtree(ctx.plan.out_dir / "best", ignore_errors=True)
        note(f"the chosen model (trial {answer.number}) was trained by another worker; "
             "its weights are in that worker's --out directory")
    final, final_confusion = improve(ctx, complete, answer, tests[answer.number], best_dir) if (
        best_dir and finalise) else ({}, None)
    if final_confusion is not None:  # the weak spots are best/'s: the refit's or the ensemble's
        StudyRecord(test_confusion=final_confusion).save(study)
    summary_extra = {"answer": answer.number, "baseline": base.number if base else None, "tests": tests,
                     "negative": negative, "seconds": ctx.budget.now() - t0, "data": str(data), "final": final,
                     "chosen": chosen}
    rows = write_reports(study, ctx, final=True, extra=summary_extra)

    out_dir = ctx.plan.out_dir
    summary = read_summary(out_dir)
    get_plugin_manager().notify("search_finished", result={**summary, "out_dir": str(out_dir)})
    return SearchResult(out_dir, summary, rows, read_transferability(out_dir), best_dir, negative,
                        list(StudyRecord.from_study(study).sources or []))

