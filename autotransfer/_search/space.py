"""The conditional search space, built from the registries: source × strategy × the strategy's own parameters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from ..console import warn
from ..errors import AutotransferError
from ..strategies import ParamSpec, StrategyNotApplicable, get_strategy, source_info

WEIGHT_DECAY = ParamSpec("float", 1e-5, 1e-1, log=True, default=1e-2, help="AdamW weight decay")


@dataclass
class TrialConfig:
    """What one trial trains."""

    source: str  # source name
    strategy: str  # strategy name
    lr: float
    weight_decay: float
    params: dict[str, Any]  # the strategy's own parameters (depth, lr_decay, lora_rank ...)


def _suggest(trial: optuna.Trial, name: str, spec: ParamSpec) -> Any:
    if spec.kind == "categorical":
        return trial.suggest_categorical(name, list(spec.choices))
    if spec.kind == "int":
        return trial.suggest_int(name, int(spec.low), int(spec.high), log=spec.log)
    return trial.suggest_float(name, float(spec.low), float(spec.high), log=spec.log)


class SearchSpace:
    """Parameter names are shared where the distribution is the same for every source, and
    suffixed ``@<source>`` where it differs (e.g. ``partial.depth`` ranges over each source's
    layer groups), so TPE's grouped multivariate model sees a consistent conditional space.

    A strategy that cannot apply to a source is skipped for it and kept in ``skipped`` (the report
    lists it); only ``quiet=False`` warns, which the search passes when the user named the
    strategies: a default one that does not fit (LoRA on a CNN) was never asked for.
    """

    def __init__(self, sources: Sequence[Any], strategy_names: Sequence[str], quiet: bool = False):
        self.sources = {s.name: s for s in sources}
        self.strategies = {n: get_strategy(n) for n in strategy_names}
        self.applicable: dict[str, list[str]] = {}
        self.skipped: dict[str, dict[str, str]] = {}  # source -> strategy -> why it cannot apply
        self.specs: dict[tuple[str, str], dict[str, ParamSpec]] = {}
        for sname, src in self.sources.items():
            info = source_info(src)
            ok = []
            for tname, strat in self.strategies.items():
                try:
                    strat.check(info)
                except StrategyNotApplicable as exc:
                    self.skipped.setdefault(sname, {})[tname] = str(exc)
                    if not quiet:
                        warn(f"strategy {tname!r} skipped for source {sname!r}: {exc}")
                    continue
                ok.append(tname)
                self.specs[(sname, tname)] = strat.search_space(info)
            self.applicable[sname] = ok
        usable = [s for s, ok in self.applicable.items() if ok]
        if not usable:
            raise AutotransferError(
                f"no strategy among {', '.join(strategy_names)} applies to any source; add --strategies linear_probe"
            )
        self.sources = {s: self.sources[s] for s in usable}
        # strategies solved to convergence (linear probe) have nothing to sample: they run once per
        # source as a fixed trial, and the sampler only sees the rest
        self.sampled = {s: [t for t in self.applicable[s] if not self.strategies[t].converges] for s in usable}
        self.sampled_sources = [s for s in usable if self.sampled[s]]
        self._strategy_varies = len({tuple(self.sampled[s]) for s in self.sampled_sources}) > 1
        self._varies: dict[tuple[str, str], bool] = {}
        for tname in self.strategies:
            per_source = [self.specs[(s, tname)] for s in usable if (s, tname) in self.specs]
            for pname in {p for sp in per_source for p in sp}:
                self._varies[(tname, pname)] = len({repr(sp.get(pname)) for sp in per_source}) > 1

    def searched(self) -> dict[str, dict[str, Any]]:
        """Per source: the strategies searched and those skipped with the reason (a study attribute)."""
        return {s: {"strategies": list(self.applicable.get(s, [])), "skipped": dict(self.skipped.get(s, {}))}
                for s in {**self.applicable, **self.skipped}}

    def strategy_param(self, source: str) -> str:
        return f"strategy@{source}" if self._strategy_varies else "strategy"

    def param_name(self, source: str, strategy: str, pname: str) -> str:
        base = f"{strategy}.{pname}"
        return f"{base}@{source}" if self._varies.get((strategy, pname)) else base

    @property
    def exhausted(self) -> bool:
        """Nothing is left to sample: every source's strategies are fixed trials (see ``fixed_trials``)."""
        return not self.sampled_sources

    def fixed_trials(self) -> list[tuple[str, str]]:
        """(source, strategy) of the configurations run once each rather than sampled."""
        return [(s, t) for s in self.sources for t in self.applicable[s] if self.strategies[t].converges]

    def fixed_config(self, source: str, strategy: str) -> TrialConfig:
        """The one configuration of a strategy that converges: its defaults (it chooses its own regularisation)."""
        strat = self.strategies[strategy]
        return TrialConfig(source, strategy, strat.default_lr, WEIGHT_DECAY.default,
                           {p: spec.default for p, spec in self.specs[(source, strategy)].items()})

    def suggest(self, trial: optuna.Trial) -> TrialConfig:
        if self.exhausted:
            raise AutotransferError("the search space has nothing left to sample")
        source = trial.suggest_categorical("source", self.sampled_sources)
        strategy = trial.suggest_categorical(self.strategy_param(source), self.sampled[source])
        strat = self.strategies[strategy]
        lr = _suggest(trial, f"{strategy}.lr", strat.lr_spec())
        wd = _suggest(trial, "weight_decay", WEIGHT_DECAY)
        params = {p: _suggest(trial, self.param_name(source, strategy, p), spec)
                  for p, spec in sorted(self.specs[(source, strategy)].items())}
        return TrialConfig(source, strategy, float(lr), float(wd), params)

    def fixed(self, source: str, strategy: str, **overrides: Any) -> dict[str, Any]:
        """Optuna params for an enqueued trial: ``strategy`` on ``source`` with default values."""
        if strategy not in self.sampled.get(source, []):
            raise AutotransferError(f"strategy {strategy!r} is not sampled for source {source!r}")
        strat = self.strategies[strategy]
        params: dict[str, Any] = {
            "source": source,
            self.strategy_param(source): strategy,
            f"{strategy}.lr": overrides.pop("lr", strat.default_lr),
            "weight_decay": overrides.pop("weight_decay", WEIGHT_DECAY.default),
        }
        for p, spec in self.specs[(source, strategy)].items():
            params[self.param_name(source, strategy, p)] = overrides.pop(p, spec.default)
        return params
