"""The plugin contract as checks, for a plugin author's own tests (like scikit-learn's ``check_estimator``)::
    from autotransfer.testing import check_estimator, check_source, check_strategy

    def test_my_plugin():
        check_source(MySource())        # names, modality, weights, both builds, input pipeline
        check_strategy(MyStrategy())    # fields, search space, resolve_params, stages, param_groups
        check_estimator(my_estimator)   # fields, finite deterministic float, direction

Each runs the item on tiny inputs and raises ``AssertionError`` that names the item, what the
contract expects and what it got. The built-in plugins are tested with these same checks.
"""

from __future__ import annotations

import copy
import math
import tempfile
from collections.abc import Sequence
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
    """Check ``source`` against the ``autotransfer.sources.Source`` contract.

    Its pretrained weights must be available. ``items``: two or more dataset items its
    ``load_item`` takes (image paths, or texts); by default two small PNG files or two sentences.
    Both builds are checked: the ``Backbone`` members, layer groups (ordered, disjoint, covering
    every parameter), ``(batch, feature_dim)`` finite deterministic features, the source head;
    the scratch build has the pretrained one's architecture and other weights.
    """
    who = _who("source", source)
    _check_source_fields(source, who)
    ok, why = source.available()
    _expect(isinstance(ok, bool) and isinstance(why, str), who, "available() must return (bool, str)", (ok, why))
    _expect(ok, who, "its pretrained weights must be available to check it", why)
    identity = source.identity()
    _expect(isinstance(identity, str) and identity and identity == source.identity(), who,
            "identity() must be a non-empty str, the same on every call", identity)
    with tempfile.TemporaryDirectory() as tmp:
        items = list(items) if items is not None else _tiny_items(source.modality, Path(tmp))
        batch = _check_pipeline(source, items, who)
        pretrained = _check_backbone(source, True, batch, len(items), who)
        scratch = _check_backbone(source, False, batch, len(items), who)
    _check_scratch(pretrained, scratch, who)


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
    """Check ``strategy`` against the ``autotransfer.strategies.Strategy`` contract.

    ``backbone``: a ``Backbone`` taking ``(B, 8)`` float input that the strategy applies to; by
    default a tiny one with an attention block (so LoRA applies) in 3 layer groups. Checked: the
    fields, the search space and ``resolve_params`` (defaults, None, unknown and out-of-range
    values), and for every stage that ``param_groups`` trains exactly the parameters it returns,
    heads included, at positive learning rates.
    """

    who = _who("strategy", strategy)
    _check_strategy_fields(strategy, who)
    backbone = backbone if backbone is not None else tiny_backbone()
    source = SimpleNamespace(name="check", modality="image", architecture="tiny")
    params = _check_resolve_params(strategy, SourceInfo.from_backbone(source, backbone), who)
    _check_stages(strategy, backbone, params, who)


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
    """Check ``estimator`` against the ``autotransfer.estimators.Estimator`` contract.

    On a tiny 3-class problem (60 samples, 8-d float64 features, 5-class source probabilities):
    ``score`` returns a finite float, the same on a second call, without changing its inputs; and
    inputs that separate the classes score better than noise in the direction ``higher_is_better``
    says. An estimator with ``supports_regression`` also gets a 2-column float target.
    """
    who = _who("estimator", estimator)
    _check_estimator_fields(estimator, who)
    good, noise = _tiny_problem(informative=True), _tiny_problem(informative=False)
    first = _score(estimator, good, who)
    _expect(_score(estimator, good, who) == first, who, "score must be deterministic", "two different scores")
    other = _score(estimator, noise, who)
    better = first > other if estimator.higher_is_better else first < other
    word = "higher" if estimator.higher_is_better else "lower (higher_is_better=False)"
    _expect(better, who, f"inputs that separate the classes must score {word} than noise",
            {"separating": first, "noise": other})
    if estimator.supports_regression:
        target = np.c_[good["labels"], -good["labels"]].astype(np.float64)
        _score(estimator, {**good, "labels": target}, who)


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
