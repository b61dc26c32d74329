"""The plugin contract as checks, for a plugin author's own tests (like scikit-learn's ``check_estimator``)::

    from autotransfer.testing import check_estimator, check_source, check_strategy

    def test_my_plugin():
        check_source(MySource())        # names, modality, weights, both builds, input pipeline
        check_strategy(MyStrategy())    # fields, search space, resolve_params, stages, param_groups
        check_estimator(my_estimator)   # fields, finite deterministic float, direction

or each check as its own test case, so one failure does not hide the others (like scikit-learn's
``parametrize_with_checks``)::

    from autotransfer.testing import parametrize_with_checks

    @parametrize_with_checks(sources=[MySource()], strategies=[MyStrategy()], estimators=[my_estimator])
    def test_contract(item, check):
        check(item)

Each check runs the item on tiny inputs and raises ``AssertionError`` that names the item, what the
contract expects and what it got. The built-in plugins are tested with these same checks.
"""

from __future__ import annotations

import contextlib
import copy
import math
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from .errors import AutotransferError
from .estimators import FEATURES, SOURCE_PROBS
from .model import TransferModel
from .sources import Backbone, Source
from .strategies import ParamSpec, SourceInfo, Stage, Strategy

TEXTS = ("the cat sat on the mat", "shares in the bank rose after the election news")


def _who(kind: str, item: Any) -> str:
    return f"{kind} {getattr(item, 'name', type(item).__name__)!r}"


def _expect(ok: Any, who: str, expected: str, got: Any) -> None:
    """An explicit raise, not ``assert``: the checks must hold under ``python -O`` too."""
    if not ok:
        raise AssertionError(f"{who}: {expected}; got {got!r}")


# --- sources -------------------------------------------------------------------------------


def check_source(source: Any, items: Sequence[Any] | None = None) -> None:
    """Check ``source`` against the ``autotransfer.sources.Source`` contract: every ``SOURCE_CHECKS`` in one call.

    Its pretrained weights must be available. ``items``: two or more dataset items its
    ``load_item`` takes (image paths, or texts); by default two small PNG files or two sentences.
    Both builds are checked: the ``Backbone`` members, layer groups (ordered, disjoint, covering
    every parameter), ``(batch, feature_dim)`` finite deterministic features, the source head;
    the scratch build has the pretrained one's architecture and other weights.
    """
    who = _who("source", source)
    check_source_fields(source)
    check_source_available(source)
    with _source_items(source, items) as items:
        batch = _check_pipeline(source, items, who)
        pretrained = _check_backbone(source, True, batch, len(items), who)
        scratch = _check_backbone(source, False, batch, len(items), who)
    _check_scratch(pretrained, scratch, who)


def check_source_fields(source: Any) -> None:
    """The ``Source`` fields: name, modality, spec, architecture, flags, ``feature_dim``, ``describe()``."""
    _check_source_fields(source, _who("source", source))


def check_source_available(source: Any) -> None:
    """``available()`` says ``(True, why)`` (the weights are there) and ``identity()`` is a stable non-empty str."""
    who = _who("source", source)
    ok, why = source.available()
    _expect(isinstance(ok, bool) and isinstance(why, str), who, "available() must return (bool, str)", (ok, why))
    _expect(ok, who, "its pretrained weights must be available to check it", why)
    identity = source.identity()
    _expect(isinstance(identity, str) and identity and identity == source.identity(), who,
            "identity() must be a non-empty str, the same on every call", identity)


def check_source_pipeline(source: Any, items: Sequence[Any] | None = None) -> None:
    """``transform_key``, ``load_item`` (eval and train), ``collate`` and ``decoded_augmentation`` on ``items``."""
    with _source_items(source, items) as items:
        _check_pipeline(source, items, _who("source", source))


def check_source_pretrained(source: Any, items: Sequence[Any] | None = None) -> None:
    """``build(pretrained=True)``: a ``Backbone`` with valid layer groups, finite deterministic features, its head."""
    with _source_items(source, items) as items:
        _check_backbone(source, True, _eval_batch(source, items), len(items), _who("source", source))


def check_source_scratch(source: Any, items: Sequence[Any] | None = None) -> None:
    """``build(pretrained=False)``: a valid ``Backbone`` with the pretrained build's architecture, other weights."""
    who = _who("source", source)
    with _source_items(source, items) as items:
        scratch = _check_backbone(source, False, _eval_batch(source, items), len(items), who)
    _check_scratch(source.build(pretrained=True), scratch, who)


@contextlib.contextmanager
def _source_items(source: Any, items: Sequence[Any] | None) -> Iterator[list[Any]]:
    """``items`` as a list, or two tiny ones of the source's modality (files that live for the block)."""
    with tempfile.TemporaryDirectory() as tmp:
        yield list(items) if items is not None else _tiny_items(source.modality, Path(tmp))


def _eval_batch(source: Any, items: list[Any]) -> Any:
    return source.collate([source.load_item(item, train=False) for item in items])


def _check_source_fields(source: Any, who: str) -> None:
    _expect(isinstance(source, Source), who, "must be an autotransfer.sources.Source", type(source).__name__)
    _expect(isinstance(source.name, str) and source.name.strip(), who, "name must be a non-empty str", source.name)
    _expect(source.modality in ("image", "text"), who, "modality must be 'image' or 'text'", source.modality)
    for attr, kind in (("spec", str), ("architecture", str), ("description", str), ("default", bool),
                       ("offline_zoo", bool)):
        _expect(isinstance(getattr(source, attr), kind), who, f"{attr} must be a {kind.__name__}",
                getattr(source, attr))
    dim = source.feature_dim
    _expect(isinstance(dim, int) and dim > 0, who, "feature_dim must be a positive int", dim)
    row = source.describe()
    _expect(isinstance(row, dict) and row.get("name") == source.name, who,
            "describe() must return a dict whose 'name' is the source's name", row)


def _tiny_items(modality: str, folder: Path) -> list[Any]:
    """Two small dataset items as a dataset gives them: PNG file paths, or texts."""
    if modality == "text":
        return list(TEXTS)
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = [folder / "rgb.png", folder / "gray.png"]
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(paths[0])
    Image.fromarray(rng.integers(0, 256, (32, 24), dtype=np.uint8)).save(paths[1])
    return paths


def _check_pipeline(source: Any, items: list[Any], who: str) -> Any:
    """``load_item`` (eval and train) and ``collate`` on ``items``; returns the eval batch."""
    batches = {}
    for train in (False, True):
        key = source.transform_key(train)
        _expect(isinstance(key, str) and key, who, f"transform_key(train={train}) must be a non-empty str", key)
        batches[train] = source.collate([source.load_item(item, train=train) for item in items])
    _check_decoded_augmentation(source, batches[True], who)
    return batches[False]


def _check_decoded_augmentation(source: Any, train_batch: Any, who: str) -> None:
    """``decoded_augmentation()``, when there is one: the training batch's shape, finite, its draws from ``rng`` alone."""
    spec = source.decode_spec() if source.modality == "image" else None
    augment = source.decoded_augmentation() if spec is not None else None
    if augment is None:
        return
    import torch

    images = np.random.default_rng(0).integers(0, 256, (3, spec.side, spec.side, spec.channels), dtype=np.uint8)
    runs = []
    numpy_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):  # the caller's global generators are left as they were
            for seed in (0, 0):
                torch.manual_seed(len(runs))  # global generators that differ between the two calls
                np.random.seed(len(runs))
                runs.append(augment(images, np.array([2, 0]), np.random.default_rng(seed), torch.device("cpu")))
    finally:
        np.random.set_state(numpy_state)
    x = runs[0]
    expected = (2, *tuple(train_batch.shape[1:]))
    _expect(isinstance(x, torch.Tensor) and tuple(x.shape) == expected and x.dtype == torch.float32, who,
            f"decoded_augmentation() must give float32 batches shaped like load_item(train=True)'s {expected}",
            getattr(x, "shape", x))
    _expect(bool(torch.isfinite(x).all()) and torch.equal(x, runs[1]), who,
            "decoded_augmentation() must give finite inputs drawn from its rng alone (the same seed, the same batch)",
            "different batches")


def _check_backbone(source: Any, pretrained: bool, batch: Any, n: int, who: str) -> Any:
    import torch

    what = f"{who} build(pretrained={pretrained})"
    backbone = source.build(pretrained=pretrained)
    _expect(isinstance(backbone, torch.nn.Module), what, "must return a torch.nn.Module", type(backbone).__name__)
    _expect(isinstance(backbone, Backbone), what, "must have layer_groups() and source_head "
            "(see autotransfer.sources.Backbone)", type(backbone).__name__)
    check_layer_groups(backbone, what)
    backbone.eval()
    with torch.inference_mode():
        feats, again = backbone(batch), backbone(batch)
    _expect(isinstance(feats, torch.Tensor) and tuple(feats.shape) == (n, source.feature_dim), what,
            f"forward(batch of {n}) must give a ({n}, feature_dim={source.feature_dim}) tensor",
            tuple(getattr(feats, "shape", ())))
    _expect(bool(torch.isfinite(feats).all()), what, "features must be finite", feats)
    _expect(torch.equal(feats, again), what, "forward must be deterministic in eval mode",
            float((feats - again).abs().max()))
    _check_source_head(backbone, pretrained, feats, n, what)
    return backbone


def _check_source_head(backbone: Any, pretrained: bool, feats: Any, n: int, what: str) -> None:
    import torch

    head = backbone.source_head
    if head is None:
        return
    _expect(pretrained, what, "the scratch build's source_head must be None (a random classifier means nothing)",
            type(head).__name__)
    inside = {id(p) for p in backbone.parameters()}
    _expect(not any(id(p) in inside for p in head.parameters()), what,
            "source_head must not be a submodule (its parameters are never trained)", "shared parameters")
    with torch.inference_mode():
        logits = head(feats)
    _expect(logits.ndim == 2 and logits.shape[0] == n, what,
            f"source_head(features) must give ({n}, source classes) logits", tuple(logits.shape))


def check_layer_groups(backbone: Any, what: str = "backbone") -> list[list[str]]:
    """``backbone.layer_groups()``: lists of parameter names, non-empty, disjoint, covering every
    parameter, each group starting after the previous one in definition (forward) order."""
    groups = backbone.layer_groups()
    names = [n for n, _ in backbone.named_parameters()]
    _expect(isinstance(groups, list) and groups and all(isinstance(g, list) and g for g in groups), what,
            "layer_groups() must be a non-empty list of non-empty lists of parameter names", groups)
    flat = [n for g in groups for n in g]
    _expect(len(flat) == len(set(flat)), what, "layer groups must be disjoint",
            sorted({n for n in flat if flat.count(n) > 1})[:3])
    _expect(set(flat) <= set(names), what, "layer groups must name parameters only",
            sorted(set(flat) - set(names))[:3])
    _expect(set(names) <= set(flat), what, "layer groups must cover every parameter",
            sorted(set(names) - set(flat))[:3])
    first = [min(names.index(n) for n in g) for g in groups]
    _expect(first == sorted(first), what, "layer groups must be ordered input -> output", first)
    return groups


def _check_scratch(pretrained: Any, scratch: Any, who: str) -> None:
    import torch

    a, b = dict(pretrained.named_parameters()), dict(scratch.named_parameters())
    _expect({k: tuple(v.shape) for k, v in a.items()} == {k: tuple(v.shape) for k, v in b.items()}, who,
            "build(pretrained=False) must have the pretrained build's parameters (same architecture)",
            sorted(set(a) ^ set(b))[:3])
    _expect(any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point()), who,
            "build(pretrained=False) must be randomly initialised, not the pretrained weights", "equal weights")


# --- strategies ----------------------------------------------------------------------------


def check_strategy(strategy: Any, backbone: Any = None) -> None:
    """Check ``strategy`` against the ``autotransfer.strategies.Strategy`` contract: every ``STRATEGY_CHECKS``.

    ``backbone``: a ``Backbone`` taking ``(B, 8)`` float input that the strategy applies to; by
    default a tiny one with an attention block (so LoRA applies) in 3 layer groups. Checked: the
    fields, the search space and ``resolve_params`` (defaults, None, unknown and out-of-range
    values), and for every stage that ``param_groups`` trains exactly the parameters it returns,
    heads included, at positive learning rates.
    """

    who = _who("strategy", strategy)
    _check_strategy_fields(strategy, who)
    backbone = backbone if backbone is not None else tiny_backbone()
    params = _check_resolve_params(strategy, _strategy_info(backbone), who)
    _check_stages(strategy, backbone, params, who)


def check_strategy_fields(strategy: Any) -> None:
    """The ``Strategy`` fields: name, description, learning-rate range and default, options, flags."""
    _check_strategy_fields(strategy, _who("strategy", strategy))


def check_strategy_params(strategy: Any, backbone: Any = None) -> None:
    """``check``, ``search_space`` and ``resolve_params``: defaults, None, other, unknown and out-of-range values."""
    backbone = backbone if backbone is not None else tiny_backbone()
    _check_resolve_params(strategy, _strategy_info(backbone), _who("strategy", strategy))


def check_strategy_stages(strategy: Any, backbone: Any = None) -> None:
    """Every stage of the default parameters: ``param_groups`` trains exactly the parameters it returns, heads too."""
    backbone = backbone if backbone is not None else tiny_backbone()
    params = strategy.resolve_params(_strategy_info(backbone), {})
    _check_stages(strategy, backbone, params, _who("strategy", strategy))


def _strategy_info(backbone: Any) -> SourceInfo:
    return SourceInfo.from_backbone(SimpleNamespace(name="check", modality="image", architecture="tiny"), backbone)


def _check_strategy_fields(strategy: Any, who: str) -> None:
    _expect(isinstance(strategy, Strategy), who, "must be an autotransfer.strategies.Strategy",
            type(strategy).__name__)
    _expect(isinstance(strategy.name, str) and strategy.name.strip(), who, "name must be a non-empty str",
            strategy.name)
    _expect(isinstance(strategy.description, str), who, "description must be a str", strategy.description)
    lo, hi = strategy.lr_range
    _expect(0 < lo < hi and lo <= strategy.default_lr <= hi, who,
            "lr_range must be (low, high) with 0 < low < high, and default_lr inside it",
            (strategy.lr_range, strategy.default_lr))
    _expect(isinstance(strategy.lr_spec(), ParamSpec), who, "lr_spec() must return a ParamSpec", strategy.lr_spec())
    _expect(isinstance(strategy.options, dict), who, "options must be a dict of option -> default",
            strategy.options)
    for flag in ("can_use_cached_features", "converges"):
        _expect(isinstance(getattr(strategy, flag), bool), who, f"{flag} must be a bool", getattr(strategy, flag))
    _expect(not strategy.converges or strategy.can_use_cached_features, who,
            "a strategy that converges is solved on cached features (can_use_cached_features=True)",
            strategy.can_use_cached_features)


def _check_resolve_params(strategy: Any, info: Any, who: str) -> dict[str, Any]:
    strategy.check(info)
    space = strategy.search_space(info)
    _expect(isinstance(space, dict) and all(isinstance(s, ParamSpec) for s in space.values()), who,
            "search_space(info) must return {name: ParamSpec}", space)
    _expect(not set(space) & set(strategy.options), who, "a name is either searched or an option, not both",
            sorted(set(space) & set(strategy.options)))
    params = strategy.resolve_params(info, {})
    _expect(set(params) == set(space) | set(strategy.options), who,
            "resolve_params(info, {}) must give every searched parameter and option", sorted(params))
    _expect(strategy.resolve_params(info, dict.fromkeys(space)) == params, who,
            "resolve_params must treat None as the default", "other values")
    for name, spec in space.items():
        spec.validate(name, params[name], who)  # the default is a valid value
        other = spec.choices[-1] if spec.kind == "categorical" else spec.high
        _expect(strategy.resolve_params(info, {name: other})[name] == other, who,
                f"resolve_params must accept {name}={other!r}", "another value")
        bad = object() if spec.kind == "categorical" else spec.high + abs(spec.high) + 1
        _expect(_raises(AutotransferError, strategy.resolve_params, info, {name: bad}), who,
                f"resolve_params must refuse {name}={bad!r} (outside the space)", "no error")
    _expect(_raises(AutotransferError, strategy.resolve_params, info, {"no_such_parameter": 1}), who,
            "resolve_params must refuse a parameter it does not take", "no error")
    return params


def _raises(exc: type[BaseException], fn: Any, *args: Any) -> bool:
    try:
        fn(*args)
    except exc:
        return True
    return False


def _check_stages(strategy: Any, backbone: Any, params: dict[str, Any], who: str) -> None:
    stages = strategy.stages(params)
    _expect(isinstance(stages, list) and stages and all(isinstance(s, Stage) for s in stages), who,
            "stages(params) must return a non-empty list of Stage", stages)
    import torch

    with torch.no_grad():
        dim = int(backbone(tiny_batch()).shape[-1])
    model = TransferModel(copy.deepcopy(backbone), dim, [SimpleNamespace(name="task", num_classes=3)])
    strategy.prepare_model(model, params)
    for stage in stages:
        what = f"{who} stage {stage.name!r}"
        _expect(not stage.solver or stage.cached_features, what, "a solver stage must use cached features",
                stage.cached_features)
        groups = stage.strategy.param_groups(model, lr=1e-3, weight_decay=1e-4, **stage.params)
        _check_param_groups(model, groups, what)


def _check_param_groups(model: Any, groups: Any, what: str) -> None:
    _expect(isinstance(groups, list) and groups and all(isinstance(g, dict) and g.get("params") for g in groups),
            what, "param_groups must return a non-empty list of {'params': [...], 'lr': ...} dicts", groups)
    _expect(all(math.isfinite(g.get("lr", 0)) and g.get("lr", 0) > 0 for g in groups), what,
            "every parameter group needs a positive finite lr", [g.get("lr") for g in groups])
    ids = [id(p) for g in groups for p in g["params"]]
    _expect(len(ids) == len(set(ids)), what, "a parameter must be in one group only", "duplicates")
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    _expect(set(ids) == trainable, what, "the parameters with requires_grad must be exactly those in the groups",
            f"{len(set(ids) - trainable)} grouped but frozen, {len(trainable - set(ids))} trainable but ungrouped")
    _expect(all(id(p) in trainable for p in model.heads.parameters()), what, "the heads must train", "frozen heads")


def tiny_batch(n: int = 4) -> Any:
    """The ``(n, 8)`` float input ``tiny_backbone`` takes."""
    import torch

    return torch.randn(n, 8, generator=torch.Generator().manual_seed(0))


def tiny_backbone(seed: int = 0) -> Any:
    """A ``Backbone`` of three layer groups (embedding, an attention block, norm + output): 16-d features."""
    import torch
    from torch import nn

    class Attention(nn.Module):  # the class name is what LoRA's target search looks for
        def __init__(self):
            super().__init__()
            self.qkv, self.proj = nn.Linear(16, 48), nn.Linear(16, 16)

        def forward(self, x):
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            return x + self.proj(torch.softmax(q * k, dim=-1) * v)

    class TinyBackbone(nn.Module):
        source_head = None

        def __init__(self):
            super().__init__()
            self.embed, self.attn = nn.Linear(8, 16), Attention()
            self.norm, self.out = nn.LayerNorm(16), nn.Linear(16, 16)

        def forward(self, x):
            return self.out(self.norm(self.attn(self.embed(x))))

        def layer_groups(self) -> list[list[str]]:
            names = [n for n, _ in self.named_parameters()]
            return [[n for n in names if n.split(".")[0] in part] for part in (("embed",), ("attn",), ("norm", "out"))]

    torch.manual_seed(seed)
    return TinyBackbone()


# --- estimators ----------------------------------------------------------------------------


def check_estimator(estimator: Any) -> None:
    """Check ``estimator`` against the ``autotransfer.estimators.Estimator`` contract: every ``ESTIMATOR_CHECKS``.

    On a tiny 3-class problem (60 samples, 8-d float64 features, 5-class source probabilities):
    ``score`` returns a finite float, the same on a second call, without changing its inputs; and
    inputs that separate the classes score better than noise in the direction ``higher_is_better``
    says. An estimator with ``supports_regression`` also gets a 2-column float target.
    """
    check_estimator_fields(estimator)
    check_estimator_score(estimator)
    check_estimator_direction(estimator)
    check_estimator_regression(estimator)


def check_estimator_fields(estimator: Any) -> None:
    """The ``Estimator`` fields: name, callable score, flags, what it requires, description."""
    _check_estimator_fields(estimator, _who("estimator", estimator))


def check_estimator_score(estimator: Any) -> None:
    """``score`` gives a finite float, the same on a second call, and leaves its inputs as they were."""
    who = _who("estimator", estimator)
    good = _tiny_problem(informative=True)
    _expect(_score(estimator, good, who) == _score(estimator, good, who), who, "score must be deterministic",
            "two different scores")


def check_estimator_direction(estimator: Any) -> None:
    """Inputs that separate the classes score better than noise, in the direction ``higher_is_better`` says."""
    who = _who("estimator", estimator)
    first = _score(estimator, _tiny_problem(informative=True), who)
    other = _score(estimator, _tiny_problem(informative=False), who)
    better = first > other if estimator.higher_is_better else first < other
    word = "higher" if estimator.higher_is_better else "lower (higher_is_better=False)"
    _expect(better, who, f"inputs that separate the classes must score {word} than noise",
            {"separating": first, "noise": other})


def check_estimator_regression(estimator: Any) -> None:
    """With ``supports_regression``: a 2-column float target scores as a finite float (nothing to check otherwise)."""
    if estimator.supports_regression:
        good = _tiny_problem(informative=True)
        target = np.c_[good["labels"], -good["labels"]].astype(np.float64)
        _score(estimator, {**good, "labels": target}, _who("estimator", estimator))


def _check_estimator_fields(estimator: Any, who: str) -> None:
    _expect(isinstance(estimator.name, str) and estimator.name.strip(), who, "name must be a non-empty str",
            estimator.name)
    _expect(callable(estimator.score), who, "score must be callable", estimator.score)
    for flag in ("higher_is_better", "supports_regression"):
        _expect(isinstance(getattr(estimator, flag), bool), who, f"{flag} must be a bool", getattr(estimator, flag))
    requires = tuple(estimator.requires)
    _expect(requires and set(requires) <= {FEATURES, SOURCE_PROBS}, who,
            f"requires must name {FEATURES!r} and/or {SOURCE_PROBS!r}", requires)
    _expect(isinstance(estimator.description, str), who, "description must be a str", estimator.description)


def _tiny_problem(informative: bool, n_per_class: int = 20) -> dict[str, np.ndarray]:
    """Features, labels and source probabilities; ``informative``: both carry the class, else noise."""
    rng = np.random.default_rng(1 if informative else 2)
    labels = np.repeat(np.arange(3), n_per_class).astype(np.int64)
    features = rng.normal(0.0, 0.5, (len(labels), 8))
    logits = rng.normal(0.0, 0.5, (len(labels), 5))
    if informative:
        features[np.arange(len(labels)), labels] += 3.0
        logits[np.arange(len(labels)), labels] += 3.0
    probs = np.exp(logits - logits.max(1, keepdims=True))
    return {"features": features, "labels": labels, "source_probs": probs / probs.sum(1, keepdims=True)}


def _score(estimator: Any, problem: dict[str, np.ndarray], who: str) -> float:
    given = {k: v.copy() for k, v in problem.items()}
    probs = given["source_probs"] if SOURCE_PROBS in estimator.requires else None
    value = estimator.score(given["features"], given["labels"], source_probs=probs, device="cpu")
    _expect(all(np.array_equal(given[k], problem[k]) for k in problem), who, "score must not change its inputs",
            "changed arrays")
    _expect(isinstance(value, (float, np.floating)) and not isinstance(value, bool), who,
            "score must return a float", type(value).__name__)
    _expect(math.isfinite(value), who, "score must be finite", value)
    return float(value)


# --- each check as its own test case -------------------------------------------------------

SOURCE_CHECKS = (check_source_fields, check_source_available, check_source_pipeline, check_source_pretrained,
                 check_source_scratch)
STRATEGY_CHECKS = (check_strategy_fields, check_strategy_params, check_strategy_stages)
ESTIMATOR_CHECKS = (check_estimator_fields, check_estimator_score, check_estimator_direction,
                    check_estimator_regression)


class _Case:
    """One check, called with the item: a source spec is resolved and a source factory called first."""

    def __init__(self, check: Callable[[Any], None]):
        self.check = check
        self.__name__ = check.__name__

    def __call__(self, item: Any) -> None:
        if isinstance(item, str):
            from .sources import resolve_source

            item = resolve_source(item)
        if not hasattr(item, "name") and callable(item):
            with tempfile.TemporaryDirectory() as tmp:
                return self.check(item(Path(tmp)))
        return self.check(item)

    def __repr__(self) -> str:
        return self.__name__


def _applies(check: Callable[[Any], None], item: Any) -> bool:
    return check is not check_estimator_regression or bool(getattr(item, "supports_regression", False))


def _case_id(item: Any) -> str:
    if isinstance(item, str):
        return item
    return getattr(item, "name", None) or getattr(item, "__name__", type(item).__name__)


def parametrize_with_checks(sources: Sequence[Any] = (), strategies: Sequence[Any] = (),
                            estimators: Sequence[Any] = ()) -> Any:
    """A ``pytest.mark.parametrize`` over every (item, check) pair, so each check is its own test case.

    Like scikit-learn's ``parametrize_with_checks``: the decorated test takes ``item`` and ``check``
    and calls ``check(item)``; a failing check fails its own case, and the others still run. Case
    ids name the item and the check, e.g. ``my-resnet-check_source_pretrained``. ``sources`` holds
    ``Source`` objects, spec strings (resolved when the case runs, so collecting stays cheap), or
    functions ``make(folder) -> Source`` called with a fresh temporary folder (to write weights in),
    named by their ``__name__``. ``check_source``, ``check_strategy`` and ``check_estimator`` run
    the same checks in one call::

        @parametrize_with_checks(sources=["my-resnet"], strategies=[MyStrategy()])
        def test_contract(item, check):
            check(item)
    """
    import pytest

    cases, ids = [], []
    for items, checks in ((sources, SOURCE_CHECKS), (strategies, STRATEGY_CHECKS), (estimators, ESTIMATOR_CHECKS)):
        for item in items:
            for check in checks:
                if _applies(check, item):
                    cases.append((item, _Case(check)))
                    ids.append(f"{_case_id(item)}-{check.__name__}")
    return pytest.mark.parametrize(("item", "check"), cases, ids=ids)
