"""The probe's solver (autotransfer.probe): its answer against a reference, its subsample, its stop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autotransfer import probe
from autotransfer.monitor import StopTraining


def _problem(n: int, d: int = 64, c: int = 5, seed: int = 0, n_val: int = 400):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(c, d))
    y = rng.integers(0, c, size=n + n_val)
    x = centres[y] + rng.normal(scale=2.5, size=(n + n_val, d))
    t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return t(x[:n]), torch.as_tensor(y[:n, None]), t(x[n:]), torch.as_tensor(y[n:, None])


def test_stratified_rows_keep_every_class_share_and_follow_the_seed():
    y = np.repeat(np.arange(4), [500, 300, 150, 50])
    rows = probe.stratified_rows(y, 200, seed=1)
    counts = np.bincount(y[rows], minlength=4)
    assert np.array_equal(counts, [100, 60, 30, 10])  # each class its share of 200
    assert np.array_equal(rows, np.sort(rows)) and len(np.unique(rows)) == len(rows)
    assert np.array_equal(rows, probe.stratified_rows(y, 200, seed=1))
    assert not np.array_equal(rows, probe.stratified_rows(y, 200, seed=2))
    rare = np.concatenate([np.zeros(1000, int), [1, 1, 1]])
    assert np.bincount(rare[probe.stratified_rows(rare, 50)]).tolist()[1] == 2  # a rare class keeps two
    assert len(probe.stratified_rows(y, 5000)) == len(y)  # asking for more than there is keeps everything


def test_path_chosen_on_a_subsample_answers_as_the_full_path():
    x, y, xv, yv = _problem(3000)
    full = probe.solve_path(x, y, xv, yv, select_items=None)
    sub = probe.solve_path(x, y, xv, yv, select_items=600, seed=0)
    assert abs(sub.accuracies[0] - full.accuracies[0]) <= 0.01
    # the answer is solved on every item at the chosen strength (not the subsample's weights)
    again = probe.solve_path(x, y, xv, yv, path=(sub.l2,), select_items=None)
    w1, w2 = sub.weights[0][0], again.weights[0][0]
    assert torch.allclose(w1, w2, atol=1e-2 * float(w2.abs().max()))


def test_a_raising_check_stops_the_solve_at_the_next_gradient():
    x, y, xv, yv = _problem(500)
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 7:
            raise StopTraining("deadline")

    with pytest.raises(StopTraining):
        probe.solve_path(x, y, xv, yv, check=check)
    assert len(calls) == 7  # nothing ran after the check that raised
    done = probe.solve_path(x, y, xv, yv)
    assert done.gradients > 7  # the whole solve needs more gradients than the stop allowed
