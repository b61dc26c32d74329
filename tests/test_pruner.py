"""ScratchBaselinePruner on real Optuna studies with hand-made curves."""

from __future__ import annotations

import optuna
import pytest

from autotransfer._search.pruner import BEHIND_SCRATCH, CANNOT_CATCH_UP, ScratchBaselinePruner
from autotransfer._search.record import SCRATCH, TrialRecord
from autotransfer._train import standard_error

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _run(study, curve, role="search", planned=None):
    """Report ``curve`` epoch by epoch; return the epoch at which the trial was pruned (or None).
    ``planned``: the trial's planned epoch count, recorded the way the search records it."""
    trial = study.ask()
    TrialRecord(role=role, planned_epochs=planned).save(trial)
    for epoch, v in enumerate(curve):
        trial.report(v, epoch)
        if trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return epoch
    study.tell(trial, curve[-1])
    return None


@pytest.fixture()
def study():
    pruner = ScratchBaselinePruner(warmup_epochs=1, patience=2, margin=0.02)
    s = optuna.create_study(direction="maximize", pruner=pruner)
    _run(s, [0.3, 0.5, 0.6, 0.7, 0.75], role=SCRATCH)
    return s


def test_trial_behind_scratch_is_pruned_after_patience(study):
    assert _run(study, [0.2, 0.3, 0.35, 0.4, 0.4]) == 2  # behind at epochs 1 and 2
    assert study.pruner.reasons[1] == BEHIND_SCRATCH


def test_warmup_is_respected(study):
    # far behind only at epoch 0, then ahead: never pruned
    assert _run(study, [0.0, 0.6, 0.7, 0.8, 0.9]) is None


def test_margin_is_respected(study):
    # always 0.01 behind: inside the margin
    assert _run(study, [0.29, 0.49, 0.59, 0.69, 0.74]) is None


def test_streak_must_be_consecutive(study):
    # behind at 1, ahead at 2, behind at 3, ahead at 4: never two in a row
    assert _run(study, [0.3, 0.4, 0.7, 0.6, 0.8]) is None


def test_baseline_is_never_pruned():
    s = optuna.create_study(direction="maximize", pruner=ScratchBaselinePruner(0, 1, 0.0))
    _run(s, [0.9, 0.9, 0.9], role=SCRATCH)
    assert _run(s, [0.1, 0.1, 0.1], role=SCRATCH) is None


def test_baseline_last_value_stands_for_later_epochs(study):
    assert _run(study, [0.3, 0.5, 0.6, 0.7, 0.75, 0.5, 0.5, 0.5]) == 6


def test_inner_pruner_recorded_under_its_name():
    inner = optuna.pruners.ThresholdPruner(lower=0.5)
    s = optuna.create_study(direction="maximize", pruner=ScratchBaselinePruner(1, 2, 0.02, inner=inner))
    _run(s, [0.1, 0.1, 0.1], role=SCRATCH)
    assert _run(s, [0.3, 0.3, 0.3]) == 0
    assert s.pruner.reasons[1] == "efficiency (threshold)"


def test_bad_options_name_the_value():
    with pytest.raises(ValueError, match="patience=0"):
        ScratchBaselinePruner(patience=0)


def test_reference_is_the_best_baseline_at_each_epoch():
    s = optuna.create_study(direction="maximize", pruner=ScratchBaselinePruner(1, 2, 0.02))
    _run(s, [0.3, 0.5, 0.6, 0.7, 0.75], role=SCRATCH)  # e.g. the top source's architecture
    _run(s, [0.2, 0.4, 0.7, 0.8, 0.9], role=SCRATCH)  # another architecture, slower start, better end
    curves = ScratchBaselinePruner.baseline_curves(s)
    assert [ScratchBaselinePruner.reference(curves, e) for e in range(6)] == [0.3, 0.5, 0.7, 0.8, 0.9, 0.9]
    # ahead of the first baseline all along, but behind the second from epoch 2: pruned at epoch 3
    assert _run(s, [0.3, 0.55, 0.65, 0.75, 0.8]) == 3
    assert s.pruner.reasons[2] == BEHIND_SCRATCH
    # within the margin of the best baseline everywhere: kept
    assert _run(s, [0.3, 0.5, 0.69, 0.79, 0.89]) is None


def test_running_baseline_short_curve_counts_with_its_last_value():
    curves = [{0: 0.3, 1: 0.5, 2: 0.6}, {0: 0.4}]
    assert ScratchBaselinePruner.reference(curves, 0) == 0.4
    assert ScratchBaselinePruner.reference(curves, 1) == 0.5
    assert ScratchBaselinePruner.reference(curves, 5) == 0.6
    assert ScratchBaselinePruner.reference([], 0) is None


def test_one_baseline_per_distinct_architecture_best_ranked_first():
    from autotransfer._search.baselines import baseline_sources

    arch = {"a": "resnet", "b": "vit", "c": "resnet", "d": "convnext"}
    assert baseline_sources(arch, ["c", "a", "b", "d"], None) == ["c", "b", "d"]
    assert baseline_sources(arch, ["c", "a", "b", "d"], 2) == ["c", "b"]
    assert baseline_sources(arch, ["a", "c"], None) == ["a"]
    assert baseline_sources({}, ["x", "y"], None) == ["x", "y"]  # unknown architecture: the source's own name


def test_one_baseline_per_architecture_family_its_cheapest_member():
    from autotransfer._search.baselines import architecture_family, baseline_sources

    assert {architecture_family(a) for a in ("tf_efficientnet_lite0", "tf_efficientnet_lite2")} == {
        "tf_efficientnet_lite"}
    assert architecture_family("resnet50") == architecture_family("resnet18") == "resnet"
    assert architecture_family("convnext_tiny") == architecture_family("convnext_small") == "convnext"
    assert architecture_family("efficientnet_b3") == "efficientnet"
    assert architecture_family("test_resnet") == "test_resnet" != architecture_family("test_vit")
    assert architecture_family("vit_small_patch16_224") != architecture_family("vit_base_patch16_224")
    arch = {"l2": "tf_efficientnet_lite2", "l0": "tf_efficientnet_lite0", "l1": "tf_efficientnet_lite1",
            "r": "test_resnet"}
    cost = {"l0": 1.0, "l1": 2.0, "l2": 3.0, "r": 0.1}.__getitem__
    # lite2 ranks first, but lite0 is its family's cheapest member; test_resnet is another family
    assert baseline_sources(arch, ["l2", "l1", "r", "l0"], None, cost) == ["l0", "r"]
    assert baseline_sources(arch, ["l2", "l1", "r", "l0"], None) == ["l2", "r"]  # no cost: best-ranked


def test_trial_that_cannot_catch_up_with_the_best_finished_one_is_pruned():
    s = optuna.create_study(direction="maximize", pruner=ScratchBaselinePruner(warmup_epochs=1, patience=2,
                                                                               margin=0.02))
    _run(s, [0.2, 0.3, 0.4], role=SCRATCH)  # a weak baseline: the scratch rule never fires
    _run(s, [0.9], planned=1)  # a finished probe, val 0.9
    # epoch 4: 0.82 + its steepest recent gain 0.1 × 3 epochs left = 1.12 ≥ 0.88, kept; epoch 5:
    # 0.83 + 0.02 × 2 = 0.87 < 0.9 - 0.02, pruned
    assert _run(s, [0.5, 0.6, 0.7, 0.8, 0.82, 0.83, 0.84, 0.85], planned=8) == 5
    assert s.pruner.reasons[2] == CANNOT_CATCH_UP
    # a steep learner far behind at the same epoch is kept: it can still get there
    assert _run(s, [0.2, 0.4, 0.6, 0.8, 0.9, 0.92, 0.93, 0.93], planned=8) is None


def test_catch_up_rule_needs_patience_and_a_plan():
    s = optuna.create_study(direction="maximize", pruner=ScratchBaselinePruner(warmup_epochs=1, patience=2,
                                                                               margin=0.02))
    _run(s, [0.95], planned=1)
    assert _run(s, [0.1, 0.1, 0.1, 0.1]) is None  # no planned epochs recorded: the rule does not apply
    assert _run(s, [0.1, 0.1, 0.1, 0.1], planned=4) == 3  # flat and far behind, at warm-up + patience
    assert _run(s, [0.94, 0.94, 0.94, 0.94], planned=4) is None  # inside the margin


def test_converged_curve_ends_at_its_best_epoch_when_more_epochs_cannot_raise_it():
    p = ScratchBaselinePruner(warmup_epochs=1, patience=2, margin=0.02)
    # lite0's LP-FT on the imagenet task: peak at epoch 2 of 8, then flat / lower
    curve = [0.733, 0.893, 0.933, 0.907, 0.907, 0.913, 0.92, 0.92]
    stops = [e for e in range(len(curve)) if p.converged(dict(enumerate(curve[:e + 1])), 8) is not None]
    assert stops[0] == 5 and p.converged(dict(enumerate(curve[:6])), 8) == 2
    # with the best's standard error on 150 val images (0.020) as the band: 0.913 and 0.92 are within it,
    # so the run trains on to the end of its schedule (its last epoch is the one kept)
    band = standard_error(0.933, 150)
    assert [e for e in range(len(curve)) if p.converged(dict(enumerate(curve[:e + 1])), 8, band) is not None] == []
    assert p.converged(dict(enumerate([0.733, 0.893, 0.933, 0.88, 0.88, 0.88])), 8, band) == 2  # out of it: stops
    # the best is only 2 epochs old (= patience): not yet
    assert p.converged(dict(enumerate([0.5, 0.9, 0.8, 0.8])), 8) is None
    # still climbing steeply enough to pass its best in the epochs left: kept
    assert p.converged(dict(enumerate([0.9, 0.6, 0.7, 0.8])), 8) is None
    # a climb that cannot pass 0.9 in the one epoch left: stops
    assert p.converged(dict(enumerate([0.9, 0.6, 0.7, 0.75])), 5) == 0
    # a tie with the best is no gain (the first epoch at the maximum is the one kept)
    assert p.converged(dict(enumerate([0.9, 0.9, 0.9, 0.9])), 8) == 0
    # the last planned epoch: nothing left to save; no plan: no rule
    assert p.converged(dict(enumerate([0.9, 0.5, 0.5, 0.5])), 4) is None
    assert p.converged(dict(enumerate([0.9, 0.5, 0.5, 0.5])), None) is None


def test_the_median_rule_compares_with_fine_tuning_trials_only():
    """A scratch baseline's low curve and a probe's single point stay out of the median's reference: a trial
    below the one completed fine-tuning trial at the same epoch is pruned after the warmup, where the
    baseline (far below, and stopped after 2 epochs) would have held the median down."""
    from autotransfer._search.pruner import FineTuningPeers, make_inner_pruner

    s = optuna.create_study(direction="maximize",
                            pruner=ScratchBaselinePruner(1, 2, 0.0, inner=make_inner_pruner("median", 1)))
    _run(s, [0.1, 0.12], role=SCRATCH)
    _run(s, [0.95], role="default")  # a probe: one point
    assert _run(s, [0.5, 0.8, 0.9, 0.92], role="default") is None  # the first fine-tuning trial completes
    peers = FineTuningPeers(s)
    assert [t.number for t in peers.get_trials(deepcopy=False)] == [2] and peers.direction == s.direction
    assert _run(s, [0.4, 0.6, 0.7, 0.9]) == 1  # below 0.8 at epoch 1: pruned there
    assert s.pruner.reasons[3] == "efficiency (median)"
    assert _run(s, [0.5, 0.85, 0.9, 0.95]) is None  # above it: runs on


def test_the_halving_pruner_runs_on_the_fine_tuning_peers_too():
    from autotransfer._search.pruner import make_inner_pruner

    s = optuna.create_study(direction="maximize",
                            pruner=ScratchBaselinePruner(1, 2, 0.0, inner=make_inner_pruner("halving", 1)))
    _run(s, [0.1, 0.12], role=SCRATCH)
    assert _run(s, [0.5, 0.8, 0.9, 0.92], role="default") is None
    assert _run(s, [0.5, 0.85, 0.9, 0.95]) is None
    pruned = _run(s, [0.2, 0.3, 0.3, 0.3])  # far below both fine-tuning trials at the rung
    assert pruned is not None and s.pruner.reasons[3] == "efficiency (successivehalving)"
