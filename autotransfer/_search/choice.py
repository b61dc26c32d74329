"""Which sources are fine-tuned: the top-k by their solved probes, and the fixed trials that follow
the choice (the scratch baselines, each top source's default fine-tuning)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from ..console import note
from .baselines import baseline_sources, cost_proxy
from .record import DEFAULT, SCRATCH, StudyRecord, TrialRecord
from .space import SearchSpace

DEFAULT_STRATEGY_FIRST = ("linear_probe", "lp_ft", "partial", "full")  # each source's first trial uses the first that applies


def probe_scores(study: optuna.Study) -> dict[str, float]:
    """Each source's best completed probe (a strategy solved to convergence) on validation."""
    best: dict[str, float] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        fixed = TrialRecord.from_frozen(t).fixed
        if fixed and t.value is not None:
            best[fixed["source"]] = max(t.value, best.get(fixed["source"], -math.inf))
    return best


def top_by_probe(ranked: Sequence[str], probes: dict[str, float], top_k: int) -> list[str]:
    """The ``top_k`` sources to fine-tune: best solved probe on validation first; the estimators'
    order breaks ties and places sources whose probe did not complete after those whose did."""
    order = {s: i for i, s in enumerate(ranked)}
    return sorted(ranked, key=lambda s: (-probes.get(s, -math.inf), order[s]))[:top_k]


def choose_top(study: optuna.Study, ctx: Any) -> bool:
    """Make ``ctx.space`` the top-k sources' sampled space once every probe has finished (False until then).

    The estimators rank every source from training features alone; the probes (a linear probe
    solved to convergence: seconds on cached features) then see validation, and a source that
    the estimators misplace (real ImageNet features on a small target) is not left out of the
    expensive trials. The first worker to get here chooses and enqueues the scratch baselines
    and the default trials, under the study lock; the others read the choice.
    """
    if ctx.space is not None:
        return True
    chosen = StudyRecord.from_study(study).sources
    if chosen is None:
        pending = [t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
                   if TrialRecord.from_frozen(t).fixed]
        if pending:
            return False
        ranked = list(ctx.screen.sources)
        probes = probe_scores(study)
        top = top_by_probe(ranked, probes, ctx.plan.config.top_k)
        StudyRecord(sources=top, probe_scores=probes).save(study)
        if probes and len(ranked) > len(top):
            note(f"fine-tuning the top {len(top)} of {len(ranked)} sources by their solved probe on validation: "
                 + ", ".join(f"{s} {probes[s]:.3f}" if s in probes else s for s in top))
        ctx.space = SearchSpace([ctx.screen.sources[s] for s in top], list(ctx.screen.strategies), quiet=True)
        enqueue_after_choice(study, ctx.space, ctx.plan.config.scratch_baselines)
        return True
    ctx.space = SearchSpace([ctx.screen.sources[s] for s in chosen], list(ctx.screen.strategies), quiet=True)
    return True


def enqueue_after_choice(study: optuna.Study, space: SearchSpace, scratch_baselines: int | None) -> None:
    """The fixed trials that follow the probes, in the order that keeps the baselines in budget.

    1. the scratch baselines, one per architecture family among the top-k, cheapest first, so the
       budget's share for them buys at least one, and the priciest is the one that may not fit;
    2. each top source's default sampled strategy (when no converging strategy applies to it);
    3. for the best-probed source (the first of the top-k), the fine-tuning that builds on its probe:
       the first sampled strategy in ``DEFAULT_STRATEGY_FIRST`` order (LP-FT unless restricted) at
       its defaults, what a practitioner tries first after a good probe (Kumar et al. 2022). On
       the imagenet benchmark task the sampler's first trials otherwise go to random configurations
       of all three sources, and a strong finished trial early lets the catch-up rule and
       ``--stall-trials`` end the weaker ones sooner.
    No skip_if_exists for baselines: they have empty params; the caller holds the study lock.
    """
    def cost(s: str) -> float:
        return cost_proxy(space.sources[s])

    bases = baseline_sources(StudyRecord.from_study(study).architectures, list(space.sources), scratch_baselines,
                             cost)
    for base_source in sorted(bases, key=cost):
        study.enqueue_trial({}, user_attrs=TrialRecord(role=SCRATCH, baseline_source=base_source).to_user_attrs())
    def probed(s: str) -> bool:  # a converging strategy (the probe) already ran on it
        return any(space.strategies[t].converges for t in space.applicable[s])

    best = next(iter(space.sources), None)
    for s in space.sampled_sources:
        if not probed(s) or s == best:
            first = next((x for x in DEFAULT_STRATEGY_FIRST if x in space.sampled[s]), space.sampled[s][0])
            study.enqueue_trial(space.fixed(s, first), user_attrs=TrialRecord(role=DEFAULT).to_user_attrs(),
                                skip_if_exists=True)
