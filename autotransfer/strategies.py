"""The strategy interface: which parameters train, at what learning rate, on what inputs.

A strategy is data plus two small methods. The one training loop (``autotransfer.train``)
asks it for its *stages* (``linear_probe``: one stage on cached features; ``lp_ft``: a
probe stage, then a fine-tune stage), lets it change the model once (``prepare_model``:
LoRA injects adapters there), and, per stage, calls ``param_groups`` which sets
``requires_grad`` and returns AdamW parameter groups (the learning-rate layout).

Its hyper-parameters are declared as data, ``search_space(info) -> {name: ParamSpec}``,
so the search builds a conditional space from the registry with no strategy-specific
code. Built-ins live in ``plugins/strategies`` and register like third-party plugins.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import AutotransferError
from .memo import BoundedMemo
from .plugins import get_registry
from .registry import BUILTIN, Provider

if TYPE_CHECKING:
    import torch

    from .model import TransferModel
    from .sources import Source


class StrategyNotApplicable(AutotransferError):
    """A strategy cannot be used with this source (e.g. LoRA on a CNN); the search skips it with a note."""


@dataclass(frozen=True)
class ParamSpec:
    """One searchable hyper-parameter, as plain data an Optuna search turns into ``suggest_*``."""

    kind: str  # "int", "float" or "categorical"
    low: float | None = None  # inclusive lower bound (int/float)
    high: float | None = None  # inclusive upper bound (int/float)
    log: bool = False  # sample on a log scale (int/float)
    choices: tuple = ()  # the options (categorical)
    default: Any = None  # value used when the parameter is not searched or not given
    help: str = ""  # one line for listings

    def __post_init__(self) -> None:
        if self.kind not in ("int", "float", "categorical"):
            raise ValueError(f"ParamSpec kind must be 'int', 'float' or 'categorical', got {self.kind!r}")
        if self.kind == "categorical":
            if not self.choices:
                raise ValueError("a categorical ParamSpec needs choices")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError(f"ParamSpec needs low <= high, got {self.low=}, {self.high=}")

    def validate(self, name: str, value: Any, where: str) -> Any:
        """``value`` coerced to this kind, or an error naming the parameter, the value and the range."""
        if self.kind == "categorical":
            if value not in self.choices:
                raise AutotransferError(
                    f"{where}: {name}={value!r} is not one of {list(self.choices)}; pick one of those"
                )
            return value
        try:
            v = int(value) if self.kind == "int" else float(value)
        except (TypeError, ValueError):
            what = "an int" if self.kind == "int" else "a float"
            raise AutotransferError(f"{where}: {name}={value!r} must be {what}") from None
        if self.kind == "int" and v != value:
            raise AutotransferError(f"{where}: {name}={value!r} must be a whole number")
        if not (self.low <= v <= self.high) or (self.kind == "float" and not math.isfinite(v)):
            raise AutotransferError(
                f"{where}: {name}={value!r} is outside [{self.low}, {self.high}]; pick a value in that range"
            )
        return v

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["choices"] = list(self.choices)
        return d


@dataclass(frozen=True)
class SourceInfo:
    """What a strategy needs to know about a source to declare its space and check it applies."""

    name: str  # source name
    modality: str  # "image" or "text"
    architecture: str  # architecture name
    n_groups: int  # number of backbone layer groups (input -> output)
    group_sizes: tuple[int, ...]  # parameter count per layer group
    lora_targets: tuple[str, ...]  # nn.Linear modules inside attention blocks (empty: LoRA cannot wrap it)

    @classmethod
    def from_backbone(cls, source: Source, backbone: torch.nn.Module) -> SourceInfo:
        groups = backbone.layer_groups()
        params = dict(backbone.named_parameters())
        return cls(
            name=getattr(source, "name", type(source).__name__),
            modality=getattr(source, "modality", ""),
            architecture=getattr(source, "architecture", "") or getattr(source, "name", ""),
            n_groups=len(groups),
            group_sizes=tuple(sum(params[n].numel() for n in g if n in params) for g in groups),
            lora_targets=tuple(attention_linears(backbone)),
        )


_INFO_CACHE: BoundedMemo[SourceInfo] = BoundedMemo(128)  # source identity -> its SourceInfo


def source_info(source: Source) -> SourceInfo:
    """``SourceInfo`` of ``source``, from a randomly initialised backbone (no weights read); cached."""
    try:
        key = source.identity()
    except Exception:
        key = f"{id(source)}"
    return _INFO_CACHE.get(key, lambda: SourceInfo.from_backbone(source, source.build(pretrained=False)))


def attention_linears(module: torch.nn.Module) -> list[str]:
    """Names of ``nn.Linear`` modules inside attention blocks (timm ``Attention``, HF ``*Attention``).

    The rule is structural, not a list of model names: any module whose class name contains
    "Attention" is an attention block; the linear layers in it (q/k/v, qkv, output projection)
    are where LoRA goes. A CNN has none, so LoRA does not apply to it.
    """
    import torch.nn as nn

    out: list[str] = []
    for name, mod in module.named_modules():
        if "attention" in type(mod).__name__.lower() and not isinstance(mod, nn.Linear):
            for sub, child in mod.named_modules():
                if isinstance(child, nn.Linear) and sub:
                    full = f"{name}.{sub}" if name else sub
                    if full not in out:
                        out.append(full)
    return out


@dataclass
class Stage:
    """One pass of the training loop within a strategy's run."""

    name: str  # "probe" or "fine-tune"; also seeds the stage, so equal names give equal shuffles
    strategy: Strategy  # whose ``param_groups`` configures this stage
    cached_features: bool = False  # train the heads on cached backbone features (no backbone forward)
    lr: float | None = None  # None: the run's lr
    epochs: int | None = None  # None: the run's epochs
    reported: bool = True  # its epochs make the val curve and go to report(); False for a warm-up stage
    params: dict[str, Any] = field(default_factory=dict)  # keyword arguments for ``param_groups``
    # solved to convergence instead of trained for epochs: a full-batch L-BFGS logistic regression per
    # task on the cached features, its L2 strength chosen on validation (needs cached_features)
    solver: bool = False


class Strategy:
    """Base class. Subclasses set the class attributes and implement ``param_groups``."""

    name: str = ""  # registry key
    description: str = ""  # one line for ``autotransfer strategies``; cite the paper
    can_use_cached_features: bool = False  # its main stage trains on cached features
    # its only stage is solved to convergence with the regularisation chosen on validation: lr and
    # weight decay mean nothing to it, so the search runs it once per source and never samples it
    converges: bool = False
    default_lr: float = 1e-3  # lr when none is given
    lr_range: tuple[float, float] = (1e-4, 1e-2)  # search range for lr (log scale)
    options: dict[str, Any] = {}  # keyword options that are not searched, with their defaults
    provider: Provider = BUILTIN  # set by the plugin manager

    # --- declared as data ---

    def search_space(self, info: SourceInfo) -> dict[str, ParamSpec]:
        """Hyper-parameters this strategy adds to the search (beyond lr/epochs), for ``info``'s source."""
        return {}

    def lr_spec(self) -> ParamSpec:
        lo, hi = self.lr_range
        return ParamSpec("float", lo, hi, log=True, default=self.default_lr, help="peak learning rate")

    def check(self, info: SourceInfo) -> None:
        """Raise ``StrategyNotApplicable`` if this strategy cannot train ``info``'s source."""

    def resolve_params(self, info: SourceInfo, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` validated against the space and options, defaults filled in (None = default)."""
        self.check(info)
        space = self.search_space(info)
        known = {**{k: s.default for k, s in space.items()}, **self.options}
        given = {k: v for k, v in params.items() if v is not None}
        unknown = sorted(set(given) - set(known))
        if unknown:
            accepted = ", ".join(sorted(known)) or "none"
            raise AutotransferError(
                f"strategy {self.name!r} does not take {', '.join(unknown)} (it accepts: {accepted})"
            )
        out = dict(known)
        for k, v in given.items():
            out[k] = space[k].validate(k, v, f"strategy {self.name!r}") if k in space else v
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "provider": str(self.provider),
            "cached_features": self.can_use_cached_features,
            "default_lr": self.default_lr,
            "description": self.description,
        }

    # --- behaviour ---

    def stages(self, params: dict[str, Any]) -> list[Stage]:
        """The stages of one run; most strategies have one."""
        return [Stage("probe" if self.can_use_cached_features else "fine-tune", self,
                      cached_features=self.can_use_cached_features, params=params,
                      solver=self.converges and self.can_use_cached_features)]

    def prepare_model(self, model: TransferModel, params: dict[str, Any]) -> None:
        """Change the model's structure once before training (and again on load); default: nothing."""

    def param_groups(self, model: TransferModel, *, lr: float, weight_decay: float,
                     **params: Any) -> list[dict[str, Any]]:
        """Set ``requires_grad`` on every parameter of ``model`` and return AdamW parameter groups."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<strategy {self.name}>"


class ScratchRecipe(Strategy):
    """The scratch baseline's training recipe: the core's own, so it works with any plugin disabled.

    Every parameter trains from random init, heads at 10x the body's lr: the numbers of the
    built-in ``full`` strategy at its defaults (lr 5e-4, no layer-wise decay), so a baseline's
    results are what they were when it borrowed ``full``. Not registered (never searched);
    ``get_strategy("scratch")`` finds it, so a saved scratch model loads without plugins.
    """

    name = "scratch"
    description = "the scratch baseline: every parameter from random init (the core's recipe, never searched)"
    default_lr = 5e-4
    options = {"lr_decay": 1.0, "head_lr_mult": 10.0}

    def param_groups(self, model: TransferModel, *, lr: float, weight_decay: float, lr_decay: float = 1.0,
                     head_lr_mult: float = 10.0, **params: Any) -> list[dict[str, Any]]:
        return layerwise_groups(model, lr, weight_decay, lr_decay, lr * head_lr_mult)


SCRATCH_RECIPE = ScratchRecipe()


def get_strategy(name: str | Strategy) -> Strategy:
    """The registered strategy ``name`` (an error lists close matches); a Strategy passes through.

    ``"scratch"`` is the core's scratch-baseline recipe, whatever the plugins register.
    """
    if isinstance(name, Strategy):
        return name
    if name == SCRATCH_RECIPE.name:
        return SCRATCH_RECIPE

    return get_registry("strategies").get(name)


# the built-ins' order in the search space (the sampler's choice order): a seeded search samples as it always has
BUILTIN_ORDER = ("linear_probe", "partial", "full", "lp_ft", "lora")


def default_strategies() -> list[str]:
    """The strategies searched when none are named: every registered one, a third party's included.

    The built-ins come first in ``BUILTIN_ORDER``, the others follow in registration order.
    """

    names = get_registry("strategies").names()
    return sorted(names, key=lambda n: BUILTIN_ORDER.index(n) if n in BUILTIN_ORDER else len(BUILTIN_ORDER))


# --- helpers for param_groups implementations ---


def freeze(params: Iterable[torch.nn.Parameter]) -> None:
    for p in params:
        p.requires_grad_(False)


def decay_split(named: Iterable[tuple[str, torch.nn.Parameter]], lr: float, weight_decay: float,
                label: str) -> list[dict[str, Any]]:
    """Unfreeze ``named`` and split it into a decayed group and an undecayed one (biases, norms: 1-D)."""
    decay, no_decay = [], []
    for _, p in named:
        p.requires_grad_(True)
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "lr": lr, "weight_decay": weight_decay, "name": f"{label}"})
    if no_decay:
        groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{label}/no_decay"})
    return groups


def group_params(model: TransferModel, indices: Iterable[int]) -> Iterator[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) of the backbone layer groups ``indices`` (0 = input side)."""
    params = dict(model.backbone.named_parameters())
    for i in indices:
        for n in model.backbone_groups[i]:
            if n in params:
                yield n, params[n]


def layerwise_groups(model: TransferModel, lr: float, weight_decay: float, lr_decay: float,
                     head_lr: float) -> list[dict[str, Any]]:
    """Every parameter trainable; backbone group i (of n) at ``lr * lr_decay**(n-1-i)``, heads at ``head_lr``."""
    n = len(model.backbone_groups)
    groups: list[dict[str, Any]] = []
    for i in range(n):
        groups += decay_split(group_params(model, [i]), lr * lr_decay ** (n - 1 - i), weight_decay, f"body{i}")
    covered = {id(p) for g in groups for p in g["params"]}
    rest = [(k, p) for k, p in model.backbone.named_parameters() if id(p) not in covered]
    groups += decay_split(rest, lr, weight_decay, "body_rest")  # anything a source left out of its groups
    return groups + decay_split(model.heads.named_parameters(), head_lr, weight_decay, "heads")
