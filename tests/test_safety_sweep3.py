"""No silent wrong answers, second sweep, the rest (issue 26): one study per run folder (1), links in
data folders (3), a refused rerun writes nothing (8), runs never inside the data (9)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from helpers_models import tiny_image_model
from helpers_training import timm_spec
from test_safety_sweep2 import digit_folder, one_line_error, run, snapshot

import autotransfer
from autotransfer import runs

pytestmark = pytest.mark.usefixtures("one_thread")


def search_args(data: Path, out: Path, spec: str, cache: Path, *extra: str) -> list[str]:
    return ["search", "--data", str(data), "--out", str(out), "--sources", spec, "--trials", "3", "--epochs", "2",
            "--estimators", "logme", "--no-progress", "--device", "cpu", "--cache-dir", str(cache),
            "--timeout", "600", *extra]


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A finished search of digits a-c into ``out`` (study ``autotransfer-digits``), and a second source."""
    work = tmp_path_factory.mktemp("sweep3")
    data = digit_folder(work / "digits", ["a", "b", "c"], per_class=10)
    (work / "other").mkdir()
    w = {"data": data, "out": work / "run", "cache": work / "cache", "spec": timm_spec(work, "test_resnet", size=16),
         "other": timm_spec(work / "other", "test_resnet", size=16, seed=1)}
    r = run(*search_args(data, w["out"], w["spec"], w["cache"]))
    assert r.code == 0, r.err[-3000:]
    return w


def _summary(out: Path) -> pd.Series:
    row = pd.read_csv(out / "leaderboards" / "summary.csv").iloc[0]
    return row[[c for c in row.index if c not in ("total_seconds", "refit_seconds", "ensemble_seconds")]]


# --- 1. one run folder, one study ---


def test_another_study_in_a_run_folder_is_refused_before_any_work(searched, tmp_path):
    data, out = searched["data"], searched["out"]
    before, summary = snapshot(out) | snapshot(data), _summary(out)
    assert json.loads((out / "run.json").read_text())["study"] == "autotransfer-digits"
    r = run(*search_args(data, out, searched["other"], tmp_path / "cache", "--study-name", "other"))
    one_line_error(r, f"--out {out} holds study 'autotransfer-digits' in its study.db, not study 'other'",
                   "pass another --out", "--study-name autotransfer-digits")
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"  # the same name in another storage is another study
    r = run(*search_args(data, out, searched["spec"], tmp_path / "cache", "--storage", elsewhere))
    one_line_error(r, "holds study 'autotransfer-digits' in its study.db", f"not study 'autotransfer-digits' in "
                   f"{elsewhere}", "pass another --out")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "elsewhere.db").exists()  # nothing ranked
    assert snapshot(out) | snapshot(data) == before
    # a folder from before run.json named its study: the studies in its study.db say whose it is
    legacy = tmp_path / "legacy"
    shutil.copytree(out, legacy)
    marker = json.loads((legacy / "run.json").read_text())
    (legacy / "run.json").write_text(json.dumps({k: marker[k] for k in ("data", "fingerprint")}))
    kept = snapshot(legacy)
    r = run(*search_args(data, legacy, searched["other"], tmp_path / "cache", "--study-name", "other"))
    one_line_error(r, "holds study 'autotransfer-digits' in its study.db, not study 'other'")
    assert snapshot(legacy) == kept and not (tmp_path / "cache").exists()
    # the first command again resumes its own study: the same answer, and best/ is still that answer
    again = run(*search_args(data, out, searched["spec"], searched["cache"]))
    assert again.code == 0, again.err[-3000:]
    assert _summary(out).equals(summary)
    # the card and the refit's result.json say the seconds; weights and config are the same bytes
    model = {k: v for k, v in snapshot(out / "best").items() if not k.endswith(("README.md", "result.json"))}
    assert len(model) == 2 and model == {k: before[k] for k in model}
    timed = ("seconds", "epoch_seconds")
    result = {k: v for k, v in json.loads((out / "best" / "result.json").read_text()).items() if k not in timed}
    assert result == {k: v for k, v in json.loads(before[str(out / "best" / "result.json")]).items() if k not in timed}


# --- 8. a refused rerun writes nothing ---


def test_a_rerun_the_study_refuses_has_rewritten_nothing(searched, tmp_path):
    data, out = searched["data"], searched["out"]
    before = snapshot(out)
    ranking = (out / "leaderboards" / "transferability.csv").read_bytes()
    # the same study, other sources: the ranking runs (into memory), then the study refuses them
    r = run(*search_args(data, out, searched["other"], tmp_path / "cache"))
    one_line_error(r, "study 'autotransfer-digits' searches sources", "cannot load", "same --sources")
    assert (tmp_path / "cache").exists()  # it did rank: the refusal came after, and wrote nothing
    assert (out / "leaderboards" / "transferability.csv").read_bytes() == ranking
    assert snapshot(out) == before


# --- 9. runs never go inside the data ---


def test_a_run_inside_the_data_is_refused_before_reading_it(tmp_path, monkeypatch):
    data = digit_folder(tmp_path / "digits", ["a", "b"], per_class=4)
    (tmp_path / "alias").symlink_to(data)
    before = snapshot(tmp_path)
    cache = ["--cache-dir", str(tmp_path / "cache"), "--sources", "timm:test_resnet", "--device", "cpu"]
    monkeypatch.chdir(data)
    for command in ("search", "rank"):
        one_line_error(run(command, "--data", ".", *cache),
                       "the default --out ./autotransfer-runs/<data-name> is inside --data .",
                       "pass an --out outside .", "run from another folder")
        for out in (data / "runs" / "x", data, tmp_path / "alias" / "run"):
            line = one_line_error(run(command, "--data", str(data), "--out", str(out), *cache),
                                  f"--out {out} is inside --data {data}", f"pass an --out outside {data}")
            assert "another folder" not in line
    with pytest.raises(autotransfer.AutotransferError, match="is inside --data"):
        autotransfer.search(data, out=data / "run", sources=["timm:test_resnet"], cache_dir=tmp_path / "cache")
    with pytest.raises(autotransfer.AutotransferError, match="is inside --data"):
        autotransfer.rank(data, "timm:test_resnet", out=data / "run", cache_dir=tmp_path / "cache")
    assert snapshot(tmp_path) == before and not (tmp_path / "cache").exists()
    assert sorted(p.name for p in data.iterdir()) == ["a", "b"]
    # beside the data is where runs go: a sibling whose name starts like the data's, a table's own folder
    for out, given in ((tmp_path / "digits-runs", data), (tmp_path / "run", tmp_path / "t.csv")):
        runs.refuse_inside_data(out, given)


# --- 3. links in data folders ---


def _links(root: Path) -> dict[str, str]:
    return {str(p): os.readlink(p) for p in root.rglob("*") if p.is_symlink()}


def _inspect(data: Path) -> dict:
    r = run("inspect", "--data", str(data), "--json")
    assert r.code == 0, r.err
    return json.loads(r.out)


def test_links_into_the_data_are_never_followed_and_the_warning_says_which(tmp_path):
    data = digit_folder(tmp_path / "digits", ["a", "b", "c"], per_class=6)
    os.symlink("..", data / "a" / "up")  # back up the tree: would pull b and c into a
    os.symlink(data / "b", data / "a" / "peek")  # into another class
    os.symlink(data, data / "all")  # a class folder that is the whole data
    os.symlink(data / "c", data / "c2")  # a class folder that is another class
    before, links = snapshot(data), _links(data)
    info = _inspect(data)
    assert info["n_items"] == 18 and [t["classes"] for t in info["tasks"]] == [["a", "b", "c"]]
    totals = {c: sum(info["counts"][s]["label"][c] for s in info["counts"]) for c in ("a", "b", "c")}
    assert totals == {"a": 6, "b": 6, "c": 6}
    loops = next(w for w in info["warnings"] if "symlink loop" in w)
    assert loops.startswith("2 symlink loop(s) not followed") and "a/up" in loops and "all" in loops
    into = next(w for w in info["warnings"] if "into the data itself" in w)
    assert into.startswith("2 symlink(s)") and "a/peek" in into and "c2" in into
    assert snapshot(data) == before and _links(data) == links


def test_a_split_folder_linked_to_another_split_is_not_read_twice(tmp_path):
    root = tmp_path / "presplit"
    digit_folder(root / "train", ["a", "b"], per_class=6)
    digit_folder(root / "test", ["a", "b"], per_class=3)
    os.symlink("train", root / "val")  # val would be train again: the validation score would be a training one
    info = _inspect(root)
    assert info["splits"]["train"] + info["splits"]["val"] == 12 and info["splits"]["test"] == 6
    assert any(w.startswith("2 symlink(s) into the data itself") and "val/a" in w for w in info["warnings"])


def test_dangling_links_are_skipped_with_a_warning(tmp_path):
    data = digit_folder(tmp_path / "digits", ["a", "b"], per_class=6)
    os.symlink(tmp_path / "gone.png", data / "a" / "gone.png")
    os.symlink(tmp_path / "nowhere", data / "lost")  # a class folder that is not there
    before = snapshot(data)
    info = _inspect(data)
    assert info["n_items"] == 12 and [t["classes"] for t in info["tasks"]] == [["a", "b"]]
    dangling = next(w for w in info["warnings"] if "dangling" in w)
    assert dangling.startswith("2 dangling symlink(s) skipped") and "a/gone.png" in dangling and "lost" in dangling
    assert snapshot(data) == before


def test_links_out_of_the_data_are_followed_once(tmp_path):
    store = digit_folder(tmp_path / "store", ["a", "b"], per_class=6)
    data = tmp_path / "linked"
    for c in ("a", "b"):
        (data / c).mkdir(parents=True)
        for f in sorted((store / c).iterdir()):
            (data / c / f.name).symlink_to(f)
    (data / "a" / "again.png").symlink_to(sorted((store / "a").iterdir())[0])  # a second link to one file
    (data / "b" / "more").symlink_to(store / "b")  # the files linked one by one, as a folder
    info = _inspect(data)
    assert info["n_items"] == 12
    assert sum(info["counts"][s]["label"]["a"] for s in info["counts"]) == 6
    twice = next(w for w in info["warnings"] if "read already" in w)
    assert twice.startswith("7 symlink(s) to a file or folder read already skipped")


@pytest.fixture(scope="module")
def image_model(tmp_path_factory):
    return tiny_image_model(tmp_path_factory.mktemp("model"), per_class=6, epochs=1)


def test_predict_treats_links_the_same_way(image_model, tmp_path):
    model, data = image_model
    folder = tmp_path / "unlabelled"
    shutil.copytree(data, folder)
    outside = sorted((data / "1").iterdir())[0]
    os.symlink("..", folder / "0" / "up")
    os.symlink(tmp_path / "gone.png", folder / "0" / "gone.png")
    os.symlink(outside, folder / "0" / "outside.png")
    os.symlink(outside, folder / "0" / "outside-again.png")
    before = snapshot(folder)
    r = run("predict", "--model", str(model), "--data", str(folder), "--out", str(tmp_path / "p.csv"))
    assert r.code == 0, r.err
    items = pd.read_csv(tmp_path / "p.csv")["item"].tolist()
    assert len(items) == 18 + 1 and "0/outside-again.png" in items  # names sort before outside.png
    warnings = [line for line in r.err.splitlines() if line.startswith("warning: 1 ")]
    assert len(warnings) == 3, r.err
    for words in ("symlink loop(s) not followed", "dangling symlink(s) skipped (the target does not exist): 0/gone.png",
                  "read already skipped (each is read once): 0/outside.png"):
        assert any(words in w for w in warnings), (words, r.err)
    assert "0/up -> " in warnings[0]
    assert snapshot(folder) == before
