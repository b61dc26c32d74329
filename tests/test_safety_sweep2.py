"""No silent wrong answers, second sweep (issue 26): formula-like cells, numbers that are not numbers,
outputs that would overwrite the input, images not read as they look, diverged models, label columns."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from conftest import CliResult
from helpers_models import tiny_image_model
from helpers_training import make_tiny_bert, timm_spec
from test_safety_runs import _one_line_error as one_line_error

import autotransfer
from autotransfer.csvsafe import TRIGGERS, read_csv, write_csv
from autotransfer.data.offline import digits_arrays, write_bbc_folder, write_images
from autotransfer.datasets import load

pytestmark = pytest.mark.usefixtures("one_thread")

# text a spreadsheet would run, text that only looks like it, and text with quotes already in front
HOSTILE = ["=1+2", "+SUM(1+1)", "-2+3", "@SUM(A1)", "\t=tab", "\r=cr", "'=quoted", "''+twice", "-1", "plain"]


def run(*args: str) -> CliResult:
    """``autotransfer ARGS`` in this process (click's runner); an escaped exception shows as a traceback."""
    from click.testing import CliRunner

    from autotransfer.cli import cli

    old = sys.argv
    sys.argv = ["autotransfer", *args]  # the lazy group reads argv to tell a help listing from a run
    try:
        r = CliRunner().invoke(cli, list(args))
    finally:
        sys.argv = old
    err = r.stderr
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        err += "Traceback\n" + "".join(traceback.format_exception(r.exception))
    return CliResult(r.exit_code, r.stdout, err)


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file at or under ``path``, by its bytes."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): p.read_bytes() for p in files}


def digit_folder(root: Path, classes: list[str], per_class: int = 6, size: int = 16) -> Path:
    """``per_class`` sklearn digits per class (digit k for the k-th class name) under ``root/<name>/``."""
    images, y = digits_arrays()
    idx = np.concatenate([np.flatnonzero(y == k)[:per_class] for k in range(len(classes))])
    return write_images(root, images[idx], [classes[y[i]] for i in idx], names=[f"{i:04d}" for i in idx], size=size)


def assert_spreadsheet_safe(path: Path) -> list[list[str]]:
    """No cell of the CSV at ``path`` (header included) would run as a formula; returns its cells."""
    with open(path, newline="") as f:
        cells = list(csv.reader(f))
    for row in cells:
        for cell in row:
            if cell.startswith(TRIGGERS):
                float(cell)  # only a plain number may begin with + or -
    return cells


# --- 11. formula-like cells ---


def test_write_csv_escapes_text_keeps_numbers_and_reads_back(tmp_path):
    df = pd.DataFrame({"name": HOSTILE, "score": [-0.15, 1.0, -2.0, 0.5, 3.0, -1e-9, 7.0, 8.0, -1.0, 0.0],
                       "n": range(-5, 5), **{h: HOSTILE[::-1] for h in HOSTILE[:3]}})
    write_csv(df, tmp_path / "x.csv")
    cells = assert_spreadsheet_safe(tmp_path / "x.csv")
    assert cells[0][:4] == ["name", "score", "n", "'=1+2"]
    assert [r[0] for r in cells[1:]][:4] == ["'=1+2", "'+SUM(1+1)", "'-2+3", "'@SUM(A1)"]
    assert [r[1] for r in cells[1:]][:3] == ["-0.15", "1.0", "-2.0"]  # numbers stay numbers
    assert cells[9][0] == "-1" and cells[7][0] == "''=quoted"
    back = read_csv(tmp_path / "x.csv")
    assert list(back.columns) == list(df.columns)
    assert back["name"].tolist() == HOSTILE and back["=1+2"].tolist() == HOSTILE[::-1]
    assert back["score"].tolist() == df["score"].tolist() and back["n"].tolist() == list(range(-5, 5))


def _hostile_study() -> tuple[optuna.Study, dict]:
    """An in-memory study whose sources, reasons and data name are all formula-like."""
    from optuna.trial import TrialState, create_trial

    study = optuna.create_study(direction="maximize")
    study.set_user_attr("estimators", ["logme"])
    study.set_user_attr("scores", {h: {"logme": -0.15} for h in HOSTILE})
    study.set_user_attr("dataset", {"modality": "image", "tasks": ["=task"], "n_train": 1, "n_val": 1, "n_test": 1})
    for i, h in enumerate(HOSTILE):
        cfg = {"source": h, "strategy": "linear_probe", "lr": 0.01, "weight_decay": 0.0, "params": {"=p": h}}
        state = TrialState.COMPLETE if i == 0 else TrialState.FAIL
        study.add_trial(create_trial(state=state, value=0.5 if i == 0 else None,
                                     user_attrs={"config": cfg, "fail_reason": h, "provider": h}))
    return study, {"answer": 0, "data": "=data", "seconds": 1.0}


def test_every_leaderboard_writer_escapes_and_leaderboard_reads_back(tmp_path):
    from autotransfer._rank import write_transferability
    from autotransfer._search.report import write_reports

    rows = [{"source": h, "provider": h, "modality": "image", "logme": -0.15, "rank": i + 1, "notes": h}
            for i, h in enumerate(HOSTILE)]
    write_transferability(rows, ["logme"], tmp_path)
    study, extra = _hostile_study()
    write_reports(study, None, final=True, extra=extra, out_dir=tmp_path)
    for name in ("transferability", "trials", "summary"):
        assert_spreadsheet_safe(tmp_path / "leaderboards" / f"{name}.csv")
    boards = autotransfer.leaderboard(tmp_path)
    assert boards["transferability"]["source"].tolist() == HOSTILE
    assert boards["transferability"]["notes"].tolist() == HOSTILE
    assert boards["transferability"]["logme"].tolist() == [-0.15] * len(HOSTILE)
    trials = boards["trials"]
    assert trials["fail_reason"].fillna("").tolist() == [""] + HOSTILE[1:]
    assert trials["=p"].tolist() == HOSTILE and trials["provider"].tolist() == HOSTILE
    assert boards["summary"]["data"].tolist() == ["=data"] and boards["summary"]["tasks"].tolist() == ["=task"]
    # the CLI's --format csv prints the same escaped cells
    printed = run("leaderboard", str(tmp_path), "--format", "csv")
    assert printed.code == 0, printed.err
    assert "\n'=data," in printed.out and "\n=data" not in printed.out


def test_every_csv_the_tool_writes_goes_through_csvsafe():
    root = Path(autotransfer.__file__).parent
    writers = [f"{p.relative_to(root.parent)}:{i}" for folder in (root, root.parent / "plugins")
               for p in sorted(folder.rglob("*.py")) if p.name != "csvsafe.py"
               for i, line in enumerate(p.read_text().splitlines(), 1) if ".to_csv(" in line or "csv.writer(" in line]
    assert writers == [], "write CSVs with autotransfer.csvsafe.write_csv"


@pytest.fixture(scope="module")
def hostile_model(tmp_path_factory):
    """A model trained on class folders with formula-like names, and that data (in a folder named ``=data``)."""
    work = tmp_path_factory.mktemp("hostile")
    classes = ["=1+2", "+SUM(1+1)", "@SUM(A1)", "-1"]
    data = digit_folder(work / "=data", classes)
    r = run("train", "--data", str(data), "--source", timm_spec(work, "test_resnet", size=16), "--epochs", "1",
            "--device", "cpu", "--cache-dir", str(work / "cache"), "--out", str(work / "model"))
    assert r.code == 0, r.err[-3000:]
    return work / "model", data, classes


def test_predict_and_evaluate_csvs_escape_class_names(hostile_model, tmp_path):
    model, data, classes = hostile_model
    before = snapshot(data)
    r = run("predict", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "p.csv"))
    assert r.code == 0, r.err
    cells = assert_spreadsheet_safe(tmp_path / "p.csv")
    assert "p['=1+2]" not in cells[0] and "p[=1+2]" in cells[0]  # inside the header text: nothing to run
    preds = read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert set(preds["prediction"]) <= set(classes) and len(preds) == 24
    assert {c for c in cells[0] if c.startswith("p[")} == {f"p[{c}]" for c in classes}
    r = run("evaluate", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "c.csv"))
    assert r.code == 0, r.err
    cells = assert_spreadsheet_safe(tmp_path / "c.csv")
    assert sorted(row[1] for row in cells[1:]) == sorted(["'+SUM(1+1)", "-1", "'=1+2", "'@SUM(A1)"])
    assert sorted(read_csv(tmp_path / "c.csv")["true"].astype(str)) == sorted(classes)
    assert snapshot(data) == before


# --- a failed trial always says why ---


def test_a_failed_trial_always_has_a_reason(tmp_path, monkeypatch):
    from optuna.trial import TrialState, create_trial

    from autotransfer._search import storage as st
    from autotransfer._search.report import NO_REASON, trial_rows

    study = optuna.create_study(storage=st.open_storage(f"sqlite:///{tmp_path / 's.db'}"), study_name="s")
    silent = study.ask()
    study.ask()
    monkeypatch.setattr(st, "GRACE_SECONDS", 0)
    st.fail_stale(study)  # neither ever sent a heartbeat
    assert study.trials[silent.number].user_attrs["fail_reason"].startswith("its worker sent no heartbeat")
    study.ask()
    st.fail_orphans(study)
    reasons = [t.user_attrs.get("fail_reason") for t in study.get_trials(states=(TrialState.FAIL,))]
    assert len(reasons) == 3 and "killed or crashed" in reasons[-1]
    # Optuna's own stale check fails a trial without a word: the leaderboard still says something
    mute = optuna.create_study()
    mute.add_trial(create_trial(state=TrialState.FAIL))
    assert trial_rows(mute)[0]["fail_reason"] == NO_REASON


@pytest.mark.parametrize("content,why", [(b"", "No columns"), (b"\xff\xfe\x00garbage\x00\x01", "codec"),
                                         (b"data,modality\n", "no row"), (b'a,b\n"1,2\n', "EOF")])
def test_an_empty_or_corrupt_leaderboard_is_one_line(tmp_path, content, why):
    lb = tmp_path / "leaderboards"
    lb.mkdir()
    for name in ("transferability", "trials"):
        (lb / f"{name}.csv").write_text("source,x\na,1\n")
    (lb / "summary.csv").write_bytes(content)
    line = one_line_error(run("leaderboard", str(tmp_path)), "summary.csv", why, "--storage", "rerun the search")
    assert line.count("\n") == 0
    with pytest.raises(autotransfer.AutotransferError, match="summary.csv"):
        autotransfer.leaderboard(tmp_path)
    assert (lb / "summary.csv").read_bytes() == content


# --- 6. numbers that are not numbers ---

BAD_NUMBERS = [
    ("search", "--timeout", "inf", "finite number more than 0"), ("search", "--timeout", "nan", "more than 0"),
    ("search", "--timeout", "-5", "more than 0"), ("search", "--margin", "nan", "cannot be negative"),
    ("search", "--margin", "inf", "finite"), ("search", "--margin", "-0.1", "cannot be negative"),
    ("search", "--seed", "-1", "from 0 to"), ("search", "--seed", str(2**64), "from 0 to"),
    ("search", "--split", "nan,0.5,0.5", "finite, non-negative"), ("search", "--split", "-0.2,0.6,0.6", "non-negative"),
    ("search", "--split", "inf,1,1", "finite"), ("search", "--top-k", "0", "at least 1"),
    ("search", "--stall-trials", "-1", "cannot be negative"), ("search", "--scratch-baselines", "0", "at least 1"),
    ("search", "--max-samples", "-3", "at least 1"), ("search", "--patience", "0", "at least 1"),
    ("rank", "--seed", "-7", "from 0 to"), ("rank", "--split", "0.5,nan,0.5", "finite"),
    ("rank", "--max-samples", "0", "at least 1"),
    ("train", "--lr", "nan", "more than 0"), ("train", "--lr", "inf", "finite"), ("train", "--lr", "-1e-3", "more than 0"),
    ("train", "--seed", "-2", "from 0 to"), ("train", "--split", "0,0.5,0.5", "train > 0"),
    ("train", "--batch-size", "-4", "at least 1"),
]


@pytest.mark.parametrize("command,flag,value,expected", BAD_NUMBERS)
def test_a_number_an_option_cannot_mean_is_one_line_before_any_work(tmp_path, command, flag, value, expected):
    data = digit_folder(tmp_path / "d", ["a", "b"], per_class=4)
    before = snapshot(data)
    extra = ["--source", "timm:test_resnet"] if command == "train" else []
    r = run(command, "--data", str(data), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
            *extra, flag, value)
    line = one_line_error(r, flag, expected, "default")
    assert line.startswith(f"error: {flag} ")
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
    assert snapshot(data) == before


@pytest.mark.parametrize("config,field,value", [
    ("SearchConfig", "timeout", float("inf")), ("SearchConfig", "margin", float("nan")),
    ("SearchConfig", "seed", -1), ("SearchConfig", "trials", 2.5), ("SearchConfig", "epochs", "3"),
    ("SearchConfig", "split", "0.7,0.15,nan"), ("TrainConfig", "lr", float("nan")), ("TrainConfig", "lr", -1e-3),
    ("TrainConfig", "seed", -1),
    ("TrainConfig", "weight_decay", -0.1), ("TrainConfig", "epochs", 0), ("TrainConfig", "num_workers", -1),
])
def test_the_python_api_rejects_the_same_numbers(tmp_path, config, field, value):
    flag = "--" + field.replace("_", "-")
    with pytest.raises(autotransfer.AutotransferError, match=f"^{flag} "):
        getattr(autotransfer, config)(**{field: value})
    if config == "SearchConfig":  # search() checks its keyword options before it reads the data
        with pytest.raises(autotransfer.AutotransferError, match=f"^{flag} "):
            autotransfer.search(tmp_path / "missing", out=tmp_path / "out", **{field: value})
        assert not (tmp_path / "out").exists()


def test_load_and_evaluate_check_their_numbers_too(tmp_path):
    with pytest.raises(autotransfer.AutotransferError, match="^--seed -3 "):
        load(tmp_path, seed=-3)
    with pytest.raises(autotransfer.AutotransferError, match="^--batch-size 0 "):
        autotransfer.evaluate(tmp_path / "no-model", tmp_path, batch_size=0)


# --- 7 and 10. outputs checked before the work, damaged model folders ---


@pytest.fixture(scope="module")
def image_model(tmp_path_factory):
    """(exported model, its image-folder data): test_resnet linear probe on digits 0-2 at 16 px."""
    return tiny_image_model(tmp_path_factory.mktemp("model"), per_class=8, epochs=1)


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    """(exported text model, the labelled table it was trained on)."""
    work = tmp_path_factory.mktemp("text")
    bbc = load(write_bbc_folder(work / "bbc", per_class=6))
    rows = [{"body": t, "topic": bbc.tasks[0].classes[y]} for t, y in zip(bbc.items, bbc.labels[:, 0], strict=True)]
    pd.DataFrame(rows).to_csv(work / "news.csv", index=False)
    ds = load(work / "news.csv", label_col="topic")
    r = autotransfer.train(ds, make_tiny_bert(work / "bert", ds.items, vocab_size=300), "linear_probe", epochs=1,
                           device="cpu")
    return r.save(work / "best"), work / "news.csv"


def test_predict_and_evaluate_never_overwrite_their_input(text_model, image_model, tmp_path):
    best, table = text_model
    copy = tmp_path / "news.csv"
    copy.write_bytes(table.read_bytes())
    before = snapshot(tmp_path) | snapshot(best)
    for command in ("predict", "evaluate"):
        one_line_error(run(command, "--model", str(best), "--data", str(copy), "--out", str(copy)),
                       f"--out {str(copy)!r} would overwrite --data", "pass an --out outside --data")
        one_line_error(run(command, "--model", str(best), "--data", str(copy), "--out", str(best / "config.json")),
                       "would overwrite --model")
    link = tmp_path / "alias.csv"
    link.symlink_to(copy)
    one_line_error(run("predict", "--model", str(best), "--data", str(copy), "--out", str(link)), "would overwrite")
    model, images = image_model
    item = sorted((images / "1").iterdir())[0]
    one_line_error(run("predict", "--model", str(model), "--data", str(images), "--out", str(item)),
                   "would overwrite --data")
    assert (snapshot(tmp_path) | snapshot(best)) == before | {str(link): copy.read_bytes()}


@pytest.mark.parametrize("command", ["predict", "evaluate", "train"])
def test_an_out_that_cannot_be_written_is_one_line_before_the_work(image_model, tmp_path, command):
    model, data = image_model
    (tmp_path / "a-file").write_text("keep me")
    (tmp_path / "a-folder").mkdir()
    if command == "train":
        cases = {tmp_path / "a-file": "is a file", data / "model": "would overwrite --data", data: "would overwrite"}
        base = ["train", "--data", str(data), "--source", timm_spec(tmp_path, "test_resnet", size=16), "--epochs",
                "1", "--device", "cpu", "--cache-dir", str(tmp_path / "cache")]
    else:
        cases = {tmp_path / "a-folder": "is a folder", tmp_path / "missing" / "p.csv": "does not exist"}
        base = [command, "--model", str(model), "--data", str(data)]
    before = snapshot(tmp_path) | snapshot(data)
    for out, words in cases.items():
        r = run(*base, "--out", str(out))
        one_line_error(r, "--out", words)
        assert "wrote" not in r.out
    assert not (tmp_path / "cache").exists()  # train: no feature was extracted, nothing trained
    assert snapshot(tmp_path) | snapshot(data) == before
    assert not (tmp_path / "missing").exists()


@pytest.mark.slow  # a fresh process in its own mount namespace
def test_a_read_only_out_is_one_line_before_predicting(image_model, tmp_path):
    from test_safety_runs import _read_only_cmd

    model, data = image_model
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "old.csv").write_text("item\n")
    argv = ["predict", "--model", str(model), "--data", str(data), "--out", str(folder / "p.csv")]
    proc = subprocess.run(_read_only_cmd(folder, argv), capture_output=True, text=True, timeout=300)
    r = CliResult(proc.returncode, proc.stdout, proc.stderr)
    one_line_error(r, f"cannot write --out {str(folder / 'p.csv')!r}", "pass another --out")
    for p in [folder, *folder.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o200)
    assert sorted(q.name for q in folder.iterdir()) == ["old.csv"]


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _edit_config(change):
    def edit(folder: Path) -> None:
        cfg = json.loads((folder / "config.json").read_text())
        change(cfg)
        (folder / "config.json").write_text(json.dumps(cfg))
    return edit


def _old_model_dropped_class(folder: Path) -> None:
    """A model saved before the class lists rode along with the weights, then a class taken out."""
    from safetensors.torch import load_file, save_file

    save_file(load_file(folder / "model.safetensors"), folder / "model.safetensors")
    _edit_config(lambda c: c["tasks"][0]["classes"].pop())(folder)


DAMAGE = {
    "garbled config": (lambda f: (f / "config.json").write_text('{"format": "autotransfer-model", '),
                       ["config.json", "is not valid JSON", "export it again"]),
    "cut weights": (lambda f: _cut(f / "model.safetensors"), ["model.safetensors", "cannot be read"]),
    "reordered classes": (_edit_config(lambda c: c["tasks"][0]["classes"].reverse()),
                          ["config.json", "other tasks or classes than the weights", "0, 1, 2"]),
    "renamed class": (_edit_config(lambda c: c["tasks"][0]["classes"].__setitem__(0, "zero")),
                      ["config.json", "other tasks or classes"]),
    "dropped class": (_edit_config(lambda c: c["tasks"][0]["classes"].pop()), ["config.json", "other tasks"]),
    "dropped class, older model": (_old_model_dropped_class, ["model.safetensors", "another size", "label: 2 classes"]),
    "no tasks": (_edit_config(lambda c: c.pop("tasks")), ["config.json", "no valid 'tasks'"]),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_model_folder_is_one_line(image_model, tmp_path, damage):
    model, data = image_model
    broken = tmp_path / "best"
    shutil.copytree(model, broken)
    write, words = DAMAGE[damage]
    write(broken)
    before = snapshot(broken)
    for command in ("predict", "evaluate"):
        r = run(command, "--model", str(broken), "--data", str(data), "--out", str(tmp_path / f"{command}.csv"))
        one_line_error(r, *words)
        assert not (tmp_path / f"{command}.csv").exists()
    assert snapshot(broken) == before
    with pytest.raises(autotransfer.AutotransferError):
        autotransfer.load_model(broken)


def test_predict_on_a_table_with_only_a_header_is_one_line(text_model, tmp_path):
    best, _ = text_model
    (tmp_path / "empty.csv").write_text("body\n")
    r = run("predict", "--model", str(best), "--data", str(tmp_path / "empty.csv"), "--out", str(tmp_path / "p.csv"))
    one_line_error(r, "empty.csv", "has a header but no rows")
    assert not (tmp_path / "p.csv").exists()


# --- 2. images read as a viewer shows them ---


def _pattern() -> np.ndarray:
    """A 24x16 grey image no rotation or flip maps onto itself (values 0..255)."""
    y, x = np.mgrid[0:24, 0:16]
    return ((x * 13 + y * y * 3) % 256).astype(np.uint8)


def _write_as(path: Path, grey: np.ndarray, how: str) -> None:
    """``grey`` saved by Pillow so that a viewer shows exactly it (lossless formats only)."""
    from PIL import Image

    im = Image.fromarray(grey)
    if how == "16-bit":
        Image.fromarray(grey.astype(np.uint16) * 257).save(path)  # mode I;16: 255 -> 65535
    elif how == "exif-rotated":  # pixels stored turned a quarter; the tag says how to turn them back
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90 CW to view"
        im.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif.tobytes())
    elif how == "palette":
        im.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(path)
    elif how == "cmyk":
        im.convert("CMYK").save(path)
    elif how == "grey+alpha":
        Image.merge("LA", [im, Image.new("L", im.size, 255)]).save(path)
    elif how == "32-bit":  # mode I holding 8-bit values, as convert("I") makes them
        im.convert("I").save(path)
    elif how == "float":  # mode F in 0..1
        Image.fromarray(grey.astype(np.float32) / 255).save(path)
    else:
        im.save(path)


SUFFIX = {"16-bit": ".png", "exif-rotated": ".png", "palette": ".png", "cmyk": ".tiff", "grey+alpha": ".png",
          "32-bit": ".tiff", "float": ".tiff"}


@pytest.mark.parametrize("how", list(SUFFIX))
def test_every_mode_decodes_as_a_viewer_shows_it(tmp_path, how):
    from PIL import Image

    from autotransfer.decode_cache import DecodeSpec, decode
    from autotransfer.pixels import open_image

    grey = _pattern()
    path = tmp_path / f"x{SUFFIX[how]}"
    _write_as(path, grey, how)
    with Image.open(path) as im:
        assert im.mode == {"16-bit": "I;16", "exif-rotated": "L", "palette": "P", "cmyk": "CMYK",
                           "grey+alpha": "LA", "32-bit": "I", "float": "F"}[how]
    shown = np.asarray(open_image(path, "RGB"))
    assert shown.shape == (24, 16, 3) and (shown == grey[..., None]).all()
    assert (np.asarray(open_image(path, "L")) == grey).all()
    # the decoded-image cache (training) decodes the same pixels as a reference 8-bit PNG
    _write_as(tmp_path / "ref.png", grey, "8-bit")
    spec = DecodeSpec(side=12, crop=(12, 12), interpolation="bilinear")
    assert (decode(path, spec) == decode(tmp_path / "ref.png", spec)).all()


def test_exif_orientation_of_a_jpeg_and_transparency_over_white(tmp_path):
    from PIL import Image

    from autotransfer.pixels import open_image

    grey = np.kron(_pattern() // 64 * 80, np.ones((4, 4), np.uint8))  # flat blocks: JPEG keeps them
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90 CCW to view"
    Image.fromarray(grey).transpose(Image.Transpose.ROTATE_270).save(tmp_path / "phone.jpg", exif=exif.tobytes(),
                                                                     quality=95)
    shown = np.asarray(open_image(tmp_path / "phone.jpg", "L")).astype(int)
    assert shown.shape == grey.shape and np.abs(shown - grey).mean() < 3
    # a black stroke on a transparent background stays visible (convert("RGB") alone shows black on black)
    alpha = np.where(grey > 100, 0, 255).astype(np.uint8)
    Image.merge("RGBA", [Image.new("L", (64, 96), 0)] * 3 + [Image.fromarray(alpha)]).save(tmp_path / "icon.png")
    shown = np.asarray(open_image(tmp_path / "icon.png", "L"))
    assert (shown == np.where(alpha == 0, 255, 0)).all()


def test_predict_and_evaluate_answer_the_same_for_every_encoding(image_model, tmp_path):
    """The 8-bit digits the model was trained on, re-encoded: the same predictions, to the float."""
    from PIL import Image

    model, data = image_model
    r = run("predict", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "ref.csv"))
    assert r.code == 0, r.err
    ref = pd.read_csv(tmp_path / "ref.csv").sort_values("item")
    for how, suffix in SUFFIX.items():
        copy = tmp_path / how
        for f in sorted(data.rglob("*.png")):
            (copy / f.parent.name).mkdir(parents=True, exist_ok=True)
            with Image.open(f) as im:
                _write_as(copy / f.parent.name / f"{f.stem}{suffix}", np.asarray(im.convert("L")), how)
        r = run("predict", "--model", str(model), "--data", str(copy), "--out", str(tmp_path / f"{how}.csv"))
        assert r.code == 0, r.err
        got = pd.read_csv(tmp_path / f"{how}.csv").sort_values("item")
        assert got["item"].str.replace(suffix, ".png").tolist() == ref["item"].tolist()
        assert got["prediction"].tolist() == ref["prediction"].tolist(), how
        probs = [c for c in ref.columns if c.startswith("p[")]
        assert np.allclose(got[probs].to_numpy(), ref[probs].to_numpy(), atol=1e-6), how
        r = run("evaluate", "--model", str(model), "--data", str(copy), "--json", "--out", str(tmp_path / "c.csv"))
        assert r.code == 0, r.err
        assert json.loads(r.out)["tasks"][0]["accuracy"] == (got["prediction"].astype(str).str[0]
                                                              == got["item"].str[0]).mean()


# --- 5. a diverged model is never saved, loaded or used ---


def test_training_that_diverges_fails_with_the_reason_and_saves_nothing(image_model, tmp_path):
    _, data = image_model
    before = snapshot(data)
    r = run("train", "--data", str(data), "--source", timm_spec(tmp_path, "test_resnet", size=16), "--strategy",
            "full", "--lr", "1e6", "--epochs", "2", "--device", "cpu", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(tmp_path / "model"))
    one_line_error(r, "training diverged", "nan or inf", "lower --lr")
    assert not (tmp_path / "model").exists() and snapshot(data) == before


def _poisoned(model_dir: Path, tmp_path: Path, value: float) -> Path:
    """A copy of the model whose first head's weights all equal ``value``."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "poisoned"
    shutil.copytree(model_dir, copy)
    tensors = load_file(copy / "model.safetensors")
    with safe_open(str(copy / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    head = next(k for k in tensors if k.startswith("heads.0.") and k.endswith("weight"))
    tensors[head] = torch.full_like(tensors[head], value)
    save_file(tensors, copy / "model.safetensors", metadata=meta)
    return copy


def test_a_model_with_nan_weights_is_neither_saved_nor_loaded(image_model, tmp_path):
    from autotransfer.errors import Diverged

    model_dir, data = image_model
    poisoned = _poisoned(model_dir, tmp_path, float("nan"))
    r = run("predict", "--model", str(poisoned), "--data", str(data), "--out", str(tmp_path / "p.csv"))
    one_line_error(r, "model.safetensors", "holds nan or inf", "lower --lr")
    assert not (tmp_path / "p.csv").exists()
    model = autotransfer.load_model(model_dir)
    with torch.no_grad():
        model.heads[0].weight[0, 0] = float("inf")
    with pytest.raises(Diverged, match="not saving the model"):
        model.save(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_outputs_that_overflow_are_errors_never_a_class(image_model, tmp_path):
    from autotransfer.errors import Diverged

    model_dir, data = image_model
    huge = _poisoned(model_dir, tmp_path, 3e38)  # finite weights, infinite logits (inf - inf: nan)
    r = run("predict", "--model", str(huge), "--data", str(data), "--out", str(tmp_path / "p.csv"))
    df = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    broken = df[df["error"] != ""]
    assert len(broken) > 0 and (broken["prediction"] == "").all()
    assert broken["error"].str.startswith("the model's output is not finite").all()
    assert "wrote" in r.out and str(len(df) - len(broken)) in r.out
    items = [str(p) for p in sorted(data.rglob("*.png"))]
    with pytest.raises(Diverged, match="not finite"):
        autotransfer.load_model(huge).predict(items)


# --- 4. label and text columns ---


@pytest.fixture(scope="module")
def news_rows(tmp_path_factory):
    """40 BBC articles as rows: body, subject (5 topics), year (2 values), stars (3 values), section (2 values)."""
    bbc = load(write_bbc_folder(tmp_path_factory.mktemp("news") / "bbc", per_class=8))
    return [{"body": t, "subject": bbc.tasks[0].classes[y], "year": 2004 + i % 2, "stars": 1 + i % 3,
             "section": ("world", "home")[i % 2]}
            for i, (t, y) in enumerate(zip(bbc.items, bbc.labels[:, 0], strict=True))]


def _table(tmp_path: Path, rows: list[dict], cols: list[str], rename: dict | None = None) -> Path:
    path = tmp_path / "news.csv"
    pd.DataFrame(rows)[cols].rename(columns=rename or {}).to_csv(path, index=False)
    return path


def test_a_text_column_is_preferred_as_label_over_a_numeric_one_and_the_choice_is_shown(tmp_path, news_rows):
    path = _table(tmp_path, news_rows, ["body", "subject", "year"])
    r = run("inspect", "--data", str(path), "--json")
    assert r.code == 0, r.err
    info = json.loads(r.out)
    assert [t["name"] for t in info["tasks"]] == ["subject"] and info["meta"]["text_col"] == "body"
    assert "'year' passed over" in info["meta"]["columns"]
    text = run("inspect", "--data", str(path)).out
    assert "columns     text 'body' (named like a text column); label 'subject' (the only text column" in text
    # one numeric column with few values, and nothing else: it is the label, and inspect says why
    info = json.loads(run("inspect", "--data", str(_table(tmp_path, news_rows, ["body", "stars"])), "--json").out)
    assert [t["name"] for t in info["tasks"]] == ["stars"] and "only numeric column" in info["meta"]["columns"]
    # no column named like text: the longest text column (pandas' string dtype included)
    path = _table(tmp_path, news_rows, ["body", "subject"], {"body": "words"})
    info = json.loads(run("inspect", "--data", str(path), "--json").out)
    assert info["meta"]["text_col"] == "words" and "longest text" in info["meta"]["columns"]


@pytest.mark.parametrize("cols,words", [(["body", "subject", "section"], ["'subject', 'section'", "--label-col"]),
                                        (["body", "year", "stars"], ["'year', 'stars'", "--label-col"])])
def test_two_equally_likely_label_columns_are_one_line(tmp_path, news_rows, cols, words):
    path = _table(tmp_path, news_rows, cols)
    before = snapshot(path)
    one_line_error(run("inspect", "--data", str(path)), "cannot tell which column", *words)
    r = run("inspect", "--data", str(path), "--label-col", cols[1], "--json")  # the fix the line names
    assert r.code == 0 and [t["name"] for t in json.loads(r.out)["tasks"]] == [cols[1]]
    assert snapshot(path) == before


def test_a_column_cannot_be_both_text_and_label(tmp_path, news_rows):
    path = _table(tmp_path, news_rows, ["body", "subject"], {"subject": "topic"})
    one_line_error(run("inspect", "--data", str(path), "--text-col", "topic", "--label-col", "topic"),
                   "'topic'", "cannot be both the text and the label")
    one_line_error(run("train", "--data", str(path), "--text-col", "body", "--label-col", "body", "--source", "x"),
                   "cannot be both")
    # the label column the user names is never auto-picked as the text, even when named like one
    path = _table(tmp_path, news_rows, ["body", "subject"], {"body": "comment", "subject": "text"})
    r = run("inspect", "--data", str(path), "--label-col", "text", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["meta"]["text_col"] == "comment"


def test_an_empty_test_split_has_no_test_score_and_no_numpy_warning(image_model):
    import warnings

    from autotransfer._search.final import test_score

    model_dir, data = image_model
    ds = load(data, split="0.8,0.2,0")
    assert len(ds.split_items("test")) == 0
    model = autotransfer.load_model(model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "Mean of empty slice" would raise here
        assert test_score(model, ds, "test", "accuracy") is None
        band = test_score(model, ds, "val", "accuracy")[0]
        assert 0.0 <= band.low <= band.value <= band.high <= 1.0


def test_outputs_that_turn_non_finite_in_evaluation_fail_the_run(image_model, tmp_path, monkeypatch):
    """Finite weights whose outputs overflow (fp16 on an older card, say): the run fails, never scores."""
    from autotransfer import _train
    from autotransfer.errors import Diverged

    _, data = image_model
    logits = _train._Loop.logits

    def overflowing(self, inputs, cached):
        out = logits(self, inputs, cached)
        return out if torch.is_grad_enabled() else [lg * float("inf") for lg in out]  # evaluation only

    monkeypatch.setattr(_train._Loop, "logits", overflowing)
    with pytest.raises(Diverged, match="output row"):
        autotransfer.train(load(data), timm_spec(tmp_path, "test_resnet", size=16), "full", epochs=1, device="cpu",
                           cache_dir=False)
