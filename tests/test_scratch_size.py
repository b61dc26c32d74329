"""A scratch baseline sized to its share of the budget (autotransfer._search.scratch_size)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from autotransfer._search import trial as trial_mod
from autotransfer._search.scratch_size import (
    MIN_SIDE,
    affordable_side,
    epoch_seconds,
    native_side,
    resized_spec,
)
from autotransfer.sources import SourceOptions, resolve_source


def test_the_side_shrinks_with_the_square_root_of_what_the_share_affords():
    per_item, n_train, n_val = 0.036, 1259, 269
    one = epoch_seconds(per_item, n_train, n_val)
    assert one == pytest.approx(0.036 * (3 * 1259 + 269))
    assert affordable_side(224, per_item, n_train, n_val, 4 * one + 1, 4) is None  # fits: the source's own size
    # a quarter of the seconds: half the side (cost grows with the pixels), rounded down to a multiple of 32
    assert affordable_side(224, per_item, n_train, n_val, one, 4) == 96
    assert affordable_side(224, per_item, n_train, n_val, 1.0, 4) == MIN_SIDE  # never below the floor
    assert affordable_side(64, per_item, n_train, n_val, 1.0, 4) is None  # nothing smaller to go to


def test_resized_spec_sets_or_replaces_the_size_option():
    assert resized_spec("efficientnet-lite0", 96) == "efficientnet-lite0?size=96"
    assert resized_spec("timm:resnet18@/w/a.safetensors?size=224&hflip=0", 128) == \
        "timm:resnet18@/w/a.safetensors?size=128&hflip=0"


class _Study:
    def get_trials(self, deepcopy=False, states=()):
        return []


class _Trial:
    def __init__(self):
        self.user_attrs = {}

    def set_user_attr(self, k, v):
        self.user_attrs[k] = v


def _ctx(per_item: float, share: float):
    ds = SimpleNamespace(splits={"train": np.arange(1259), "val": np.arange(269)})
    budget = SimpleNamespace(share_left=lambda: share, item_seconds=per_item)
    plan = SimpleNamespace(dataset=ds, epochs=8, source_options=SourceOptions(offline=True))
    return SimpleNamespace(plan=plan, budget=budget, pruner=SimpleNamespace(warmup_epochs=1, patience=2),
                           scores={"efficientnet-lite0": {"n_samples": 1259, "extract_seconds": per_item * 1259}})


def test_a_baseline_whose_share_cannot_train_its_rules_epochs_trains_smaller():
    lite0 = resolve_source("efficientnet-lite0", SourceOptions(offline=True))
    assert native_side(lite0) == 224
    one = epoch_seconds(0.036, 1259, 269)
    trial = _Trial()
    small = trial_mod._baseline_source(_Study(), trial, lite0, _ctx(0.036, 1.1 * one))
    # 4 epochs (warm-up 1 + patience 2 + 1) in the time of ~1.1 at 224 px: about half the side
    assert small.data_config["input_size"] == (3, 96, 96) and trial.user_attrs["input_size"] == 96
    assert "instead of 224 px" in trial.user_attrs["scratch_note"]
    roomy = _Trial()
    assert trial_mod._baseline_source(_Study(), roomy, lite0, _ctx(0.036, 5 * one)) is lite0
    assert "input_size" not in roomy.user_attrs
