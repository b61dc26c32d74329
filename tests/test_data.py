"""The data layer on real offline data, splits, fingerprints and every bad input through the CLI."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from autotransfer import DataError, load_dataset


def _png(path: Path, value: int = 0) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(path)


def _tiny_images(root: Path, classes=("a", "b"), per_class=10) -> Path:
    for c in classes:
        for i in range(per_class):
            _png(root / c / f"{i}.png", value=(i * 7 + 31 * ord(c[0])) % 255)  # deterministic: no hash()
    return root


# --- real data ---


def test_digits_image_folder_counts(digits_dir, cli):
    ds = load_dataset(digits_dir)
    assert ds.modality == "image"
    assert len(ds.items) == 1797
    assert ds.tasks[0].classes == [str(i) for i in range(10)]
    counts = ds.class_counts()
    per_class = np.bincount(ds.labels[:, 0])
    assert sum(counts[s]["label"]["3"] for s in counts) == per_class[3] == 183
    sizes = {s: len(i) for s, i in ds.splits.items()}
    assert sum(sizes.values()) == 1797
    assert abs(sizes["train"] / 1797 - 0.7) < 0.01 and abs(sizes["val"] / 1797 - 0.15) < 0.01

    r = cli("inspect", "--data", str(digits_dir), "--json")
    assert r.code == 0, r.err
    info = json.loads(r.out)
    assert info["n_items"] == 1797 and info["modality"] == "image"
    assert info["splits"] == sizes


def test_bbc_text_folder_counts(bbc_dir, cli):
    r = cli("inspect", "--data", str(bbc_dir))
    assert r.code == 0, r.err
    assert "items       2225" in r.out
    for c in ("business", "entertainment", "politics", "sports", "tech"):
        assert c in r.out
    ds = load_dataset(bbc_dir)
    assert ds.modality == "text" and len(ds.items) == 2225
    assert dict(zip(ds.tasks[0].classes, np.bincount(ds.labels[:, 0]).tolist(), strict=False)) == {
        "business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401}
    # the corpus really has one non-UTF-8 file and duplicate articles: both are reported, not hidden
    assert any("not valid UTF-8" in w for w in ds.warnings)
    assert any("duplicate" in w for w in ds.warnings)


# --- splits and fingerprints ---


def test_splits_stratified_reproducible_disjoint(digits_dir):
    a = load_dataset(digits_dir, seed=3)
    b = load_dataset(digits_dir, seed=3)
    c = load_dataset(digits_dir, seed=4)
    for s in ("train", "val", "test"):
        assert np.array_equal(a.splits[s], b.splits[s])
    assert not np.array_equal(a.splits["val"], c.splits["val"])
    sets = [set(a.splits[s].tolist()) for s in ("train", "val", "test")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert len(sets[0] | sets[1] | sets[2]) == len(a.items)
    # stratified: each class's share of val is its share of the whole, within one example
    y = a.labels[:, 0]
    for k in range(10):
        expected = (y == k).sum() * 0.15
        assert abs((y[a.splits["val"]] == k).sum() - expected) <= 1
    custom = load_dataset(digits_dir, split="0.5,0.25,0.25")
    assert abs(len(custom.splits["train"]) / 1797 - 0.5) < 0.01
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_fingerprint_changes_with_file_content(tmp_path):
    root = _tiny_images(tmp_path / "d")
    before = load_dataset(root).fingerprint
    assert load_dataset(root).fingerprint == before
    _png(root / "a" / "3.png", value=200)
    assert load_dataset(root).fingerprint != before


def test_presplit_folders_with_valid_alias(tmp_path):
    root = tmp_path / "pre"
    for split, n in (("train", 6), ("valid", 3), ("test", 3)):
        for c in ("x", "y"):
            for i in range(n):
                _png(root / split / c / f"{i}.png", value=i * 20 + (c == "y") * 5)
    ds = load_dataset(root)
    assert ds.presplit
    assert {s: len(i) for s, i in ds.splits.items()} == {"train": 12, "val": 6, "test": 6}
    val_items = ds.split_items("val")
    assert all("/valid/" in p for p in val_items)


def test_presplit_without_val_carves_from_train(tmp_path):
    root = tmp_path / "pre"
    for split, n in (("train", 20), ("test", 4)):
        for c in ("x", "y"):
            for i in range(n):
                _png(root / split / c / f"{i}.png", value=i * 10 + (c == "y") + (split == "test") * 3)
    ds = load_dataset(root)
    assert len(ds.splits["test"]) == 8
    assert len(ds.splits["val"]) > 0
    assert not set(ds.split_items("val")) & set(ds.split_items("test"))
    assert all("/train/" in p for p in ds.split_items("val"))


def test_presplit_text_folder(tmp_path):
    root = tmp_path / "t"
    for split in ("train", "validation", "test"):
        for c in ("pos", "neg"):
            for i in range(4):
                p = root / split / c / f"{i}.txt"
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(f"{c} {split} document number {i}")
    ds = load_dataset(root)
    assert ds.modality == "text" and ds.presplit
    assert len(ds.splits["val"]) == 8


# --- tables ---


def _frame(n=40):
    import pandas as pd

    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "id": np.arange(n),
        "review": [f"this is review {i} which is {'good' if i % 2 else 'bad'}" for i in range(n)],
        "sentiment": ["pos" if i % 2 else "neg" for i in range(n)],
        "topic": rng.choice(["a", "b", "c"], size=n),
    })


@pytest.mark.parametrize("ext", ["csv", "tsv", "jsonl", "parquet"])
def test_table_formats_autodetect(tmp_path, ext):
    df = _frame()
    path = tmp_path / f"data.{ext}"
    if ext == "csv":
        df.to_csv(path, index=False)
    elif ext == "tsv":
        df.to_csv(path, sep="\t", index=False)
    elif ext == "jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_parquet(path)
    ds = load_dataset(path)
    assert ds.modality == "text"
    assert ds.meta["text_col"] == "review"
    assert ds.meta["label_cols"] == ["sentiment"]
    assert ds.tasks[0].classes == ["neg", "pos"]
    assert len(ds.items) == 40


def test_table_multitask_and_explicit_columns(tmp_path):
    df = _frame(60)
    path = tmp_path / "d.csv"
    df.to_csv(path, index=False)
    ds = load_dataset(path, text_col="review", label_col="sentiment,topic")
    assert ds.task_names == ["sentiment", "topic"] and ds.multitask
    assert ds.labels.shape == (60, 2)
    assert ds.tasks[1].classes == ["a", "b", "c"]


def test_table_folder_with_split_files(tmp_path):
    df = _frame(60)
    root = tmp_path / "tables"
    root.mkdir()
    df.iloc[:40].to_csv(root / "train.csv", index=False)
    df.iloc[40:50].to_csv(root / "val.csv", index=False)
    df.iloc[50:].to_csv(root / "test.csv", index=False)
    ds = load_dataset(root)
    assert ds.presplit and {s: len(i) for s, i in ds.splits.items()} == {"train": 40, "val": 10, "test": 10}


def test_table_rows_with_missing_labels_dropped_with_warning(tmp_path, capsys):
    df = _frame(40)
    df.loc[[3, 7], "sentiment"] = None
    path = tmp_path / "d.csv"
    df.to_csv(path, index=False)
    ds = load_dataset(path)
    assert len(ds.items) == 38
    assert "2 row(s)" in capsys.readouterr().err


# --- bad input: one line, exit code 2, no traceback ---


def _assert_one_line_error(r, *words):
    assert r.code == 2, (r.code, r.out, r.err)
    errors = [line for line in r.err_lines if line.startswith("error:")]
    assert len(errors) == 1, r.err
    assert "Traceback" not in r.err
    for w in words:
        assert w in errors[0], (w, errors[0])


def test_error_missing_path(cli, tmp_path):
    _assert_one_line_error(cli("inspect", "--data", str(tmp_path / "nope")), "does not exist", "nope")


def test_error_not_a_dataset_lists_layouts(cli, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.bin").write_bytes(b"\0\1")
    _assert_one_line_error(cli("inspect", "--data", str(tmp_path / "x")), "not a dataset", "image folder", ".csv")


def test_error_empty_folder(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    _assert_one_line_error(cli("inspect", "--data", str(tmp_path / "empty")), "empty")


def test_error_one_class_only(cli, tmp_path):
    root = _tiny_images(tmp_path / "one", classes=("only",))
    _assert_one_line_error(cli("inspect", "--data", str(root)), "single class", "only")


def test_error_class_too_small_after_split(cli, tmp_path):
    root = _tiny_images(tmp_path / "small")
    _png(root / "rare" / "0.png", 99)
    _assert_one_line_error(cli("inspect", "--data", str(root)), "'rare'", "at least 2")


def test_error_every_image_unreadable(cli, tmp_path):
    root = tmp_path / "bad"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            (root / c / f"{i}.png").write_bytes(b"not an image")
    _assert_one_line_error(cli("inspect", "--data", str(root)), "unreadable", "image")


def test_error_table_missing_named_column_lists_columns(cli, tmp_path):
    path = tmp_path / "d.csv"
    _frame().to_csv(path, index=False)
    r = cli("inspect", "--data", str(path), "--label-col", "nope")
    _assert_one_line_error(r, "'nope'", "review", "sentiment", "--label-col")
    r = cli("inspect", "--data", str(path), "--text-col", "body")
    _assert_one_line_error(r, "'body'", "review", "--text-col")


def test_error_empty_label_column(cli, tmp_path):
    df = _frame()
    df["sentiment"] = None
    path = tmp_path / "d.csv"
    df.to_csv(path, index=False)
    _assert_one_line_error(cli("inspect", "--data", str(path), "--label-col", "sentiment"), "empty", "sentiment")


def test_error_bad_split_value(cli, digits_dir):
    _assert_one_line_error(cli("inspect", "--data", str(digits_dir), "--split", "0.7,0.3"), "--split")


# --- recoverable problems: warnings with counts and names ---


def test_warning_corrupt_images_skipped(tmp_path):
    root = _tiny_images(tmp_path / "d")
    (root / "a" / "broken.png").write_bytes(b"garbage")
    (root / "b" / "broken2.jpg").write_bytes(b"")
    ds = load_dataset(root)
    assert len(ds.items) == 20
    w = [w for w in ds.warnings if "unreadable" in w]
    assert w and "2 unreadable" in w[0] and "broken" in w[0]


def test_warning_non_utf8_text_decoded(tmp_path):
    root = tmp_path / "t"
    for c in ("p", "q"):
        (root / c).mkdir(parents=True)
        for i in range(4):
            (root / c / f"{i}.txt").write_text(f"{c} text {i}")
    (root / "p" / "latin.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    ds = load_dataset(root)
    assert any("1 text file(s) are not valid UTF-8" in w and "latin.txt" in w for w in ds.warnings)
    assert any("\ufffd" in t for t in ds.items)


def test_warning_duplicates_across_splits(tmp_path):
    root = tmp_path / "t"
    for c in ("p", "q"):
        (root / c).mkdir(parents=True)
        for i in range(20):
            (root / c / f"{i}.txt").write_text(f"{c} same text" if i < 10 else f"{c} text {i}")
    ds = load_dataset(root)
    assert any("duplicate" in w for w in ds.warnings)


@pytest.mark.skipif(os.name == "nt", reason="symlinks")
def test_symlink_loop_ignored(tmp_path):
    root = _tiny_images(tmp_path / "d")
    os.symlink(root / "a", root / "a" / "loop")
    ds = load_dataset(root)
    assert len(ds.items) == 20
    assert any("symlink loop" in w for w in ds.warnings)


def test_dataset_object_passes_through(digits_dir):
    ds = load_dataset(digits_dir)
    assert load_dataset(ds) is ds


def test_error_is_data_error_in_python(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "missing")
    shutil.rmtree(tmp_path)
