"""LogME: the maximised log marginal evidence of a Bayesian linear model on the features.

You, Liu, Wang and Long, "LogME: Practical Assessment of Pre-trained Models for Transfer
Learning", ICML 2021 (extended in JMLR 2022). For each target column ``y`` (one-hot class
columns, or the columns of a 2-D regression / multi-label target) the evidence of
``y = F m + noise`` with prior ``m ~ N(0, I/alpha)`` and noise precision ``beta`` is
maximised over (alpha, beta); the score is the mean over columns of that maximum divided by
N. Higher is better. Unlike the public code, the log-determinant is exact when N < D (the
D - rank zero eigenvalues of FᵀF contribute ``log alpha`` each), the maximum is found even
where MacKay's fixed point crawls or diverges, and one eigendecomposition of the smaller Gram
matrix serves every column at once.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from autotransfer import hookimpl
from autotransfer.estimators import FEATURES, Estimator

from ._common import as_labels, as_tensor, class_sums, gram_eigh, nonzero_mask


def score(
    features: Any,
    labels: Any,
    *,
    source_probs: Any = None,
    device: str = "cpu",
    tol: float = 1e-5,
    max_iter: int = 100,
) -> float:
    """LogME of ``features`` (N, D) for 1-D class ``labels`` or a 2-D float target; higher is better."""
    evidence = column_evidence(features, labels, device=device, tol=tol, max_iter=max_iter)
    return float(evidence.mean())


def column_evidence(features: Any, labels: Any, *, device: str = "cpu", tol: float = 1e-5, max_iter: int = 100):
    """Maximised log evidence / N of every target column, a float64 tensor of shape (C,).

    ``tol`` bounds the last relative change of alpha/beta (the Newton steps on log(alpha/beta)
    converge quadratically, so the result is far more accurate than ``tol``).
    """
    import torch

    f = as_tensor(features, device)
    n, d = f.shape
    evals, evecs, side = gram_eigh(f)
    k = int(nonzero_mask(evals, n, d).sum())
    s = evals[evals.numel() - k :]  # eigh is ascending: the nonzero eigenvalues are a suffix
    y = labels if isinstance(labels, torch.Tensor) else np.asarray(labels)

    # z2[c, i] = (u_iᵀ y_c)²: squared projections of column c on the left singular vectors with
    # nonzero singular value; r0[c] = |y_c|² outside their span (the residual no m can remove).
    # For one-hot columns FᵀY and UᵀY are class sums, O(N·D) rather than a product with Y.
    if y.ndim == 1:
        codes, num_classes = as_labels(y, device)
        y_sq = torch.bincount(codes, minlength=num_classes).to(f.dtype)
        proj = class_sums(f if side == "feature" else evecs, codes, num_classes)  # (C, D) or (C, N)
    else:
        target = as_tensor(y, device)
        y_sq = target.square().sum(0)
        proj = (target.T @ f) if side == "feature" else (target.T @ evecs)
    if side == "feature":
        z2 = (proj @ evecs[:, d - k :]).square_().div_(s)  # (VᵀFᵀy)² / s = (Uᵀy)²
        r0 = (y_sq - z2.sum(1)).clamp_(min=0.0)
    else:
        z2 = proj[:, n - k :].square()
        r0 = proj[:, : n - k].square().sum(1)
    if k == n:  # y lies in the column space exactly; drop the cancellation residue
        r0 = torch.zeros_like(y_sq)

    evidence = _maximise_profile(s, z2, r0, n, tol=tol, max_iter=max_iter) if k else torch.full_like(y_sq, -math.inf)
    # The supremum can sit on the boundary: lam -> inf is the null model m = 0, and with r0 = 0,
    # lam -> 0 is the interpolating limit. MacKay's fixed point drifts there without converging.
    evidence = torch.maximum(evidence, -0.5 * (torch.log(2 * math.pi * y_sq / n) + 1))
    if k == n:
        evidence = torch.maximum(evidence, _interpolation_limit(s, z2, n))
    return evidence


# With lam = alpha/beta, the posterior mean m depends on lam only, and beta has the closed-form
# optimum N / E(lam), where E(lam) = |F m - y|² + lam·|m|² = Σ_i lam·z_i²/(lam + s_i) + r0.
# The profile P(lam) = [N/2 log(N/E) - N/2 - 1/2 Σ_i log(1 + s_i/lam) - N/2 log 2π] / N is the
# exact evidence: the (D - k)/2·log(alpha) of the zero eigenvalues cancels against D/2·log(alpha)
# + N/2·log(beta). dP/dlog(lam) = 0 is MacKay's fixed point gamma = N·lam·mᵀm/E, i.e.
# alpha = gamma/mᵀm and beta = (N - gamma)/|F m - y|² with gamma = Σ s_i/(lam + s_i).


def _interpolation_limit(s, z2, n):
    """lim_{lam -> 0} P(lam) when k = N (every column is fitted exactly): E ~ lam·Σ z²/s."""
    import torch

    e_over_lam = (z2 / s).sum(1)
    return (n / 2 * torch.log(n / e_over_lam) - n / 2 - torch.log(s).sum() / 2 - n / 2 * math.log(2 * math.pi)) / n


def _maximise_profile(s, z2, r0, n, *, tol, max_iter, spacing=0.5, margin=20.0, terms=40):
    """Per column, max over t = log(lam) of the profile evidence P.

    A grid over t spanning the spectrum with ``margin`` to spare (one matmul for all columns)
    locates each column's global maximum. Around the best grid point lam_g, with
    u_i = lam_g/(lam_g + s_i) and lam = lam_g·(1 + x), every sum P needs is a power series in
    x whose coefficients are moments Σ_i z2_i·u_i^j: one more matmul per occupied grid cell.
    A bracketed Newton iteration on dP/dt then runs on (C, terms) arrays only, instead of
    passes over (C, k) as the per-column fixed point needs, and converges in a few steps.
    """
    num_cols, k = z2.shape
    grid, p, best, evidence = _profile_on_grid(s, z2, r0, n, spacing, margin)
    # A maximum on the grid's edge means the supremum is a boundary limit (taken by the caller);
    # the others are refined between their grid neighbours.
    cols = ((best > 0) & (best < len(grid) - 1)).nonzero()[:, 0]
    if len(cols) == 0:
        return evidence
    if len(cols) < num_cols:
        best, z2, r0 = best[cols], z2[cols], r0[cols]
    t, t_g, lo, hi = _newton_start(grid, p, cols, best, spacing)
    series = _profile_series(*_moments(s, z2, r0, grid, best, terms), r0, t_g, n, k)
    t = _bracketed_newton(series, t, lo, hi, tol=tol, max_iter=max_iter)
    evidence[cols] = (series(t)[2] / 2 - n / 2 - n / 2 * math.log(2 * math.pi)) / n
    return evidence


def _profile_on_grid(s, z2, r0, n, spacing, margin):
    """(grid of t, 2N·P on it up to a constant (C, G), each column's best grid index, its evidence there)."""
    import torch

    num_cols = z2.shape[0]
    log_s = torch.log(s)
    grid = torch.arange(
        float(log_s.min()) - margin, float(log_s.max()) + margin + spacing, spacing, dtype=s.dtype, device=s.device
    )
    lam_g = torch.exp(grid)[:, None]
    e = z2 @ (lam_g / (lam_g + s)).T + r0[:, None]  # E on the grid, (C, G)
    p = n * torch.log(n / e) - torch.log1p(s / lam_g).sum(1)  # 2N·P up to a constant
    best = p.argmax(1)
    rows = torch.arange(num_cols, device=s.device)
    evidence = (p[rows, best] / 2 - n / 2 - n / 2 * math.log(2 * math.pi)) / n
    return grid, p, best, evidence


def _newton_start(grid, p, cols, best, spacing):
    """(start t, grid point t_g, bracket lo, hi) per column: the vertex of the parabola through the
    best grid point and its neighbours, within one grid step of it."""
    import torch

    pl, pm, ph = p[cols, best - 1], p[cols, best], p[cols, best + 1]
    curv = pl - 2 * pm + ph
    offset = spacing / 2 * (pl - ph) / torch.where(curv < 0, curv, -torch.ones_like(curv))
    t_g = grid[best]
    t = torch.where(curv < 0, t_g + offset.clamp(-spacing, spacing), t_g)
    return t, t_g, t_g - spacing, t_g + spacing


def _moments(s, z2, r0, grid, best, terms):
    """(j, mu, mv, q, pw, ld0): the series coefficients per column, about its own grid point.

    With v_i = 1 - u_i = s_i/(lam_g + s_i):
      Σ z2/(lam+s)    = (1/lam_g)·Σ_j (-x)^j·mu[j],          mu[j] = Σ z2·u^(j+1)
      Σ s·z2/(lam+s)² = (1/lam_g)·Σ_j (j+1)(-x)^j·mv[j],     mv[j] = Σ z2·v·u^(j+1)
      Σ s/(lam+s)     = Σ_j (-x)^j·q[j],                     q[j]  = Σ v·u^j
      Σ log(1 + s/lam) = Σ log(1 + s/lam_g) + Σ_j≥1 (-1)^(j+1) x^j/j·Σ u^j - k·log(1 + x)
    """
    import torch

    j = torch.arange(terms + 1, device=s.device, dtype=s.dtype)
    mu = z2.new_empty(len(best), terms + 1)
    mv = torch.empty_like(mu)
    q = torch.empty_like(mu)
    pw = torch.empty_like(mu)  # Σ u^j, j = 0..terms
    ld0 = torch.empty_like(r0)
    for cell in torch.unique(best).tolist():
        members = (best == cell).nonzero()[:, 0]
        lam = math.exp(float(grid[cell]))
        u = lam / (lam + s)
        v = s / (lam + s)
        upow = u[:, None] ** j  # (k, terms + 1), u^0..u^terms
        moments = z2[members] @ torch.cat([upow * u[:, None], upow * (u * v)[:, None]], 1)
        mu[members], mv[members] = moments[:, : terms + 1], moments[:, terms + 1 :]
        q[members] = v @ upow
        pw[members] = upow.sum(0)
        ld0[members] = torch.log1p(s / lam).sum()
    return j, mu, mv, q, pw, ld0


def _profile_series(j, mu, mv, q, pw, ld0, r0, t_g, n, k):
    """The function ``series(t)`` summing the moments' power series at t."""
    import torch

    def series(t):
        """At t, per column: h = 2·dP/dt, dh/dt, and 2N·P + N + N·log 2π."""
        x = torch.expm1(t - t_g)[:, None]
        powers = (-x) ** j  # (C, terms + 1)
        dpowers = torch.zeros_like(powers)
        dpowers[:, 1:] = -j[1:] * powers[:, :-1]  # d/dx (-x)^j
        a, da = (powers * mu).sum(1), (dpowers * mu).sum(1)
        bv, dbv = (powers * mv * (j + 1)).sum(1), (dpowers * mv * (j + 1)).sum(1)
        g, dg = (powers * q).sum(1), (dpowers * q).sum(1)
        x1 = 1 + x[:, 0]
        e = x1 * a + r0
        de = a + x1 * da
        le1 = x1 * bv  # lam·mᵀm
        dle1 = bv + x1 * dbv
        h = g - n * le1 / e
        dh = x1 * (dg - n * (dle1 * e - le1 * de) / e.square())  # d/dt = (1 + x)·d/dx
        logdet = ld0 + (-powers[:, 1:] * pw[:, 1:] / j[1:]).sum(1) - k * torch.log1p(x[:, 0])
        return h, dh, n * torch.log(n / e) - logdet

    return series


def _bracketed_newton(series, t, lo, hi, *, tol, max_iter):
    """The root of h = 2·dP/dt per column: Newton steps, bisection where a step leaves [lo, hi]."""
    import torch

    active = torch.ones_like(t, dtype=torch.bool)
    for _ in range(max_iter):
        h, dh, _ = series(t)
        lo = torch.where(h > 0, t, lo)
        hi = torch.where(h > 0, hi, t)
        step = t - h / dh
        bad = (dh >= 0) | (step < lo) | (step > hi) | ~torch.isfinite(step)
        new_t = torch.where(active, torch.where(bad, (lo + hi) / 2, step), t)
        # A Newton step of size delta leaves an error of order delta², so stop on the step.
        active &= (new_t - t).abs() > tol
        t = new_t
        if not bool(active.any()):
            break
    return t


@hookimpl
def register_estimators(register):
    register(
        Estimator(
            name="logme",
            score=score,
            higher_is_better=True,
            requires=(FEATURES,),
            supports_regression=True,
            description="LogME maximised evidence of a Bayesian linear model (You et al., ICML 2021)",
        )
    )
