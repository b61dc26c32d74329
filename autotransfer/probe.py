"""The linear probe's solver: multinomial logistic regression along an L2 path, in torch.

``solve_path`` fits one logistic-regression head per task on (standardised) cached features,
for each L2 strength of a path, strongest first, and keeps the point with the best mean
validation score under the search's metric (accuracy by default; ties: the lower validation
cross-entropy). It runs where the features are
(a GPU when the source's device is one) with full-batch L-BFGS stopped at a tolerance relative to
the gradient at zero weights (as scikit-learn's ``tol`` is), not at a fixed 1e-8. Work is shared
along the path:

- every point starts from the previous point's solution (the weakening penalty moves it little);
- the path is walked at a looser tolerance (``WALK_TOL``), and only the chosen strength is
  polished to ``TOL``;
- the path stops ``PATIENCE`` points after its best validation score;
- when there are fewer training items than features (N < D), every point is solved in the span
  of the training rows (one QR decomposition serves the whole path): an L2-penalised solution
  from zero weights lies in that span, so the answer is the same and each gradient costs N/D of
  the full one;
- when the training split is large, the path is walked on a stratified, seeded subsample of
  ``SELECT_ITEMS`` items, and only the chosen strength is solved on every item.

``check()`` is called before every gradient; it raises to stop the solve (the search's deadline).

Precision and tolerances were chosen by ``benchmarks/bench_probe.py`` against the exact float64
solver this replaced, on every suite task's sources: looser walks (1e-3, 1e-4) or float32 changed
the chosen strength, and with it the validation accuracy, on 2 to 7 of 25 sources (validation
sets of 100–150 items: one item is 0.7 pp); float32 at these tolerances still moved a collapsed
source's answer. ``solve_dtype`` is therefore float64 on the CPU and float32 on a GPU, whose
float64 throughput is a fraction of its float32 one. On the CPU the path itself is walked in
float32 (``WALK_DTYPE``; each point scored on validation in float64) and only the chosen strength
is polished in float64: the validation accuracy is the exact solver's on every suite source and
the 1,797 digits, the chosen strength too except on the three planted-harmful sources, where
several strengths tie on accuracy and float32's cross-entropy breaks the tie differently; it costs
1.5–2× less at 1,400–5,600 training items (``benchmarks/bench_probe_variants.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .metrics import get_metric, task_values

L2_PATH = tuple(10.0 ** (k / 2) for k in range(0, -9, -1))  # strongest first: 1 ... 1e-4 (mean loss)
WALK_TOL = 1e-5  # the path's points are solved to this before they are compared on validation
TOL = 1e-6  # the answer: L-BFGS stops when the gradient's largest entry is below TOL × its value at zero weights
MAX_ITER = 500  # most L-BFGS iterations per point of the path
PATIENCE = 2  # points without a better validation score before the path stops
# above this many training items, the path is walked on a stratified subsample: with 4096, a walk on 4096
# items plus the polish on all grew the probe's cost 6x from 1,400 to 5,600 items (log-log slope 1.3), with
# 2048 4.4x (1.08) at the same chosen strength and accuracy (benchmarks/bench_scale.py, rendered digits)
SELECT_ITEMS = 2048
HISTORY = 20  # L-BFGS curvature pairs
WALK_DTYPE = torch.float32  # the path's points are compared in float32; the chosen one is polished in the features' dtype


@dataclass
class PathResult:
    """What ``solve_path`` found: per-task weights at the chosen strength and its validation scores."""

    weights: list[tuple[torch.Tensor, torch.Tensor]]  # per task (W (C, D), b (C,)), in the features' dtype
    scores: list[float]  # per-task validation score at the chosen strength (the metric's; a loss negated)
    l2: float  # the chosen strength (mean-loss scale: loss = mean CE + l2/2 ||W||²)
    points: int  # path points solved
    gradients: int  # gradient evaluations, over every point and task
    val_preds: np.ndarray | None = None  # (Nv, T) predicted classes on validation at the chosen strength
    val_probs: list[np.ndarray] | None = None  # per task (Nv, C) validation probabilities there


def _fit(x: torch.Tensor, y: torch.Tensor, l2: float, w: torch.Tensor, b: torch.Tensor, tol: float,
         check: Callable[[], None], counter: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """One task's head at one strength by L-BFGS from (w, b); the tolerance is relative to zero weights'."""
    c, d = w.shape
    theta = torch.cat([w.reshape(-1), b]).detach().clone().requires_grad_(True)
    n = x.shape[0]
    with torch.no_grad():  # the gradient at zero weights sets the scale of "converged"
        onehot_mean = torch.bincount(y, minlength=c).to(x.dtype) / n
        g0 = (torch.full((n, c), 1.0 / c, device=x.device, dtype=x.dtype) - torch.nn.functional.one_hot(
            y, c).to(x.dtype)).T @ x / n
        scale = float(torch.maximum(g0.abs().max(), (1.0 / c - onehot_mean).abs().max()))
    # the loss-change stop follows a tolerance tighter than the defaults' (tol**1.5: 1e-9 at TOL), so a
    # tight request is solved tightly; at WALK_TOL and TOL it is the 1e-9 the defaults were chosen with
    opt = torch.optim.LBFGS([theta], lr=1, max_iter=MAX_ITER, history_size=HISTORY,
                            tolerance_grad=tol * max(scale, 1e-12), tolerance_change=min(1e-9, tol ** 1.5),
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        check()
        counter[0] += 1
        opt.zero_grad()
        wt, bt = theta[:c * d].view(c, d), theta[c * d:]
        loss = torch.nn.functional.cross_entropy(x @ wt.T + bt, y) + 0.5 * l2 * (wt * wt).sum()
        loss.backward()
        return loss

    opt.step(closure)
    theta = theta.detach()
    return theta[:c * d].view(c, d).clone(), theta[c * d:].clone()


@torch.no_grad()
def _scores(xv: torch.Tensor, yv: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
            metric: str = "accuracy") -> tuple[float, float]:
    """Validation (``metric``'s score, a loss negated; mean cross-entropy) of one head. The score is
    computed in float64 from the predictions, as every other trial's is (accuracy: a count over n;
    a float32 mean would make equal counts unequal scores)."""
    z = xv @ w.T + b
    probs = [torch.softmax(z, 1).cpu().numpy()] if get_metric(metric).needs_probabilities else []
    value = task_values(metric, yv.cpu().numpy(), z.argmax(1).cpu().numpy(), probs)[0]
    return value, float(torch.nn.functional.cross_entropy(z, yv))


@torch.no_grad()
def _outputs(xv: torch.Tensor, state: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Predicted classes (Nv, T) and per-task probabilities of the heads in ``state``."""
    z = [xv @ w.T + b for w, b in state]
    return (torch.stack([zt.argmax(1) for zt in z], 1).cpu().numpy().astype(np.int64),
            [torch.softmax(zt, 1).cpu().numpy() for zt in z])


def solve_dtype(device: torch.device) -> torch.dtype:
    """float64 on the CPU (the answer of the exact solver, at about twice float32's cost), float32 elsewhere."""
    return torch.float64 if torch.device(device).type == "cpu" else torch.float32


def stratified_rows(labels: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices of a stratified (first task's classes), seeded subsample of about ``size`` rows.

    Every class keeps its share of ``size`` (at least 2 rows, or all it has when fewer).
    """
    y = np.asarray(labels)
    y = y[:, 0] if y.ndim == 2 else y
    if size >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    classes, counts = np.unique(y, return_counts=True)
    quota = np.maximum(2, np.floor(counts * size / len(y)).astype(int))
    for c, q in zip(classes, quota, strict=True):
        members = np.flatnonzero(y == c)
        keep.append(rng.choice(members, size=min(q, len(members)), replace=False))
    return np.sort(np.concatenate(keep))


def row_basis(x: torch.Tensor) -> torch.Tensor | None:
    """Orthonormal columns (D, N) spanning the rows of ``x`` when it has fewer rows than columns, else None.

    The weights of an L2-penalised linear model fitted from zero lie in this span (the data's
    gradient does, and the penalty only scales), so solving on ``x @ q`` and mapping the weights
    back with ``w @ q.T`` gives the same model at N/D of each gradient's cost.
    """
    if x.shape[0] >= x.shape[1]:
        return None
    q, _ = torch.linalg.qr(x.T)  # reduced: (D, N)
    return q


def _walk(x: torch.Tensor, ys: torch.Tensor, xv: torch.Tensor, yvs: torch.Tensor, path: Sequence[float],
          classes: Sequence[int], tol: float, check: Callable[[], None], counter: list[int], metric: str):
    """The path on (x, ys): the best point's (key, scores, l2, weights) and the points solved."""
    state = [(x.new_zeros(c, x.shape[1]), x.new_zeros(c)) for c in classes]
    best, since, points = None, 0, 0
    for l2 in path:
        state = [_fit(x, ys[:, t], l2, w, b, tol, check, counter) for t, (w, b) in enumerate(state)]
        points += 1
        accs, losses = zip(*(_scores(xv, yvs[:, t], w.to(xv.dtype), b.to(xv.dtype), metric)
                             for t, (w, b) in enumerate(state)), strict=True)
        key = (float(np.mean(accs)), -float(np.mean(losses)))
        if best is None or key > best[0]:
            best, since = (key, list(accs), l2, state), 0
        else:
            since += 1
            if since >= PATIENCE:
                break
    return best, points


def solve_path(x: torch.Tensor, ys: torch.Tensor, xv: torch.Tensor, yvs: torch.Tensor,
               path: Sequence[float] = L2_PATH, *, classes: Sequence[int] | None = None, tol: float = TOL,
               walk_tol: float = WALK_TOL, select_items: int | None = SELECT_ITEMS,
               seed: int = 0, span: bool = True, check: Callable[[], None] | None = None,
               metric: str = "accuracy", walk_dtype: torch.dtype | None = WALK_DTYPE) -> PathResult:
    """Solve the heads along ``path`` and choose the strength on validation, by ``metric``.

    Args:
        x, xv: training and validation features (N, D) and (Nv, D), standardised; their device and
            dtype are the solve's (``solve_dtype`` gives the one the probe uses).
        ys, yvs: integer labels (N, T) and (Nv, T), one column per task.
        classes: each task's class count (default: the largest label seen + 1).
        path: L2 strengths, strongest first.
        tol: L-BFGS gradient tolerance of the answer, relative to the gradient at zero weights.
        walk_tol: the tolerance of the path's points (the chosen one is then polished to ``tol``).
        select_items: above this many training items, walk the path on a stratified subsample of
            this size and solve only the chosen strength on all items (None: never).
        seed: the subsample's seed.
        span: solve in the span of the training rows when they are fewer than the features.
        check: called before every gradient evaluation; raise from it to stop.
        metric: what chooses the strength (``autotransfer.metrics``; ties: the lower cross-entropy).
        walk_dtype: the dtype the path is walked in (None: the features'); the chosen strength is then
            polished in the features' dtype.
    """
    check = check or (lambda: None)
    counter = [0]
    if classes is None:
        classes = [int(max(ys[:, t].max(), yvs[:, t].max())) + 1 for t in range(ys.shape[1])]
    sub = None
    if select_items and x.shape[0] > select_items and len(path) > 1:
        sub = torch.as_tensor(stratified_rows(ys.cpu().numpy(), select_items, seed), device=x.device)
    xw, yw = (x, ys) if sub is None else (x[sub], ys[sub])
    q = row_basis(xw) if span else None
    wdt = walk_dtype or x.dtype
    best, points = _walk((xw if q is None else xw @ q).to(wdt), yw, xv if q is None else xv @ q, yvs,
                         path, classes, max(tol, walk_tol), check, counter, metric)
    assert best is not None
    key, accs, l2, state = best
    state = [(w.to(x.dtype), b.to(x.dtype)) for w, b in state]
    if sub is not None or walk_tol > tol or wdt != x.dtype:  # the chosen strength on every item, to ``tol``
        if sub is None and q is not None:  # the same rows: polish in their span too
            state = [_fit(x @ q, ys[:, t], l2, w, b, tol, check, counter) for t, (w, b) in enumerate(state)]
            state = [(w @ q.T, b) for w, b in state]
        else:
            state = [(w @ q.T, b) for w, b in state] if q is not None else state
            state = [_fit(x, ys[:, t], l2, w, b, tol, check, counter) for t, (w, b) in enumerate(state)]
        accs = [_scores(xv, yvs[:, t], w, b, metric)[0] for t, (w, b) in enumerate(state)]
        points += 1
    elif q is not None:
        state = [(w @ q.T, b) for w, b in state]
    return PathResult(state, [float(a) for a in accs], float(l2), points, counter[0], *_outputs(xv, state))
