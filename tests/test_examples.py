"""The example plugins in plugins/examples, installed the way a user would (--plugins-dir) and run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from autotransfer.testing import SOURCE_CHECKS

EXAMPLES = Path(__file__).resolve().parents[1] / "plugins" / "examples"


@pytest.fixture()
def local_zoo(zoo, tmp_path):
    folder = tmp_path / "my_zoo"
    folder.mkdir()
    w = Path(zoo["digits-test_resnet"].spec.split("@", 1)[1])
    shutil.copy(w, folder / "my-digits.safetensors")
    shutil.copy(w.with_suffix(".json"), folder / "my-digits.json")
    return folder


@pytest.mark.slow  # the digits zoo
def test_example_plugins_register_through_plugins_dir(cli, local_zoo):
    env = {"AUTOTRANSFER_LOCAL_ZOO": str(local_zoo)}
    r = cli("--plugins-dir", str(EXAMPLES), "plugins", "--json", env=env)
    assert r.code == 0, r.err
    rows = {p["name"]: p for p in json.loads(r.out)}
    assert rows["bitfit"]["registered"] == {"strategies": ["bitfit"]}
    assert rows["local_zoo"]["registered"] == {"sources": ["my-digits"]}
    r = cli("--plugins-dir", str(EXAMPLES), "sources", "--json", env=env)
    src = {s["name"]: s for s in json.loads(r.out)}
    assert src["my-digits"]["modality"] == "image" and src["my-digits"]["feature_dim"] == 96


@pytest.mark.slow  # the digits zoo
def test_bitfit_trains_only_biases_and_learns(local_zoo, target_dir, monkeypatch, tmp_path):
    import numpy as np

    from autotransfer._train import train
    from autotransfer.plugins import configure

    monkeypatch.setenv("AUTOTRANSFER_LOCAL_ZOO", str(local_zoo))
    configure(plugins_dirs=[str(EXAMPLES)])
    try:
        res = train(target_dir, "my-digits", "bitfit", lr=3e-3, epochs=4, cache_dir=str(tmp_path / "c"))
        before = {n: p.detach().clone() for n, p in
                  __import__("autotransfer.sources", fromlist=["x"]).resolve_source("my-digits").build().named_parameters()}
    finally:
        configure()
    after = dict(res.model.backbone.named_parameters())
    biases = [n for n in after if n.endswith(".bias")]
    n_bias = sum(after[n].numel() for n in biases)
    n_head = sum(p.numel() for p in res.model.heads.parameters())
    assert res.trainable_params == n_bias + n_head
    changed = {n for n, p in after.items() if not np.array_equal(p.detach().numpy(), before[n].numpy())}
    assert changed and changed <= set(biases)  # biases moved, nothing else did
    assert res.val_score > 0.4  # 5 classes: chance is 0.2


@pytest.mark.parametrize("check", SOURCE_CHECKS, ids=lambda c: c.__name__)
def test_my_zoo_names_resolve_and_pass_the_source_contract(check, tmp_path, monkeypatch):
    from helpers_sources import save_timm

    from autotransfer.plugins import configure
    from autotransfer.sources import resolve_source

    save_timm("test_resnet", tmp_path / "a.safetensors", seed=0)
    save_timm("test_resnet", tmp_path / "b.safetensors", seed=1)
    monkeypatch.setenv("AUTOTRANSFER_MY_ZOO", str(tmp_path))
    configure(plugins_dirs=[str(EXAMPLES)])
    try:
        a, b = resolve_source("my-resnet-a"), resolve_source("my-resnet-b")
        for src, weights in ((a, "a.safetensors"), (b, "b.safetensors")):
            assert src.spec == f"timm:test_resnet@{tmp_path / weights}?size=16"  # rebuilds it without the plugin
            assert src.provider.plugin == "my_zoo" and src.data_config["input_size"] == (3, 16, 16)
            assert resolve_source(src.name) is src  # one object per name, like any registered source
            check(src)
        assert a.name == "my-resnet-a" and b.name == "my-resnet-b" and a.identity() != b.identity()
        assert a.describe()["description"] == "test_resnet weights a, at 16 px"
    finally:
        configure()
