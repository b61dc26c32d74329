"""No silent wrong answers (issue 12): bad files are named and skipped, bad options are one line."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers_models import tiny_image_model
from helpers_training import timm_spec, write_digits

import autotransfer

pytestmark = pytest.mark.usefixtures("one_thread")


def _png(path: Path, value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(path)


def _images(root: Path, per_class: int = 10) -> Path:
    for c in ("a", "b"):
        for i in range(per_class):
            _png(root / c / f"{i}.png", (i * 7 + 31 * ord(c)) % 255)
    return root


def _truncated_jpeg(path: Path) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def _bomb_png(path: Path, side: int = 50000) -> None:
    """A valid 1x1 PNG whose header claims side x side pixels (CRC fixed, so only the size is wrong)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", side, side)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def _one_line_error(r, *words):
    assert r.code == 2, (r.code, r.out, r.err)
    assert "Traceback" not in r.err
    errors = [line for line in r.err_lines if line.startswith("error:")]
    assert len(errors) == 1 and not [line for line in r.err_lines if not line.startswith(("error:", "warning:"))]
    for w in words:
        assert w in errors[0], (w, errors[0])


# --- data layer ---


@pytest.mark.parametrize("name,write,reason", [("a/cut.jpg", _truncated_jpeg, "truncated"),
                                               ("b/bomb.png", _bomb_png, "decompression-bomb")])
def test_a_bad_image_is_skipped_at_load_and_named(cli, tmp_path, name, write, reason):
    root = _images(tmp_path / "d")
    write(root / name)
    r = cli("inspect", "--data", str(root), "--json")
    assert r.code == 0, r.err
    info = json.loads(r.out)
    assert info["n_items"] == 20 and info["modality"] == "image"
    named = [w for w in info["warnings"] if name in w]
    assert len(named) == 1 and reason in named[0] and named[0].startswith("1 image file(s) skipped")
    assert f"warning: 1 image file(s) skipped, {reason}" in r.err


def test_every_image_truncated_is_one_line_error(cli, tmp_path):
    for c in ("a", "b"):
        (tmp_path / "d" / c).mkdir(parents=True)
        _truncated_jpeg(tmp_path / "d" / c / "x.jpg")
    _one_line_error(cli("inspect", "--data", str(tmp_path / "d")), "unreadable", "truncated")


def test_modality_follows_the_majority_and_notes_are_ignored(cli, tmp_path):
    root = _images(tmp_path / "d", per_class=25)
    for i in range(6):
        (root / ("a" if i % 2 else "b") / f"note{i}.txt").write_text(f"taken on day {i}")
    r = cli("inspect", "--data", str(root), "--json")
    assert r.code == 0, r.err
    info = json.loads(r.out)
    assert info["modality"] == "image" and info["n_items"] == 50
    assert "6 file(s) that are not image files ignored" in info["warnings"]
    # the other way round: a text folder with a stray picture stays text
    for c in ("p", "q"):
        for i in range(5):
            (tmp_path / "t" / c).mkdir(parents=True, exist_ok=True)
            (tmp_path / "t" / c / f"{i}.txt").write_text(f"{c} words {i}")
    _png(tmp_path / "t" / "p" / "logo.png", 9)
    info = json.loads(cli("inspect", "--data", str(tmp_path / "t"), "--json").out)
    assert info["modality"] == "text" and info["n_items"] == 10
    assert "1 file(s) that are not text files ignored" in info["warnings"]


# --- predict with one unreadable item ---


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return tiny_image_model(tmp_path_factory.mktemp("safety"), per_class=12, epochs=1)


def test_predict_writes_an_error_row_for_an_unreadable_item(cli, trained, tmp_path):
    best, data = trained
    new = tmp_path / "new"
    new.mkdir()
    good = sorted((data / "1").iterdir())[:4]
    for f in good:
        (new / f.name).write_bytes(f.read_bytes())
    _truncated_jpeg(new / "zz-broken.jpg")
    out = tmp_path / "preds.csv"
    r = cli("predict", "--model", str(best), "--data", str(new), "--out", str(out))
    assert r.code == 0, r.err
    assert "wrote 4 predictions" in r.out
    warned = [line for line in r.err_lines if line.startswith("warning: 1 item(s) could not be read")]
    assert len(warned) == 1 and "zz-broken.jpg" in warned[0]
    df = pd.read_csv(out, keep_default_na=False)
    assert len(df) == 5
    bad = df[df["item"] == "zz-broken.jpg"].iloc[0]
    assert "truncated" in bad["error"] and bad["prediction"] == ""
    ok = df[df["item"] != "zz-broken.jpg"]
    assert (ok["error"] == "").all() and set(ok["prediction"].astype(str)) <= {"0", "1", "2"}
    # the good rows are what the model predicts for them alone (thread counts differ: float32 rounding)
    model = autotransfer.load_model(best)
    _, probs = model.predict([str(new / f.name) for f in good])
    assert np.allclose(ok[["p[0]", "p[1]", "p[2]"]].to_numpy(np.float64), probs[0], atol=1e-5, rtol=0)


# --- option values ---


@pytest.mark.parametrize("flag,value,expected", [("--trials", "0", "at least 1"), ("--epochs", "0", "at least 1"),
                                                 ("--timeout", "0", "more than 0"), ("--patience", "0", "at least 1"),
                                                 ("--margin", "-1", "cannot be negative"),
                                                 ("--warmup-epochs", "-1", "cannot be negative")])
def test_zero_budget_options_are_one_line_errors(cli, tmp_path, flag, value, expected):
    root = _images(tmp_path / "d")
    r = cli("search", "--data", str(root), "--out", str(tmp_path / "run"), flag, value)
    _one_line_error(r, flag, expected, "default")
    assert len(r.err_lines) == 1
    assert not (tmp_path / "run").exists()


# --- weights files ---


def test_corrupt_weights_are_skipped_like_missing_ones(cli, tmp_path):
    data = write_digits(tmp_path / "digits", classes=range(3), per_class=10, size=16)
    good = timm_spec(tmp_path, "test_resnet", size=16)
    bad_st = tmp_path / "corrupt.safetensors"
    bad_st.write_bytes(Path(good.split("@")[1].split("?")[0]).read_bytes()[:-100])
    bad_pt = tmp_path / "corrupt.pth"
    bad_pt.write_bytes(b"PK\x03\x04 not a zip")
    specs = f"{good},timm:test_resnet@{bad_st}?size=16,timm:test_resnet@{bad_pt}?size=16"
    r = cli("rank", "--data", str(data), "--sources", specs, "--out", str(tmp_path / "run"),
            "--cache-dir", str(tmp_path / "cache"), "--estimators", "logme", "--device", "cpu")
    assert r.code == 0, r.err
    warned = [line for line in r.err_lines if "skipped 2 source(s)" in line]
    assert len(warned) == 1 and "corrupt.safetensors" in warned[0] and "corrupt.pth" in warned[0]
    trans = pd.read_csv(tmp_path / "run" / "leaderboards" / "transferability.csv")
    assert trans["source"].tolist() == [good]
    # nothing usable at all: the one-line error, as for missing weights
    only_bad = f"timm:test_resnet@{bad_st}?size=16"
    _one_line_error(cli("rank", "--data", str(data), "--sources", only_bad, "--out", str(tmp_path / "run2"),
                        "--cache-dir", str(tmp_path / "cache")), "no usable source")
