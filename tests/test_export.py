"""Exported models are self-contained: predict works with the source's files, caches and HOME gone."""

from __future__ import annotations

import io
import json
import shutil
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers_training import make_tiny_bert, timm_spec, write_digits

import autotransfer
from autotransfer.data.offline import write_bbc_folder
from autotransfer.datasets import load

pytestmark = pytest.mark.usefixtures("one_thread")


def _bare_env(home: Path) -> dict[str, str]:
    """HOME, every cache location and the autotransfer cache pointed at an empty folder.

    torch and huggingface_hub read these when imported: run commands with it through ``cli_subprocess``."""
    home.mkdir(parents=True, exist_ok=True)
    return {"HOME": str(home), "AUTOTRANSFER_CACHE_DIR": str(home / "at-cache"), "XDG_CACHE_HOME": str(home / ".c"),
            "HF_HOME": str(home / "hf"), "HF_HUB_CACHE": str(home / "hf" / "hub"), "TORCH_HOME": str(home / "t"),
            "HF_HUB_OFFLINE": "1"}


def _move_away(paths: list[Path], graveyard: Path) -> None:
    graveyard.mkdir(parents=True, exist_ok=True)
    for p in paths:
        shutil.move(str(p), str(graveyard / p.name))
        assert not p.exists()


def _probs(csv: str, classes: list[str]) -> np.ndarray:
    df = pd.read_csv(io.StringIO(csv))
    return df[[f"p[{c}]" for c in classes]].to_numpy(np.float64)


@pytest.mark.slow  # two fresh processes
def test_timm_model_predicts_identically_without_weights_sidecar_or_home(cli_subprocess, tmp_path):
    data = write_digits(tmp_path / "digits", classes=range(3), per_class=12, size=24)
    ds = load(data)
    # the preprocessing lives only in the sidecar: size, normalisation, interpolation, model_args
    weights = tmp_path / "src" / "vit.safetensors"
    weights.parent.mkdir()
    sidecar = {"architecture": "test_vit", "input_size": 24, "mean": [0.2, 0.3, 0.4], "std": [0.5, 0.6, 0.7],
               "interpolation": "nearest", "model_args": {"img_size": 24, "patch_size": 4}}
    weights.with_suffix(".json").write_text(json.dumps(sidecar))
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("test_vit", num_classes=0, img_size=24, patch_size=4)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    r = autotransfer.train(ds, f"timm:test_vit@{weights}", "linear_probe", epochs=1, seed=0, device="cpu")
    best = r.save(tmp_path / "run" / "best")
    assert stat.S_IMODE((best / "model.safetensors").stat().st_mode) == 0o644
    export = json.loads((best / "config.json").read_text())["source_export"]
    assert export["data_config"]["input_size"] == [3, 24, 24] and export["data_config"]["mean"] == [0.2, 0.3, 0.4]
    assert export["model_args"] == {"img_size": 24, "patch_size": 4} and export["data_config"]["interpolation"] == "nearest"

    before = cli_subprocess("predict", "--model", str(best), "--data", str(data / "0"), "--out", str(tmp_path / "before.csv"))
    assert before.code == 0, before.err

    copy = tmp_path / "elsewhere" / "best"
    shutil.copytree(best, copy)
    _move_away([weights, weights.with_suffix(".json")], tmp_path / "gone")
    out = tmp_path / "after.csv"
    after = cli_subprocess("predict", "--model", str(copy), "--data", str(data / "0"), "--out", str(out),
                env=_bare_env(tmp_path / "empty-home"))
    assert after.code == 0, after.err
    assert out.read_bytes() == (tmp_path / "before.csv").read_bytes()
    assert not any((tmp_path / "empty-home").rglob("*.safetensors"))
    # and the numbers are the trained model's own, with the sidecar's preprocessing (within float32
    # rounding: this process runs one thread, the CLI more)
    items = sorted(str(p) for p in (data / "0").iterdir())
    _, probs = r.predict(items)
    assert np.allclose(_probs(out.read_text(), ds.tasks[0].classes), probs[0], atol=1e-5, rtol=0)


@pytest.mark.slow  # two fresh processes
def test_hf_model_predicts_identically_without_its_folder_or_hub_cache(cli_subprocess, tmp_path):
    data = write_bbc_folder(tmp_path / "bbc", per_class=8)
    ds = load(data)
    spec = make_tiny_bert(tmp_path / "bert", ds.items, vocab_size=400)
    r = autotransfer.train(ds, spec, "linear_probe", epochs=1, seed=0, device="cpu")
    best = r.save(tmp_path / "run" / "best")
    assert (best / "source" / "config.json").is_file() and not (best / "source" / "model.safetensors").exists()
    test_dir = data / "tech"
    before = cli_subprocess("predict", "--model", str(best), "--data", str(test_dir), "--out", str(tmp_path / "before.csv"))
    assert before.code == 0, before.err

    copy = tmp_path / "elsewhere" / "best"
    shutil.copytree(best, copy)
    _move_away([tmp_path / "bert"], tmp_path / "gone")
    out = tmp_path / "after.csv"
    after = cli_subprocess("predict", "--model", str(copy), "--data", str(test_dir), "--out", str(out),
                env=_bare_env(tmp_path / "empty-home"))
    assert after.code == 0, after.err
    assert out.read_bytes() == (tmp_path / "before.csv").read_bytes()


def test_missing_export_resolver_is_one_line(cli, tmp_path):
    data = write_digits(tmp_path / "digits", classes=range(2), per_class=8, size=16)
    r = autotransfer.train(load(data), timm_spec(tmp_path, "test_resnet", size=16), "linear_probe", epochs=1,
                           device="cpu")
    best = r.save(tmp_path / "best")
    cfg = json.loads((best / "config.json").read_text())
    cfg["source_export"]["resolver"] = "nosuch"
    (best / "config.json").write_text(json.dumps(cfg))
    res = cli("predict", "--model", str(best), "--data", str(data / "0"), "--out", str(tmp_path / "p.csv"))
    assert res.code == 2 and len(res.err_lines) == 1
    assert "'nosuch'" in res.err and "install or enable the plugin" in res.err
    assert not (tmp_path / "p.csv").exists()


def test_search_exports_a_portable_best_and_a_report_without_local_paths(cli, tmp_path):
    data = write_digits(tmp_path / "digits", classes=range(3), per_class=12, size=16)
    weights_dir = tmp_path / "weights-dir-xyz"
    weights_dir.mkdir()
    spec = timm_spec(weights_dir, "test_resnet", size=16)
    out = tmp_path / "run"
    r = cli("search", "--data", str(data), "--sources", spec, "--trials", "2", "--epochs", "1", "--top-k", "1",
            "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--no-progress")
    assert r.code == 0, r.err
    best = out / "best"
    assert stat.S_IMODE((best / "model.safetensors").stat().st_mode) == 0o644
    for trial_model in (out / "trials").rglob("model.safetensors"):
        assert stat.S_IMODE(trial_model.stat().st_mode) == 0o644
    assert json.loads((best / "config.json").read_text())["source_export"]["model_name"] == "test_resnet"
    report = (out / "report.md").read_text()
    assert "weights-dir-xyz" not in report and "timm:test_resnet@test_resnet.safetensors?size=16" in report
