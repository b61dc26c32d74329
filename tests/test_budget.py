"""--timeout bounds the whole search, on a source whose cost is known: a fake clock that advances a
fixed number of seconds per item read. No assertion here depends on how fast this machine is."""

from __future__ import annotations

import copy

import pandas as pd
import pytest

import autotransfer
import autotransfer.sources as sources_mod

SECONDS_PER_ITEM = 1.0  # what reading one image costs on the fake clock
TIMEOUT = 5000.0


class FakeClock:
    def __init__(self):
        import time

        self.real, self.offset = time.monotonic, 0.0

    def __call__(self) -> float:
        return self.real() + self.offset


@pytest.fixture()
def slow_source(zoo, monkeypatch):
    """``digits-test_resnet`` whose every item read costs SECONDS_PER_ITEM on the search's clock."""
    clock = FakeClock()  # the search's clock: search(..., clock=slow_source)
    real = sources_mod.resolve_source(zoo["digits-test_resnet"].spec)

    class Slow(type(real)):
        def load_item(self, item, train=False):
            clock.offset += SECONDS_PER_ITEM
            return super().load_item(item, train)

        def load_decoded(self, image, train=False):  # an item read from the decode cache costs the same
            clock.offset += SECONDS_PER_ITEM
            return super().load_decoded(image, train)

        def eval_normalization(self):  # no whole-batch reads of the cache: every item goes through the above
            return None

    slow = copy.copy(real)
    slow.__class__ = Slow
    original = sources_mod.resolve_source
    monkeypatch.setattr(sources_mod, "resolve_source",
                        lambda spec, options=None: slow if spec == "slow" else original(spec, options))
    return clock


@pytest.mark.slow
def test_timeout_bounds_ranking_baselines_trials_and_export(slow_source, target_dir, tmp_path):
    res = autotransfer.search(target_dir, out=tmp_path / "run", sources=["slow"], timeout=TIMEOUT, epochs=12,
                              trials=40, estimators=["logme"], progress=False, cache_dir=str(tmp_path / "cache"),
                              stall_trials=0, clock=slow_source)  # the budget under test ends the search, not a stall
    n = res.summary
    # everything, test evaluation and export included, within 10% of --timeout on the fake clock
    assert n["total_seconds"] <= 1.1 * TIMEOUT, n["total_seconds"]
    rows = pd.read_csv(res.out_dir / "leaderboards" / "trials.csv")
    base = rows[rows["role"] == "scratch"].iloc[0]
    probe = rows[rows["strategy"] == "linear_probe"].iloc[0]
    # 12 full epochs of the baseline alone would cost more than the whole budget: it ran a planned,
    # shorter schedule, completed, and is the reference
    assert base["state"] == "COMPLETE" and 2 <= base["epochs_run"] < 12
    assert probe["state"] == "COMPLETE" and probe["trial"] < base["trial"]  # the probe runs first
    # the budget, not --trials, ended the search, and the last trial was stopped by it
    # the budget, not --trials, ended the search: the trial it ended after some epochs completed with its
    # kept epoch (validated like any other) and is a candidate for the answer, not discarded
    assert len(rows) < 40
    cut = rows[rows["stop_reason"].fillna("").str.startswith("the search's time budget ended it")]
    assert len(cut) == 1 and cut.iloc[0]["state"] == "COMPLETE" and cut.iloc[0]["role"] != "scratch"
    assert 1 <= cut.iloc[0]["epochs_run"] < 12 and cut.iloc[0]["best_epoch"] < cut.iloc[0]["epochs_run"]
    assert n["val_score"] == rows.loc[rows["state"] == "COMPLETE", "val_score"].max()
    assert res.best_dir is not None and (res.best_dir / "model.safetensors").is_file()


@pytest.mark.slow
def test_no_sampled_trial_starts_when_the_budget_left_fits_too_few_epochs(slow_source, target_dir, tmp_path,
                                                                           monkeypatch, capsys):
    """The rule that ends the search when what is left would not fit ``MIN_USEFUL_EPOCHS`` of the cheapest
    measured fine-tuning epoch: with an absurd minimum, only the probe, the baseline and the default
    (enqueued) trial run, and the note says why; with the real minimum the same budget samples more."""
    import autotransfer._search.stopping as stopping

    kw = dict(sources=["slow"], timeout=10 * TIMEOUT, epochs=3, trials=8, estimators=["logme"], progress=False,
              cache_dir=str(tmp_path / "cache"), stall_trials=0, clock=slow_source)
    monkeypatch.setattr(stopping, "MIN_USEFUL_EPOCHS", 10**6)
    short = autotransfer.search(target_dir, out=tmp_path / "short", **kw)
    rows = pd.read_csv(short.out_dir / "leaderboards" / "trials.csv")
    assert set(rows["role"]) == {"default", "scratch"} and (rows["state"] == "COMPLETE").all()
    assert "epochs of the cheapest fine-tuning trial so far" in capsys.readouterr().err
    monkeypatch.setattr(stopping, "MIN_USEFUL_EPOCHS", 2)
    roomy = autotransfer.search(target_dir, out=tmp_path / "roomy", **kw)
    assert (pd.read_csv(roomy.out_dir / "leaderboards" / "trials.csv")["role"] == "search").any()


def test_probe_is_never_pruned_by_the_matched_epoch_rule():
    import optuna

    from autotransfer._search.pruner import ScratchBaselinePruner
    from autotransfer._search.record import SCRATCH, SEARCH, TrialRecord

    study = optuna.create_study(direction="maximize")
    pruner = ScratchBaselinePruner(warmup_epochs=0, patience=1, margin=0.0)
    base = optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=0.9,
                                      intermediate_values={e: 0.9 for e in range(12)},
                                      user_attrs=TrialRecord(role=SCRATCH, epoch_seconds=60.0).to_user_attrs())
    study.add_trial(base)

    def trial_at(step: int, val: float, per_epoch: float, planned: int = 12):
        t = optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=val,
                                      intermediate_values={e: val for e in range(step + 1)},
                                      user_attrs=TrialRecord(role=SEARCH, epoch_seconds=per_epoch,
                                                             planned_epochs=planned).to_user_attrs())
        return t

    # far behind scratch at epoch 3 of 12: a fine-tune (60 s/epoch) is pruned, a probe (0.04 s/epoch:
    # 0.36 s left, under 5% of a 60-s baseline epoch) is not, and neither is anything at its last epoch
    assert pruner.prune(study, trial_at(3, 0.5, 60.0))
    assert not pruner.prune(study, trial_at(3, 0.5, 0.04))
    assert not pruner.prune(study, trial_at(11, 0.5, 60.0))


def test_plans_follow_measured_epoch_costs():
    from autotransfer._search.budget import BASELINE_SHARE, RESERVE_FLOOR, Budget, TrialMonitor
    from autotransfer._train import StopTraining

    clock = [0.0]
    b = Budget(0.0, 1000.0, n_test=100, clock=lambda: clock[0])
    b.measured(50, 5.0)  # 0.1 s per item through a backbone: testing two models on 100 items costs 20 s
    assert b.reserve == pytest.approx(RESERVE_FLOOR + 20.0) and b.remaining() == pytest.approx(978.0)
    share = b.share_left()
    assert share == pytest.approx(BASELINE_SHARE * 978.0)
    # a baseline with a third of the share: one 50-s epoch measured, so 12 planned epochs become 2
    base = TrialMonitor(b, 12, soft_deadline=share / 3, min_epochs=2, floor_deadline=share)
    clock[0] = 50.0
    assert base.plan(1, 12, [50.0]) == 2 and not base.stopped
    # the floor of 2 epochs borrows from the rest of the share, never beyond it
    clock[0] = 300.0
    b.share_used = share - 40.0
    tight = TrialMonitor(b, 12, soft_deadline=310.0, min_epochs=2, floor_deadline=340.0)
    clock[0] = 330.0
    assert tight.plan(1, 12, [30.0]) == 1 and tight.stopped == "timeout"
    roomy = TrialMonitor(b, 12, soft_deadline=310.0, min_epochs=2, floor_deadline=400.0)
    assert roomy.plan(1, 12, [30.0]) == 2
    # a transfer trial runs to the hard deadline, and is stopped mid-epoch past it
    ft = TrialMonitor(b, 12, soft_deadline=b.hard_deadline)
    clock[0] = 900.0
    assert ft.plan(3, 12, [20.0, 20.0, 20.0]) == 3 + int((978.0 - 900.0) // 20.0)
    clock[0] = 979.0
    with pytest.raises(StopTraining):
        ft.batch("fine-tune", 5, 0, 10, 12)
    assert ft.stopped == "timeout"
