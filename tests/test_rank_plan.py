"""Ranking within its share of the budget: the plan from timed batches, the subsample, the deadline."""

from __future__ import annotations

import numpy as np
import pytest

from autotransfer._rank import plan_and_rank, rank_sources
from autotransfer.datasets import load
from autotransfer.features import extract
from autotransfer.rank_plan import PLAN_FILL, RankDeadline, min_items, plan_ranking
from autotransfer.sources import resolve_source

pytestmark = pytest.mark.slow  # every test ranks two sources of the digits zoo


@pytest.fixture(scope="module")
def digits(digits_dir):
    return load(digits_dir)  # sklearn's 1,797 digits, 10 classes, split by the tool


@pytest.fixture(scope="module")
def two(zoo):
    return [resolve_source(zoo["digits-test_resnet"].spec), resolve_source(zoo["shuffled-test_resnet"].spec)]


def test_the_plan_ranks_everything_subsamples_or_leaves_the_costliest_out(digits, two, tmp_path):
    n_train, n_val = len(digits.splits["train"]), len(digits.splits["val"])
    cost = {two[0].name: 0.01, two[1].name: 0.03}  # seconds per item, as if timed
    kw = {"cache_dir": tmp_path, "timer": lambda s: cost[s.name]}
    full = 0.04 * (n_train + n_val)
    everything = plan_ranking(digits, two, full / PLAN_FILL + 1, **kw)
    assert everything.items is None and [s.name for s in everything.sources] == [s.name for s in two]
    # a share that fits 0.8 of the items: a subsample sized to fill the plan, never below the floor
    sub = plan_ranking(digits, two, 0.8 * full / PLAN_FILL, **kw)
    expected = int(0.8 * full / 0.04 - n_val)
    assert sub.items == expected and min_items(digits) <= sub.items < n_train and not sub.left_out
    assert sum(sub.seconds.values()) == pytest.approx(0.8 * full, rel=0.01)
    # a share that not even the floor fits for both: the costlier source is left out, with its reason
    floor = min_items(digits)
    tight = plan_ranking(digits, two, 0.01 * (floor + n_val) / PLAN_FILL + 0.5, **kw)
    assert tight.items == floor and [s.name for s in tight.sources] == [two[0].name]
    assert two[1].name in tight.left_out and "--timeout" in tight.left_out[two[1].name]


def test_a_source_with_cached_features_costs_nothing_in_the_plan(digits, two, tmp_path):
    for split in ("train", "val"):
        extract(two[0], digits, split, cache_dir=str(tmp_path), progress=False)
    plan = plan_ranking(digits, two, 1.0, cache_dir=str(tmp_path), timer=lambda s: 1.0)
    assert plan.seconds[two[0].name] == 0.0 and two[1].name in plan.left_out


def test_rank_on_the_planned_subsample_is_stratified_and_seeded(digits, two, tmp_path):
    n_train, n_val = len(digits.splits["train"]), len(digits.splits["val"])
    share = 0.5 * 0.02 * (n_train + n_val) / PLAN_FILL
    plan = plan_ranking(digits, two[:1], share, cache_dir=tmp_path, timer=lambda s: 0.02)
    _, _, rows, again = plan_and_rank(digits, [two[0].spec], ["logme"], share=share, cache_dir=str(tmp_path),
                                      progress=False, check=None, seed=3)
    # the real timing differs from the fake one; what matters is that the rows use the plan's subsample
    assert rows[0]["n_samples"] == (again.items or n_train)
    assert plan.items is not None and plan.items < n_train
    from autotransfer._rank import subsample

    a, b = subsample(digits, plan.items, seed=3), subsample(digits, plan.items, seed=3)
    assert np.array_equal(a.splits["train"], b.splits["train"])
    counts = np.bincount(digits.labels[a.splits["train"], 0], minlength=10)
    full = np.bincount(digits.labels[digits.splits["train"], 0], minlength=10)
    assert np.all(np.abs(counts / counts.sum() - full / full.sum()) < 0.01)  # every class keeps its share


def test_the_deadline_leaves_a_source_out_mid_ranking(digits, two, tmp_path):
    calls = {"n": 0}

    def check():
        calls["n"] += 1
        if calls["n"] > 40:  # after the first source's extraction and estimators
            raise RankDeadline("ranking's share of the time budget ended")

    rows = rank_sources(digits, two, ["logme", "knn"], cache_dir=False, progress=False, check=check)
    by = {r["source"]: r for r in rows}
    first, second = by[two[0].name], by[two[1].name]
    assert first["rank"] == 1 and first["logme"] is not None
    assert second["rank"] is None and second["notes"].startswith("left out: ranking's share")


def test_a_deadline_before_any_source_is_ranked_is_one_line_naming_the_budget(digits, two):
    from autotransfer.errors import AutotransferError

    def check():
        raise RankDeadline("ranking's share of the time budget (25% of --timeout) ended")

    with pytest.raises(AutotransferError, match="no source was ranked: ranking's share .* raise --timeout"):
        rank_sources(digits, two, ["logme"], cache_dir=False, progress=False, check=check)
