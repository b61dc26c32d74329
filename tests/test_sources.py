"""Source plugins (timm, transformers), spec resolution, offline behaviour, layer groups."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers_sources import Payload, block_network, check_groups, save_timm, save_tiny_bert

import autotransfer.sources as sources_mod
from autotransfer.errors import SourceError
from autotransfer.sources import SourceOptions, default_source_specs, resolve_source, resolve_sources

TIMM_TINY = ("test_resnet", "test_vit", "test_efficientnet")


@pytest.fixture(autouse=True)
def _no_hub_env(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert")


# --- timm ---------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", TIMM_TINY)
def test_timm_local_safetensors_load_exactly(arch, tmp_path):
    sd = save_timm(arch, tmp_path / f"{arch}.safetensors", num_classes=7)
    src = resolve_source(f"timm:{arch}@{tmp_path / f'{arch}.safetensors'}")
    assert src.modality == "image" and src.available()[0]
    model = src.build(pretrained=True)
    got = model.model.state_dict()
    head_keys = {k for k in sd if k not in got}
    assert head_keys and all(k.split(".")[-1] in ("weight", "bias") for k in head_keys)  # only the classifier
    for k, v in got.items():
        assert torch.equal(v, sd[k]), k
    # the saved classifier became the source head: 7 source classes, exactly the saved weights
    assert model.source_head is not None
    assert {id(p) for p in model.source_head.parameters()}.isdisjoint(id(p) for p in model.parameters())
    head_w = [sd[k] for k in sorted(head_keys) if k.endswith("weight")][0]
    assert torch.equal(model.source_head.weight, head_w)
    x = torch.stack([src.load_item(_png(tmp_path), train=False)] * 2)
    with torch.inference_mode():
        feats = model.eval()(x)
        assert feats.shape == (2, src.feature_dim)
        assert model.source_head(feats).shape == (2, 7)
    scratch = src.build(pretrained=False)
    assert scratch.source_head is None
    assert not all(torch.equal(v, got[k]) for k, v in scratch.model.state_dict().items() if v.is_floating_point()
                   and v.numel() > 1)
    check_groups(model)
    check_groups(scratch)


def test_timm_pth_loads_with_weights_only(tmp_path):
    sd = save_timm("test_resnet", tmp_path / "w.pth", num_classes=0)
    model = resolve_source(f"timm:test_resnet@{tmp_path / 'w.pth'}").build()
    assert model.source_head is None  # saved without a classifier
    assert all(torch.equal(v, sd[k]) for k, v in model.model.state_dict().items())

    torch.save({"conv1.weight": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(SourceError, match="cannot read weights file"):
        resolve_source(f"timm:test_resnet@{tmp_path / 'evil.pth'}").build()


def test_timm_checkpoint_wrapper_and_ddp_prefix(tmp_path):
    sd = save_timm("test_resnet", tmp_path / "plain.pth", num_classes=3)
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, tmp_path / "ckpt.pth")
    model = resolve_source(f"timm:test_resnet@{tmp_path / 'ckpt.pth'}").build()
    assert torch.equal(model.model.conv1[0].weight, sd["conv1.0.weight"])


def test_timm_wrong_architecture_names_the_mismatch(tmp_path):
    save_timm("test_resnet", tmp_path / "w.safetensors")
    src = resolve_source(f"timm:test_efficientnet@{tmp_path / 'w.safetensors'}")
    with pytest.raises(SourceError, match="does not fit timm model 'test_efficientnet'.*missing"):
        src.build()
    missing = resolve_source(f"timm:test_resnet@{tmp_path / 'nope.safetensors'}")
    ok, why = missing.available()
    assert not ok and "does not exist" in why


def test_timm_size_option_and_sidecar(tmp_path):
    png = _png(tmp_path)  # an 8x8 grayscale digit
    save_timm("test_resnet", tmp_path / "r.safetensors")
    src = resolve_source(f"timm:test_resnet@{tmp_path / 'r.safetensors'}?size=16")
    assert src.data_config["input_size"] == (3, 16, 16) and src.data_config["crop_pct"] == 1.0
    assert src.load_item(png).shape == (3, 16, 16)
    assert src.load_item(png, train=True).shape == (3, 16, 16)
    assert "size=16" in src.spec and str(tmp_path / "r.safetensors") in src.spec
    assert resolve_source(f"timm:test_resnet@{tmp_path / 'r.safetensors'}").data_config["input_size"] == (3, 160, 160)

    # a ViT trained at 16 px, described by a JSON sidecar: built with img_size=16, weights fit
    sd = save_timm("test_vit", tmp_path / "v.safetensors", img_size=16)
    (tmp_path / "v.json").write_text(json.dumps({"architecture": "test_vit", "input_size": 16,
                                                 "mean": [0.5] * 3, "std": [0.5] * 3}))
    vit = resolve_source(f"timm:test_vit@{tmp_path / 'v.safetensors'}")
    assert vit.data_config["input_size"] == (3, 16, 16)
    model = vit.build()
    assert torch.equal(model.model.pos_embed, sd["pos_embed"])
    with torch.inference_mode():
        assert model.eval()(vit.load_item(png)[None]).shape == (1, vit.feature_dim)
    # options in SourceOptions.extra work like the query
    via_extra = resolve_source(f"timm:test_resnet@{tmp_path / 'r.safetensors'}",
                               SourceOptions(extra={"input_size": 24}))
    assert via_extra.data_config["input_size"] == (3, 24, 24)
    # identity follows the weights' content; the input pipeline is in transform_key
    before = src.identity()
    assert before == via_extra.identity()
    assert src.transform_key() != via_extra.transform_key()
    save_timm("test_resnet", tmp_path / "r.safetensors", seed=1)
    assert src.identity() != before


def test_timm_bad_specs_name_close_matches(tmp_path):
    with pytest.raises(SourceError, match="no model 'not_a_model'; close matches: "):
        resolve_source("timm:not_a_model")
    with pytest.raises(SourceError, match="resnet18"):
        resolve_source("timm:resnet_18")
    with pytest.raises(SourceError, match="no such pretrained tag; known: resnet18.a1_in1k"):
        resolve_source("timm:resnet18.bogus")
    with pytest.raises(SourceError, match="unknown option.*sizes"):
        resolve_source("timm:resnet18?sizes=32")
    with pytest.raises(SourceError, match="input size 'abc'"):
        resolve_source("timm:resnet18?size=abc")
    (tmp_path / "w.json").write_text(json.dumps({"architecture": "resnet50"}))
    with pytest.raises(SourceError, match="for 'resnet50', not 'resnet18'"):
        resolve_source(f"timm:resnet18@{tmp_path / 'w.safetensors'}")


def test_timm_hub_only_model_offline_is_unavailable_without_network(tmp_path, monkeypatch, capsys):
    attempts = block_network(monkeypatch)
    opts = SourceOptions(offline=True, cache_dir=str(tmp_path / "empty-hub"))
    src = resolve_source("timm:resnet18", opts)
    ok, why = src.available()
    assert not ok
    assert "timm:resnet18@/path/to/weights.safetensors" in why and "offline" in why
    with pytest.raises(SourceError, match="timm:resnet18@/path/to/weights.safetensors"):
        src.build(pretrained=True)
    # the same through the environment variable, and the zoo is skipped with ONE warning line
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    save_timm("test_resnet", tmp_path / "local.safetensors")
    capsys.readouterr()
    usable = resolve_sources(["timm:resnet18", "timm:resnet50", f"timm:test_resnet@{tmp_path / 'local.safetensors'}"],
                             SourceOptions(cache_dir=str(tmp_path / "empty-hub")), modality="image")
    assert [s.architecture for s in usable] == ["test_resnet"]
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("warning: skipped 2 source(s)")
    assert "timm:resnet18" in err[0] and "timm:resnet50" in err[0] and "@/path/to/weights.safetensors" in err[0]
    with pytest.raises(SourceError, match="no usable source among timm:resnet18"):
        resolve_sources(["timm:resnet18"], SourceOptions(cache_dir=str(tmp_path / "empty-hub")))
    assert attempts == []


def test_timm_hub_weights_from_local_cache_offline(tmp_path, monkeypatch):
    """Weights already in the Hugging Face cache load offline, through timm's own loader."""
    attempts = block_network(monkeypatch)
    commit = "0" * 40
    repo = tmp_path / "hub" / "models--timm--test_resnet.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    sd = save_timm("test_resnet", repo / "snapshots" / commit / "model.safetensors", num_classes=1000, seed=3)
    src = resolve_source("timm:test_resnet", SourceOptions(offline=True, cache_dir=str(tmp_path / "hub")))
    assert src.available()[0]
    model = src.build()
    assert torch.equal(model.model.conv1[0].weight, sd["conv1.0.weight"])
    assert model.source_head.out_features == 1000
    assert attempts == []


def test_backbone_is_picklable_and_head_follows_dtype(tmp_path):
    save_timm("test_resnet", tmp_path / "w.safetensors")
    model = resolve_source(f"timm:test_resnet@{tmp_path / 'w.safetensors'}").build()
    clone = pickle.loads(pickle.dumps(model))
    assert type(clone) is type(model) and clone.layer_groups() == model.layer_groups()
    assert torch.equal(clone.source_head.weight, model.source_head.weight)
    model.double()
    assert model.source_head.weight.dtype == torch.float64
    assert "source_head" not in "".join(model.state_dict())


# --- transformers ------------------------------------------------------------------------


def test_hf_local_folder(tiny_bert, monkeypatch):
    attempts = block_network(monkeypatch)
    src = resolve_source(f"hf:{tiny_bert}")
    assert src.modality == "text" and src.available()[0]
    assert src.feature_dim == 32 and src.pooling == "mean"  # from config.json, nothing loaded
    model = src.build().eval()
    texts = ["the cat sat on the mat", "news", "a dog and a cat in the film market sport team"]
    batch = src.collate([src.load_item(t) for t in texts])
    assert batch["input_ids"].shape[0] == 3 and batch["attention_mask"][1].sum() < batch["attention_mask"][2].sum()
    with torch.inference_mode():
        mean = model(batch)
    assert mean.shape == (3, 32)
    groups = check_groups(model)
    assert len(groups) == 3  # embeddings, 2 layers (the pooler rides with the last one)
    assert all("embeddings" in n for n in groups[0])
    assert all(".layer.0." in n for n in groups[1])
    assert all(".layer.1." in n or "pooler" in n for n in groups[2]) and any("pooler" in n for n in groups[2])
    # padding does not change mean pooling: the short text alone gives the same vector
    with torch.inference_mode():
        alone = model(src.collate(["news"]))
    torch.testing.assert_close(alone[0], mean[1], rtol=1e-4, atol=1e-5)
    cls = resolve_source(f"hf:{tiny_bert}?pooling=cls")
    with torch.inference_mode():
        first = cls.build().eval()(batch)
    assert cls.pooling == "cls" and not torch.allclose(first, mean)
    assert cls.transform_key() != src.transform_key()
    scratch = src.build(pretrained=False)
    words = "embeddings.word_embeddings.weight"
    assert not torch.equal(scratch.model.get_parameter(words), model.model.get_parameter(words))
    check_groups(scratch)
    assert attempts == []


def test_hf_identity_follows_weights(tmp_path):
    a = save_tiny_bert(tmp_path / "a", seed=0)
    key = resolve_source(f"hf:{a}").identity()
    assert resolve_source(f"hf:{a}").identity() == key
    save_tiny_bert(tmp_path / "a", seed=1)
    assert resolve_source(f"hf:{a}").identity() != key


def test_hf_offline_hub_id_not_cached(tmp_path, monkeypatch):
    attempts = block_network(monkeypatch)
    src = resolve_source("hf:bert-base-uncased", SourceOptions(offline=True, cache_dir=str(tmp_path)))
    ok, why = src.available()
    assert not ok and "offline" in why and "hf:DIR" in why
    with pytest.raises(SourceError, match="bert-base-uncased"):
        src.build()
    with pytest.raises(SourceError, match="neither a hub model id"):
        resolve_source("hf:not a model!")
    with pytest.raises(SourceError, match="does not exist"):
        resolve_source(f"hf:{tmp_path / 'missing'}/")
    with pytest.raises(SourceError, match="pooling 'max'"):
        resolve_source(f"hf:{tmp_path}?pooling=max")
    assert attempts == []


def test_minilm_paraphrases_are_closer(monkeypatch):
    attempts = block_network(monkeypatch)
    src = resolve_source("minilm-l6")
    assert src.feature_dim == 384 and src.available()[0]
    model = src.build().eval()
    texts = ["A man is playing a guitar.", "Someone is playing the guitar.",
             "The central bank raised interest rates again."]
    with torch.inference_mode():
        e = torch.nn.functional.normalize(model(src.collate(texts)), dim=-1)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.3
    groups = check_groups(model)
    assert len(groups) == 1 + 6
    assert attempts == []


# --- registry and listing -------------------------------------------------------------


def test_resolve_source_unknown_names_close_matches():
    with pytest.raises(SourceError, match="did you mean minilm-l6"):
        resolve_source("minilm-l7")
    with pytest.raises(SourceError, match="did you mean timm:resnet18"):
        resolve_source("timn:resnet18")
    with pytest.raises(SourceError, match="did you mean timm:resnet18"):
        resolve_source("resnet18")


def test_default_zoos(monkeypatch):
    monkeypatch.setattr(sources_mod, "hub_reachable", lambda timeout=3.0: True)
    image = default_source_specs("image")
    assert 6 <= len(image) <= 10 and all(s.startswith("timm:") for s in image)
    assert "timm:resnet18" in image and "timm:vit_small_patch16_224" in image
    text = default_source_specs("text")
    assert "minilm-l6" in text and "hf:bert-base-uncased" in text
    assert "hf:sentence-transformers/all-MiniLM-L6-v2" not in text  # the bundled copy replaces it


def test_resolve_sources_skips_other_modality(tiny_bert, tmp_path, capsys):
    save_timm("test_resnet", tmp_path / "w.safetensors")
    capsys.readouterr()
    got = resolve_sources([f"hf:{tiny_bert}", f"timm:test_resnet@{tmp_path / 'w.safetensors'}"], modality="text")
    assert [s.modality for s in got] == ["text"]
    assert "do not take text input" in capsys.readouterr().err


def test_plugins_register_without_importing_torch():
    code = ("import sys\nfrom autotransfer.plugins import get_plugin_manager\n"
            "pm = get_plugin_manager(); pm.registry('sources')\n"
            "assert {'timm', 'hf'} <= set(pm.source_resolvers().names()), pm.source_resolvers()\n"
            "assert 'minilm-l6' in pm.registry('sources')\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow  # a fresh process importing every source plugin
def test_sources_listing(cli_subprocess):
    # HF_HUB_OFFLINE is read when huggingface_hub is imported, so only a fresh process honours it
    res = cli_subprocess("sources", "--json", env={"HF_HUB_OFFLINE": "1"})
    assert res.code == 0, res.err
    rows = {r["name"]: r for r in json.loads(res.out)}
    assert rows["minilm-l6"]["feature_dim"] == 384 and rows["minilm-l6"]["offline_weights"] is True
    assert rows["timm:<spec>"]["modality"] == "image" and rows["timm:<spec>"]["default_zoo"] >= 6
    assert rows["hf:<spec>"]["modality"] == "text" and rows["hf:<spec>"]["default_zoo"] == 5


def _png(folder):
    """One real 8x8 grayscale digit as a PNG."""
    from PIL import Image

    from autotransfer.data.offline import digits_arrays

    path = folder / "digit.png"
    if not path.exists():
        Image.fromarray(digits_arrays()[0][0]).save(path)
    return path


@pytest.mark.usefixtures("one_thread")
def test_the_digits_zoo_pretrains_once_and_loads_through_the_timm_path(tmp_path):
    from autotransfer.zoo import build_zoo, synthetic_bars

    [entry] = build_zoo(tmp_path, archs=("test_resnet",), kinds=("helpful",), epochs=1)
    weights = tmp_path / "digits-test_resnet.safetensors"
    assert entry.name == "digits-test_resnet" and entry.kind == "helpful" and 0.0 <= entry.source_accuracy <= 1.0
    assert entry.spec == f"timm:test_resnet@{weights}" and weights.with_suffix(".json").is_file()
    stamp = weights.stat().st_mtime_ns
    assert build_zoo(tmp_path, archs=("test_resnet",), kinds=("helpful",), epochs=1) == [entry]
    assert weights.stat().st_mtime_ns == stamp  # reused, not trained again
    src = resolve_source(entry.spec)
    assert src.available()[0] and src.feature_dim > 0
    images, labels = synthetic_bars(40, seed=7)
    assert images.shape == (40, 8, 8) and images.dtype == np.uint8 and set(labels.tolist()) <= {0, 1, 2, 3}

