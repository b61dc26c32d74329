"""``--refit``: the chosen trial retrained on train + val (never test), tested beside it, exported as best/."""

from __future__ import annotations

import json

import pytest
from helpers_final import check_moved_model
from helpers_training import timm_spec

import autotransfer
from autotransfer._search.refit import predicted_seconds, reads_cached_features, resolve_refit, train_and_val
from autotransfer._train import kept_epoch

pytestmark = pytest.mark.usefixtures("one_thread")


def test_keep_last_keeps_the_last_epoch_whatever_the_curve():
    assert kept_epoch([0.9, 0.5, 0.2], 100, "last") == 2
    assert kept_epoch([0.9, 0.5, 0.2], 100, "best") == 0


def test_train_and_val_trains_on_both_and_never_on_test(digits5):
    both = train_and_val(digits5)
    train, val, test = (set(digits5.splits[s].tolist()) for s in ("train", "val", "test"))
    assert set(both.splits["train"].tolist()) == train | val
    assert not set(both.splits["train"].tolist()) & test
    assert both.splits["test"].tolist() == digits5.splits["test"].tolist()
    assert both.fingerprint != digits5.fingerprint  # its features are not the training split's cached ones


def test_auto_refits_below_fifty_items_in_the_smallest_class_and_its_rule_counts_that_class(digits5):
    assert resolve_refit("on", digits5) == (True, "on")
    assert resolve_refit("off", digits5) == (False, "off")
    fewest = min(digits5.class_counts()["train"]["label"].values())
    on, why = resolve_refit("auto", digits5)
    assert on == (fewest < 50) and (f"has {fewest} training items, fewer than 50" in why if on else "at least 50" in why)
    assert resolve_refit("auto", digits5, below=fewest + 1)[0]
    assert not resolve_refit("auto", digits5, below=fewest)[0]


def test_the_refit_is_predicted_from_each_trial_s_seconds_to_its_kept_epoch_scaled_to_train_and_val(digits5,
                                                                                                 tmp_path):
    for name, seconds, epochs_run, best_epoch in (("a", 40.0, 4, 1), ("b", 6.0, 1, 0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(json.dumps(
            {"seconds": seconds, "epochs_run": epochs_run, "best_epoch": best_epoch}))
    n_train, n_val = len(digits5.splits["train"]), len(digits5.splits["val"])
    scale = (n_train + n_val) / n_train
    assert predicted_seconds(digits5, [tmp_path / "a"]) == pytest.approx(40.0 * 2 / 4 * scale)
    assert predicted_seconds(digits5, [tmp_path / "a", tmp_path / "b"]) == pytest.approx((20.0 + 6.0) * scale)


def test_the_prediction_scales_a_subsample_probe_to_every_item_and_adds_the_extraction_it_must_redo(digits5,
                                                                                                     tmp_path):
    n_train, n_val = len(digits5.splits["train"]), len(digits5.splits["val"])
    for name, strategy, items in (("probe", "linear_probe", n_train // 4), ("lpft", "lp_ft", None), ("full", "full", None)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(json.dumps(
            {"seconds": 2.0, "epochs_run": 1, "best_epoch": 0, "strategy": strategy, "train_items": items}))
    # a probe solved on a quarter of the training split: its solve scaled to train + val, four times more
    assert predicted_seconds(digits5, [tmp_path / "probe"]) == pytest.approx(2.0 * (n_train + n_val) / (n_train // 4))
    # strategies that read cached features extract train + val anew in a refit (a new split): that is added
    assert reads_cached_features(tmp_path / "probe") and reads_cached_features(tmp_path / "lpft")
    assert not reads_cached_features(tmp_path / "full")
    extraction = {tmp_path / "lpft": 0.01}
    base = predicted_seconds(digits5, [tmp_path / "lpft"])
    assert predicted_seconds(digits5, [tmp_path / "lpft"], extraction) == pytest.approx(base + 0.01 * (n_train + n_val))


@pytest.mark.slow
def test_a_probe_answer_solved_on_ranking_s_subsample_is_re_solved_on_every_training_item(zoo, digits_dir, tmp_path,
                                                                                        monkeypatch):
    from autotransfer import rank_plan
    from autotransfer.datasets import load
    from autotransfer.loading import load_model

    ds = load(digits_dir)
    n_train, n_val = len(ds.splits["train"]), len(ds.splits["val"])
    # extraction timed at 1 s an item: ranking's share (a quarter of 1,000 s, planned to 80%) fits no more than
    # the floor, so ranking and the probe run on a stratified subsample of 500 training items
    monkeypatch.setattr(rank_plan, "seconds_per_item", lambda *a, **k: 1.0)
    common = dict(sources=[zoo["digits-test_resnet"].spec], trials=1, epochs=2, timeout=1000, estimators=["logme"],
                  strategies=["linear_probe"], progress=False, cache_dir=str(tmp_path / "cache"))
    res = autotransfer.search(digits_dir, out=tmp_path / "run", refit="off", **common)
    s = res.summary
    cfg = json.loads((res.best_dir / "config.json").read_text())
    trial = cfg["completed"]["trial"]
    searched = json.loads((res.out_dir / "trials" / f"trial_{trial}" / "result.json").read_text())
    sub = searched["train_items"]  # the trial as searched solved on the subsample (stratified: about 500)
    assert 490 <= sub <= 500 and cfg["completed"] == {"trial": trial, "train_items": n_train, "subsample_items": sub}
    assert s["exported"] == "completed" and s["refit"] == "off"
    assert s["completed"].startswith(f"re-solved on all {n_train} training items (ranking's subsample: {sub})")
    # best/ is the re-solved probe, and summary.csv's test score is its own
    preds, _ = load_model(res.best_dir).predict(ds.split_items("test"))
    assert float((preds[:, 0] == ds.split_labels("test")[:, 0]).mean()) == pytest.approx(s["test_score"])
    assert s["test_score"] != s["test_score_single"]
    assert "re-solved on every training item; as searched" in (res.out_dir / "report.md").read_text()
    assert "ranking's stratified subsample" in (res.best_dir / "README.md").read_text()
    # with --refit on, the refit starts from the re-solved probe (its L2) and trains on train + val
    common["cache_dir"] = str(tmp_path / "cache2")  # cached features would cost ranking nothing: no subsample
    run = autotransfer.search(digits_dir, out=tmp_path / "run2", refit="on", **common)
    again = run.summary
    assert again["exported"] == "refit" and again["refit_train_items"] == n_train + n_val
    assert again["completed"].startswith(f"re-solved on all {n_train} training items")
    completed = json.loads((run.out_dir / "trials" / f"completed_{trial}" / "result.json").read_text())
    refit_cfg = json.loads((run.best_dir / "config.json").read_text())["refit"]
    assert refit_cfg["l2"] == {k[:-3]: v for k, v in completed["params"].items() if k.endswith("_l2")}


@pytest.mark.slow
def test_a_refit_that_would_overrun_the_timeout_is_not_applied(zoo, target_dir, tmp_path, monkeypatch):
    from autotransfer._search import final

    monkeypatch.setattr(final, "predicted_seconds", lambda dataset, dirs, extraction=None: 1e9)  # longer than any --timeout
    res = autotransfer.search(
        target_dir, out=tmp_path / "run", sources=[zoo["digits-test_resnet"].spec], trials=2, epochs=2,
        estimators=["logme"], strategies=["linear_probe"], progress=False, cache_dir=str(tmp_path / "cache"),
        refit="on")
    s = res.summary
    assert s["refit"].startswith("on; not applied: refitting should take 1000000000 s")
    assert s["exported"] == "single" and s["test_score"] == s["test_score_single"] and s["test_score_refit"] is None
    assert not list((res.out_dir / "trials").glob("refit_*"))


def test_stop_after_replays_the_first_epochs_of_the_same_schedule(digits5, tmp_path):
    spec = timm_spec(tmp_path, "test_resnet")
    full = autotransfer.train(digits5, spec, "partial", depth=1, epochs=4, evaluate_test=False)
    cut = autotransfer.train(digits5, spec, "partial", depth=1, epochs=4, stop_after=2, keep="last",
                             evaluate_test=False)
    assert cut.epochs_run == 2 and cut.best_epoch == 1
    assert cut.val_curve == pytest.approx(full.val_curve[:2])  # the same schedule, cut: the same first epochs
    assert cut.train_items == len(digits5.splits["train"])


def test_a_probe_re_solves_at_the_l2_it_is_given(digits5, tmp_path):
    spec = timm_spec(tmp_path, "test_resnet")
    chosen = autotransfer.train(digits5, spec, "linear_probe", evaluate_test=False, cache_dir=tmp_path / "c")
    l2 = {k[:-3]: v for k, v in chosen.params.items() if k.endswith("_l2")}
    assert l2
    again = autotransfer.train(digits5, spec, "linear_probe", evaluate_test=False, cache_dir=tmp_path / "c", l2=l2)
    assert {k: again.params[f"{k}_l2"] for k in l2} == l2
    assert again.val_score == pytest.approx(chosen.val_score)
    other = {k: v * 1000 for k, v in l2.items()}
    stronger = autotransfer.train(digits5, spec, "linear_probe", evaluate_test=False, cache_dir=tmp_path / "c",
                                  l2=other)
    assert {k: stronger.params[f"{k}_l2"] for k in l2} == other


@pytest.mark.slow
def test_refit_trains_on_train_and_val_and_the_moved_model_predicts(zoo, target_dir, tmp_path, cli_subprocess):
    res = autotransfer.search(
        target_dir, out=tmp_path / "run", sources=[zoo["digits-test_resnet"].spec], trials=3, epochs=3,
        estimators=["logme"], strategies=["linear_probe", "partial"], progress=False,
        cache_dir=str(tmp_path / "cache"), refit="on")
    s = res.summary
    n_train, n_val = int(s["n_train"]), int(s["n_val"])
    cfg = json.loads((res.best_dir / "config.json").read_text())
    assert cfg["refit"]["train_items"] == n_train + n_val  # train + val, never test
    assert s["refit_train_items"] == n_train + n_val and s["exported"] == "refit" and s["refit"] == "on"
    assert s["test_score"] == s["test_score_refit"] and s["test_score_single"] is not None
    for name in ("single", "refit"):  # both test scores with their intervals
        assert s[f"test_{name}_low"] <= s[f"test_score_{name}"] <= s[f"test_{name}_high"]
    assert (s["test_refit_low"], s["test_refit_high"]) == (s["test_low"], s["test_high"])
    single = json.loads((res.out_dir / "trials" / f"trial_{int(cfg['refit']['trial'])}" / "result.json").read_text())
    assert cfg["refit"]["epochs"] == single["best_epoch"] + 1  # exactly the kept epoch's count
    report = (res.out_dir / "report.md").read_text()
    assert "Refit on train + val" in report
    assert f"(refit on train + val; as searched {s['test_score_single']:.3f})" in report  # on the answer line
    card = (res.best_dir / "README.md").read_text()  # the card says what the folder holds, with both test scores
    assert f"retrained on train + validation ({n_train + n_val} items)" in card
    assert f"as searched scored {s['test_score_single']:.4f} on test" in card and f"{s['test_score_refit']:.4f}" in card
    check_moved_model(cli_subprocess, res.best_dir, res.out_dir, target_dir / "test", tmp_path, s["test_score_refit"])


def test_bad_refit_and_ensemble_options_are_one_line_naming_the_fix():
    from autotransfer import AutotransferError
    from autotransfer._search.config import SearchConfig

    with pytest.raises(AutotransferError, match=r"--refit 'sometimes' is not one of auto, on, off; pass auto, on or off"):
        SearchConfig(refit="sometimes")
    with pytest.raises(AutotransferError, match="--ensemble -2 is not allowed"):
        SearchConfig(ensemble=-2)


def test_the_report_says_what_best_is_and_an_older_summary_reads_as_before():
    from autotransfer._search.report import _final_md

    assert _final_md({"test_score": 0.9}) == []  # a run folder written before --refit and --ensemble
    text = _final_md({"exported": "refit", "test_score_single": 0.81, "test_score_refit": 0.86,
                      "refit": "on", "refit_train_items": 120, "refit_seconds": 3.5})[0]
    assert "**Exported as best/:** refit; the chosen trial as searched: test 0.8100." in text
    assert "Refit on train + val (120 items, 3.5 s): test 0.8600." in text
    text = _final_md({"exported": "ensemble", "test_score_single": 0.8, "ensemble_members": "trial 0 x0.6; trial 1 x0.4",
                      "ensemble_val_score": 0.811, "ensemble_test_score": 0.83, "inference_cost": 2.0})[0]
    assert "Ensemble of trial 0 x0.6; trial 1 x0.4: validation 0.8110, test 0.8300, inference cost 2.00x" in text


def _ctx(dataset, source, epochs):
    from types import SimpleNamespace

    from autotransfer._train_config import TrainConfig

    plan = SimpleNamespace(dataset=dataset, epochs=epochs, source_options=None,
                           train_config=TrainConfig(epochs=epochs, seed=0, device="cpu", evaluate_test=False))
    return SimpleNamespace(plan=plan, screen=SimpleNamespace(sources={source.name: source}))


@pytest.mark.parametrize("role", ["search", "scratch"])
def test_refit_replays_a_fine_tuned_or_scratch_trial_on_train_and_val(role, digits5, tmp_path):
    from types import SimpleNamespace

    from autotransfer._search.record import TrialRecord
    from autotransfer._search.refit import refit
    from autotransfer.sources import resolve_source

    source = resolve_source(timm_spec(tmp_path, "test_resnet"))
    pretrained = role != "scratch"
    trained = autotransfer.train(digits5, source, "partial", depth=1, epochs=4, lr=1e-3, pretrained=pretrained,
                                 evaluate_test=False)
    trained.save(tmp_path / "trial_0")
    record = TrialRecord(role=role, baseline_source=source.name if role == "scratch" else None, planned_epochs=4,
                         best_epoch=trained.best_epoch,
                         config={"source": source.name, "strategy": "partial", "lr": 1e-3, "weight_decay": 0.01,
                                 "params": {"depth": 1}})
    trial = SimpleNamespace(number=0, user_attrs=record.to_user_attrs())
    result = refit(_ctx(digits5, source, 4), trial, tmp_path / "trial_0")
    n = len(digits5.splits["train"]) + len(digits5.splits["val"])
    assert result.train_items == n and result.model.config["refit"]["train_items"] == n
    assert result.epochs_run == trained.best_epoch + 1 and result.best_epoch == trained.best_epoch  # the last, kept
    assert result.model.config["refit"]["schedule_epochs"] == 4
    assert result.model.config["pretrained"] is pretrained
    assert result.batch_size == trained.batch_size
