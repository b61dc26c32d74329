"""Feature extraction: shapes, equality with a plain forward, the on-disk cache, devices."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from helpers_sources import save_timm, save_tiny_bert

from autotransfer.errors import AutotransferError
from autotransfer.features import Features, cache_key, extract, resolve_device
from autotransfer.sources import resolve_source

ARCH = "test_efficientnet"  # the fastest tiny timm model on CPU


def run(source, dataset, split, **kwargs) -> Features:
    """``extract`` on CPU, quietly, without loader processes (they only add start-up time on tiny splits)."""
    return extract(source, dataset, split, **{"device": "cpu", "progress": False, "num_workers": 0, **kwargs})


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Real sklearn digits of two classes, as an image folder loaded through the data layer."""
    from autotransfer.data.offline import write_digits_folder
    from autotransfer.datasets import load

    return load(write_digits_folder(tmp_path_factory.mktemp("digits") / "digits", classes=(0, 1)))


@pytest.fixture(scope="module")
def image_source(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / f"{ARCH}.safetensors"
    save_timm(ARCH, path, num_classes=4)
    return resolve_source(f"timm:{ARCH}@{path}?size=16")


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    from autotransfer.data.offline import write_bbc_folder
    from autotransfer.datasets import load

    return load(write_bbc_folder(tmp_path_factory.mktemp("bbc") / "bbc", per_class=8))


def _counting(monkeypatch, source) -> list[int]:
    """Count builds and forward passes of ``source``."""
    calls = {"build": 0, "forward": 0}
    build = source.build

    def counted_build(pretrained=True):
        calls["build"] += 1
        model = build(pretrained)
        forward = model.forward

        def counted_forward(*a, **k):
            calls["forward"] += 1
            return forward(*a, **k)

        model.forward = counted_forward
        return model

    monkeypatch.setattr(source, "build", counted_build)
    return calls


def test_extract_matches_a_plain_forward_and_caches(digits, image_source, tmp_path, monkeypatch, capsys):
    calls = _counting(monkeypatch, image_source)
    first = run(image_source, digits, "val", cache_dir=tmp_path, batch_size=32)
    assert isinstance(first, Features) and not first.cached
    n = len(digits.splits["val"])
    assert first.features.shape == (n, image_source.feature_dim) and first.features.dtype == np.float32
    assert first.labels.dtype == np.int64 and np.array_equal(first.labels, digits.split_labels("val"))
    assert first.source_probs.shape == (n, 4) and first.source_probs.dtype == np.float32
    np.testing.assert_allclose(first.source_probs.sum(1), 1.0, rtol=1e-5)
    assert calls["build"] == 1 and calls["forward"] == -(-n // 32)
    assert capsys.readouterr().err == ""  # progress=False: silent

    # the same numbers as running the backbone by hand (rebuilt from its spec) on the first items
    model = resolve_source(image_source.spec).build().eval()
    items = digits.split_items("val")[:5]
    with torch.inference_mode():
        ref = model(image_source.collate([image_source.load_item(i) for i in items]))
    np.testing.assert_allclose(first.features[:5], ref.numpy(), rtol=1e-4, atol=1e-5)

    # second run: from the cache, no model built, no forward pass, identical arrays
    second = run(image_source, digits, "val", cache_dir=tmp_path)
    assert second.cached and calls["build"] == 1 and calls["forward"] == -(-n // 32)
    assert np.array_equal(second.features, first.features)
    assert np.array_equal(second.source_probs, first.source_probs)
    assert second.cache_path == first.cache_path

    # another split, or a dataset with another fingerprint: recomputed
    assert not run(image_source, digits, "test", cache_dir=tmp_path).cached
    other = dataclasses.replace(digits, fingerprint="0" * 64)
    assert cache_key(image_source, other, "val") != cache_key(image_source, digits, "val")
    assert not run(image_source, other, "val", cache_dir=tmp_path).cached
    assert calls["build"] == 3


@pytest.mark.parametrize("damage", ["truncate", "garbage", "tampered"])
def test_corrupt_cache_file_is_recomputed_with_one_warning(damage, digits, image_source, tmp_path, capsys):
    first = run(image_source, digits, "val", cache_dir=tmp_path)
    path = first.cache_path
    raw = open(path, "rb").read()
    if damage == "truncate":
        open(path, "wb").write(raw[: len(raw) // 2])
    elif damage == "garbage":
        open(path, "wb").write(b"not an npz file")
    else:  # a well-formed file whose numbers changed: caught by the checksum
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["features"] = arrays["features"] + 1.0
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    capsys.readouterr()
    again = run(image_source, digits, "val", cache_dir=tmp_path)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("warning: feature cache file") and "recomputing" in err[0]
    assert not again.cached and np.array_equal(again.features, first.features)
    third = run(image_source, digits, "val", cache_dir=tmp_path)
    assert third.cached  # the recomputed file is good again


def test_cache_dir_from_environment_and_atomic_files(digits, image_source, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOTRANSFER_CACHE_DIR", str(tmp_path / "root"))
    got = run(image_source, digits, "val")
    folder = tmp_path / "root" / "features"
    assert got.cache_path and got.cache_path.startswith(str(folder))
    assert [p.suffix for p in folder.iterdir()] == [".npz"]  # no temp files left behind
    with np.load(got.cache_path) as z:
        meta = json.loads(bytes(z["meta"]).decode())
    assert meta["key"] == cache_key(image_source, digits, "val")
    off = run(image_source, digits, "val", cache_dir=False)
    assert not off.cached and off.cache_path is None


def test_worker_processes_give_the_same_features(digits, image_source, tmp_path):
    one = extract(image_source, digits, "val", cache_dir=False, num_workers=0, progress=False)
    two = extract(image_source, digits, "val", cache_dir=False, num_workers=2, batch_size=16, progress=False)
    np.testing.assert_allclose(one.features, two.features, rtol=1e-5, atol=1e-6)


def test_text_features_keep_split_order(texts, tmp_path):
    """Texts run longest-first for padding; the result must come back in split order."""
    src = resolve_source(f"hf:{save_tiny_bert(tmp_path / 'bert')}")
    got = run(src, texts, "train", cache_dir=tmp_path / "cache", batch_size=4)
    assert got.source_probs is None and got.features.shape == (len(texts.splits["train"]), 32)
    model = src.build().eval()
    items = texts.split_items("train")
    with torch.inference_mode():
        ref = torch.cat([model(src.collate([t])) for t in items[:6]])
    np.testing.assert_allclose(got.features[:6], ref.numpy(), rtol=1e-4, atol=1e-5)
    assert np.array_equal(got.labels, texts.split_labels("train"))
    assert run(src, texts, "train", cache_dir=tmp_path / "cache").cached


def test_extract_rejects_wrong_modality_and_split(texts, image_source):
    with pytest.raises(AutotransferError, match="takes image input but dataset 'bbc' is text"):
        extract(image_source, texts, "train", cache_dir=False)
    with pytest.raises(AutotransferError, match="split 'dev'"):
        extract(image_source, texts, "dev", cache_dir=False)


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(AutotransferError, match="device 'cuda' was asked for but CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(AutotransferError, match="'cuda:1'"):
        resolve_device("cuda:1")
    with pytest.raises(AutotransferError, match="device 'tpu' is not one of auto, cpu, cuda"):
        resolve_device("tpu")
