"""The search's stopping rules (autotransfer._search.stopping), each alone, on tiny hand-made studies."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from autotransfer._search.record import DEFAULT, SCRATCH, SEARCH, TrialRecord
from autotransfer._search.stopping import (
    PerfectScore,
    Stalled,
    TooLittleTime,
    cheapest_epoch,
    counted,
    perfect_trial,
    stalled,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
PROBE = {"source": "a", "strategy": "linear_probe"}


def _study(*trials: tuple[TrialState, float | None, TrialRecord]) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for state, value, record in trials:
        study.add_trial(create_trial(state=state, value=value, user_attrs=record.to_user_attrs(),
                                     intermediate_values={0: value} if value is not None else {}))
    return study


def _done(value: float, role: str = SEARCH, **attrs) -> tuple[TrialState, float, TrialRecord]:
    return TrialState.COMPLETE, value, TrialRecord(role=role, **attrs)


def test_counted_leaves_out_the_probes_beyond_the_top_k():
    study = _study(_done(0.5, DEFAULT, fixed=PROBE), _done(0.6, DEFAULT, fixed={**PROBE, "source": "b"}),
                   _done(0.4, DEFAULT, fixed={**PROBE, "source": "c"}), _done(0.7))
    assert counted(study, top_probes=3) == 4
    assert counted(study, top_probes=1) == 2  # two probes of sources outside the top-k are ranking's
    skipped = (TrialState.PRUNED, None, TrialRecord(role=SCRATCH, skipped="share spent"))
    assert counted(_study(_done(0.7), skipped), top_probes=0) == 1  # a skipped baseline never counts


def test_cheapest_epoch_is_the_cheapest_finished_fine_tuning():
    assert cheapest_epoch(_study()) is None
    study = _study(_done(0.5, DEFAULT, fixed=PROBE, epoch_seconds=0.1), _done(0.6, SCRATCH, epoch_seconds=2.0),
                   _done(0.7, epoch_seconds=9.0), (TrialState.PRUNED, 0.2, TrialRecord(role=SEARCH, epoch_seconds=4.0)))
    assert cheapest_epoch(study) == 4.0  # not the probe's, not the baseline's; a pruned one counts


def test_a_perfect_score_stops_once_nothing_runs():
    study = _study(_done(0.9), _done(1.0), _done(1.0))
    assert perfect_trial(study) == 1  # the first of the ties
    assert "trial 1 reached validation accuracy 1.0" in PerfectScore().reason(study)
    assert PerfectScore().reason(_study(_done(0.99))) is None
    study.ask()  # a trial still running may change nothing, but the rule waits for it
    assert perfect_trial(study) is None and PerfectScore().reason(study) is None


def test_stalled_counts_sampled_trials_after_the_first_best():
    study = _study(_done(0.5, DEFAULT, fixed=PROBE), _done(0.8), _done(0.8), _done(0.7, SCRATCH),
                   (TrialState.PRUNED, 0.3, TrialRecord(role=SEARCH)), _done(0.6))
    assert stalled(study) == 3  # trials 2, 4 and 5: sampled, after trial 1 reached 0.8 (the baseline is not)
    assert Stalled(3).reason(study) == "the last 3 sampled trials did not raise the best validation score"
    assert Stalled(4).reason(study) is None
    assert stalled(_study()) == 0
    with pytest.raises(ValueError, match="trials must be at least 1"):
        Stalled(0)


def test_too_little_time_when_the_budget_left_fits_too_few_epochs():
    study = _study(_done(0.7, epoch_seconds=30.0))
    budget = SimpleNamespace(remaining=lambda: 50.0)
    assert "50 s of the time budget are left, under 2 epochs" in TooLittleTime(budget, 2).reason(study)
    assert TooLittleTime(budget, 1).reason(study) is None
    assert TooLittleTime(budget, 2).reason(_study()) is None  # nothing measured yet: no reason to stop
    with pytest.raises(ValueError, match="min_epochs must be at least 1"):
        TooLittleTime(budget, 0)
