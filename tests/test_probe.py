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
    assert abs(sub.scores[0] - full.scores[0]) <= 0.01
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


def test_fewer_rows_than_features_are_solved_in_their_span_with_the_reference_answer():
    from sklearn.linear_model import LogisticRegression

    x, y, xv, yv = (a.double() if a.is_floating_point() else a for a in _problem(60, d=200, c=4, n_val=200))
    q = probe.row_basis(x)
    assert q.shape == (200, 60) and torch.allclose(q.T @ q, torch.eye(60, dtype=q.dtype), atol=1e-10)
    assert torch.allclose(x @ q @ q.T, x, atol=1e-8)  # the columns span every training row
    assert probe.row_basis(x[:, :50]) is None  # as many rows as features: nothing to gain
    span = probe.solve_path(x, y, xv, yv)
    full = probe.solve_path(x, y, xv, yv, span=False)
    assert span.l2 == full.l2 and span.scores == full.scores
    # solved tightly at one strength, both reach the reference solver's weights, and the span's lie in the span
    l2 = 1e-2
    ref = LogisticRegression(C=1 / (l2 * len(x)), tol=1e-12, max_iter=10_000).fit(x.numpy(), y[:, 0].numpy())
    ref_w, ref_b = torch.as_tensor(ref.coef_), torch.as_tensor(ref.intercept_)

    def loss(w, b):
        return float(torch.nn.functional.cross_entropy(x @ w.T + b, y[:, 0]) + 0.5 * l2 * (w * w).sum())

    solved = [probe.solve_path(x, y, xv, yv, (l2,), tol=1e-10, walk_tol=1e-10, span=s).weights[0] for s in (1, 0)]
    for w, b in solved:  # the same minimum as the reference (L-BFGS's change tolerance leaves ~1e-3 in the weights)
        assert w.shape == (4, 200) and abs(loss(w, b) - loss(ref_w, ref_b)) < 1e-8
        assert torch.allclose(w, ref_w, atol=3e-3 * float(ref_w.abs().max()))
    w = solved[1][0]
    assert torch.allclose(w - w @ q @ q.T, torch.zeros_like(w), atol=1e-6)  # the full space's answer is in the span
