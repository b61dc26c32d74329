"""best/README.md, the exported model's card: Hugging Face layout, and the numbers of summary.csv
(issue 25, item 4)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # a zoo search


@pytest.fixture(scope="module")
def run(zoo, target_dir, tmp_path_factory):
    import autotransfer

    tmp = tmp_path_factory.mktemp("card")
    res = autotransfer.search(target_dir, out=tmp / "run", sources=[zoo["digits-test_resnet"].spec,
                                                                   zoo["shuffled-test_resnet"].spec],
                              strategies=["linear_probe", "full"], trials=4, epochs=2, top_k=1, progress=False,
                              estimators=["logme"], cache_dir=str(tmp / "cache"))
    card = (res.out_dir / "best" / "README.md").read_text()
    front, body = card.removeprefix("---\n").split("\n---\n", 1)
    summary = pd.read_csv(res.out_dir / "leaderboards" / "summary.csv").iloc[0]
    return res, yaml.safe_load(front), body, summary


def test_front_matter_is_a_hugging_face_card_with_the_summary_scores(run):
    _, meta, _, summary = run
    assert meta["library_name"] == "autotransfer" and meta["pipeline_tag"] == "image-classification"
    assert {"autotransfer", "transfer-learning", summary["strategy"]} <= set(meta["tags"])
    results = meta["model-index"][0]["results"]
    scores = {r["dataset"]["split"]: r["metrics"][0] for r in results}
    assert scores["validation"]["type"] == "accuracy"
    assert scores["validation"]["value"] == pytest.approx(summary["val_score"], abs=1e-12)
    assert scores["test"]["value"] == pytest.approx(summary["test_score"], abs=1e-12)
    assert "base_model" not in meta  # a local file is no Hub id


def _section(body: str, title: str) -> str:
    return body.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_prose_holds_the_summary_numbers_and_the_data(run):
    from autotransfer import load_dataset
    from autotransfer.metrics import wilson_interval

    _, _, body, summary = run
    assert body.lstrip("\n").startswith(f"# {summary['best_source']} + {summary['strategy']} for `target`")
    scores = _section(body, "Scores")
    n_test = int(summary["n_test"])
    lo, hi = wilson_interval(round(summary["test_score"] * n_test), n_test)
    assert (lo, hi) == pytest.approx((summary["test_low"], summary["test_high"]), abs=1e-12)
    assert f"test: {summary['test_score']:.4f} (95% interval {lo:.3f}–{hi:.3f}, n = {summary['n_test']})" in scores
    assert f"validation: {summary['val_score']:.4f}" in scores
    data = _section(body, "Data")
    assert f"`target`, fingerprint `{load_dataset(summary['data']).fingerprint}`" in data
    assert str(summary["data"]) not in body  # the card travels; the training machine's path stays behind
    assert (f"train {summary['n_train']}, validation {summary['n_val']}, test {summary['n_test']}") in data
    # per class: the target task has digits 5-9, 20 training images each
    rows = [line for line in data.splitlines() if line.startswith("| `")]
    assert len(rows) == 5 and all(line.split("|")[2].strip() == "20" for line in rows)
    chosen = _section(body, "What it was chosen over")
    assert f"validation {summary['scratch_val_score']:.4f} and test {summary['scratch_test_score']:.4f}" in chosen
    assert "best scratch baseline, `scratch:test_resnet` from random initialisation" in chosen
    assert chosen.index("digits-test_resnet") < chosen.index("shuffled-test_resnet")  # the ranking's order


def test_model_section_names_source_strategy_parameters_and_classes(run):
    res, _, body, summary = run
    model = _section(body, "Model")
    assert f"source: `{summary['best_source']}`" in model and f"strategy: `{summary['strategy']}`" in model
    trials = pd.read_csv(res.out_dir / "leaderboards" / "trials.csv")
    answer = trials[(trials["source"] == summary["best_source"]) & (trials["strategy"] == summary["strategy"])
                    & (trials["val_score"] == summary["val_score"])].iloc[0]
    assert f"parameters: {int(answer['trainable_params']):,} trained of" in model
    assert "5 classes: `5`, `6`, `7`, `8`, `9`" in model
    assert "no calibration" in _section(body, "Limits") and "autotransfer.load_model" in body


def test_the_card_loads_as_the_model_it_describes(run):
    """The card's loading line works on the folder it sits in, and the model scores the card's test number."""
    import autotransfer
    from autotransfer.datasets import load

    res, _, _, summary = run
    model = autotransfer.load_model(res.out_dir / "best")
    ds = load(summary["data"])
    pred = model.predict_names(ds.split_items("test"))
    truth = [ds.tasks[0].classes[k] for k in ds.split_labels("test", 0)]
    acc = sum(p[0] == t for p, t in zip(pred, truth, strict=True)) / len(truth)
    assert math.isclose(acc, summary["test_score"], abs_tol=1e-9)


def test_no_card_for_a_best_folder_that_holds_another_model(run, tmp_path):
    """best/ left by an older run while this answer was trained on another worker gets no card."""
    import json
    import shutil

    import optuna

    from autotransfer._search.card import write_card
    from autotransfer._search.report import read_transferability, trial_rows

    res, _, _, summary = run
    out = tmp_path / "run"
    shutil.copytree(res.out_dir / "best", out / "best")
    (out / "best" / "README.md").unlink()
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{res.out_dir / 'study.db'}")
    rows = trial_rows(study)
    assert write_card(out, study, dict(summary), rows, read_transferability(res.out_dir)) == out / "best" / "README.md"
    cfg = json.loads((out / "best" / "config.json").read_text())
    (out / "best" / "config.json").write_text(json.dumps({**cfg, "strategy": "not-the-answer's"}))
    (out / "best" / "README.md").unlink()
    assert write_card(out, study, dict(summary), rows, []) is None and not (out / "best" / "README.md").exists()


def test_a_scratch_answer_is_called_what_it_is(tmp_path):
    """Negative transfer: the card says the model is the scratch baseline, not a transfer."""
    import json

    import optuna
    from optuna.trial import TrialState, create_trial

    from autotransfer._search.card import write_card
    from autotransfer._search.report import summary_row, trial_rows

    study = optuna.create_study(direction="maximize")
    study.set_user_attr("dataset", {"name": "d", "modality": "text", "tasks": ["label"], "n_train": 8, "n_val": 4,
                                    "n_test": 4, "counts": {"train": {"label": {"a": 4, "b": 4}}}})
    for role, source, strategy, value in (("default", "s", "linear_probe", 0.5), ("scratch", "s", "scratch", 0.75)):
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=value, user_attrs={
            "role": role, "config": {"source": source, "strategy": strategy, "lr": 1e-3, "weight_decay": 0.01,
                                                    "params": {}}}))
    rows = trial_rows(study)
    summary = summary_row(study, rows, {"answer": 1, "baseline": 1, "tests": {1: 0.5}, "negative": True})
    study.set_user_attr("answer", 1)
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "config.json").write_text(json.dumps(
        {"source_name": "s", "strategy": "scratch", "modality": "text", "tasks": [{"name": "label", "classes": ["a", "b"]}]}))
    text = write_card(tmp_path, study, summary, rows, []).read_text()
    assert "A text classifier chosen by `autotransfer search`, trained from scratch" in text
    assert "(negative transfer), so this is the scratch model." in text
    assert "Negative transfer detected for every source" in text  # the summary's note, as a sentence
    assert "| `a` | 4 |" in text and "test: 0.5000 (95% interval" in text
