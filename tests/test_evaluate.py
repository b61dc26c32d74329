"""``autotransfer evaluate``: scores an exported model on labelled data, through the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from helpers_models import tiny_image_model
from helpers_training import make_tiny_bert, write_digits

import autotransfer
from autotransfer.data.offline import write_bbc_folder
from autotransfer.datasets import load
from autotransfer.metrics import bootstrap_interval, wilson_interval

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return tiny_image_model(tmp_path_factory.mktemp("evaluate"), per_class=15, epochs=2)


def _expected(best, data, classes):
    """Accuracy, balanced accuracy, macro-F1 and the confusion matrix, computed here by hand."""
    model = autotransfer.load_model(best)
    ds = load(data, split="1,0,0")
    y = np.array([classes.index(ds.tasks[0].classes[k]) for k in ds.labels[:, 0]])
    pred = model.predict(ds.items)[0][:, 0]
    conf = np.zeros((len(classes), len(classes)), int)
    np.add.at(conf, (y, pred), 1)
    present = sorted(set(y))
    recall = [conf[k, k] / conf[k].sum() for k in present]
    f1 = []
    for k in sorted(set(y) | set(pred)):
        p = conf[k, k] / conf[:, k].sum() if conf[:, k].sum() else 0.0
        r = conf[k, k] / conf[k].sum() if conf[k].sum() else 0.0
        f1.append(2 * p * r / (p + r) if p + r else 0.0)
    return (y == pred).mean(), np.mean(recall), np.mean(f1), conf


def test_evaluate_json_numbers_and_confusion_csv(cli, trained, tmp_path):
    best, data = trained
    out = tmp_path / "conf.csv"
    r = cli("evaluate", "--model", str(best), "--data", str(data), "--json", "--out", str(out))
    assert r.code == 0, r.err
    res = json.loads(r.out)
    [task] = res["tasks"]
    assert task["name"] == "label" and task["n"] == 45 and res["n_items"] == 45 and res["unreadable"] == {}
    acc, bal, f1, conf = _expected(best, data, task["classes"])
    assert task["accuracy"] == pytest.approx(acc) and task["balanced_accuracy"] == pytest.approx(bal)
    assert task["macro_f1"] == pytest.approx(f1)
    assert task["confusion"] == conf.tolist()
    # 95% intervals: Wilson's for accuracy (45 items), the stratified bootstrap's for the others
    correct = int(np.trace(conf))
    assert task["intervals"]["accuracy"] == pytest.approx(list(wilson_interval(correct, 45)))
    y, pred = np.repeat(np.arange(3), conf.sum(1)), np.concatenate([np.repeat(np.arange(3), row) for row in conf])
    for name in ("balanced_accuracy", "macro_f1"):
        low, high = bootstrap_interval(name, y, pred)
        assert task["intervals"][name] == pytest.approx([low, high]) and low <= task[name] <= high
    for k, c in enumerate(task["classes"]):
        assert task["per_class"][c]["recall"] == pytest.approx(conf[k, k] / conf[k].sum())
        assert task["per_class"][c]["support"] == 15
    assert res["confusion_csv"] == str(out)
    df = pd.read_csv(out, dtype={"true": str})
    assert list(df.columns) == ["task", "true", "pred[0]", "pred[1]", "pred[2]"]
    assert df["true"].tolist() == ["0", "1", "2"]
    assert df[["pred[0]", "pred[1]", "pred[2]"]].to_numpy().tolist() == conf.tolist()


def test_evaluate_table_output_and_a_subset_of_classes(cli, trained, tmp_path):
    best, data = trained
    sub = tmp_path / "sub"
    for c in ("1", "2"):
        shutil.copytree(data / c, sub / c)
    r = cli("evaluate", "--model", str(best), "--data", str(sub), "--out", str(tmp_path / "c.csv"))
    assert r.code == 0, r.err
    assert "task 'label': 30 items" in r.out and "balanced accuracy" in r.out and "macro-F1" in r.out
    assert f"wrote the confusion matrix to {tmp_path / 'c.csv'}" in r.out
    df = pd.read_csv(tmp_path / "c.csv", dtype={"true": str})
    assert df["true"].tolist() == ["0", "1", "2"] and df.iloc[0, 2:].sum() == 0  # no true 0s in this data
    assert df.iloc[1:, 2:].to_numpy().sum() == 30


def test_evaluate_unknown_classes_is_one_line_listing_both_sets(cli, trained, tmp_path):
    best, data = trained
    bad = tmp_path / "bad"
    shutil.copytree(data / "0", bad / "0")
    shutil.copytree(data / "1", bad / "cat")
    out = tmp_path / "c.csv"
    r = cli("evaluate", "--model", str(best), "--data", str(bad), "--out", str(out))
    assert r.code == 2 and "Traceback" not in r.err
    errors = [line for line in r.err_lines if line.startswith("error:")]
    assert len(errors) == 1 and len(r.err_lines) == 1
    assert "cat" in errors[0] and "the data's classes: 0, cat" in errors[0] and "the model's: 0, 1, 2" in errors[0]
    assert not out.exists()


def test_evaluate_text_model_on_a_table(cli, tmp_path):
    bbc = load(write_bbc_folder(tmp_path / "bbc", per_class=10))
    rows = [{"body": t, "topic": bbc.tasks[0].classes[y]} for t, y in zip(bbc.items, bbc.labels[:, 0], strict=False)]
    pd.DataFrame(rows).to_csv(tmp_path / "news.csv", index=False)
    ds = load(tmp_path / "news.csv", label_col="topic")
    r = autotransfer.train(ds, make_tiny_bert(tmp_path / "bert", ds.items, vocab_size=500), "linear_probe",
                           epochs=1, device="cpu")
    best = r.save(tmp_path / "best")
    res = cli("evaluate", "--model", str(best), "--data", str(tmp_path / "news.csv"), "--json",
              "--out", str(tmp_path / "c.csv"))
    assert res.code == 0, res.err
    [task] = json.loads(res.out)["tasks"]
    assert task["name"] == "topic" and task["n"] == 50
    assert sum(map(sum, task["confusion"])) == 50
    assert task["accuracy"] == pytest.approx(np.trace(np.array(task["confusion"])) / 50)
    # an image folder for a text model: one line
    img = write_digits(tmp_path / "digits", classes=range(2), per_class=4, size=8)
    wrong = cli("evaluate", "--model", str(best), "--data", str(img), "--out", str(tmp_path / "x.csv"))
    assert wrong.code == 2 and [line for line in wrong.err_lines if line.startswith("error:")]
    assert "takes text" in wrong.err and "Traceback" not in wrong.err
