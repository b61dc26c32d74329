"""The example plugins in plugins/examples, installed the way a user would (--plugins-dir) and run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "plugins" / "examples"


@pytest.fixture()
def local_zoo(zoo, tmp_path):
    folder = tmp_path / "my_zoo"
    folder.mkdir()
    w = Path(zoo["digits-test_resnet"].spec.split("@", 1)[1])
    shutil.copy(w, folder / "my-digits.safetensors")
    shutil.copy(w.with_suffix(".json"), folder / "my-digits.json")
    return folder


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
