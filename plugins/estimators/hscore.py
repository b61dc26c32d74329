"""H-score and its shrinkage (regularised) variant.

H-score (Bao, Li, Huang, Zheng, Zhang and Zhang, "An Information-Theoretic Approach to
Transferability in Task Transfer Learning", ICIP 2019) is ``tr(cov(f)⁺ cov(E[f|y]))``: the
between-class share of feature variance, in [0, C-1]. With few samples per dimension the
sample covariance is poorly estimated and the plain score saturates at C-1 for any features,
so ``hscore_shrinkage`` (Ibrahim, Ponomareva and Mazumder, "Newer is not always better:
Rethinking transferability metrics, their peculiarities, stability and performance", 2022)
uses ``tr(cov_a(f)⁻¹ (1-a) cov(E[f|y]))`` with the Ledoit–Wolf estimate
``cov_a = (1-a)·cov + a·(tr(cov)/D)·I`` on centred features. Higher is better for both.
Both are computed from one eigendecomposition of the smaller Gram matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from autotransfer import hookimpl
from autotransfer.estimators import FEATURES, Estimator

from ._common import as_labels, as_tensor, class_sums, gram_eigh


def score(features: Any, labels: Any, *, source_probs: Any = None, device: str = "cpu") -> float:
    """H-score with a pseudo-inverse covariance; in [0, C-1], higher is better."""
    return _hscore(features, labels, device=device, shrinkage=False)


def score_shrinkage(features: Any, labels: Any, *, source_probs: Any = None, device: str = "cpu") -> float:
    """H-score with the Ledoit–Wolf shrunk covariance; in [0, C-1], higher is better."""
    return _hscore(features, labels, device=device, shrinkage=True)


def _hscore(features: Any, labels: Any, *, device: str, shrinkage: bool) -> float:
    import torch

    f = as_tensor(features, device)
    codes, num_classes = as_labels(labels, device)
    n, d = f.shape
    raw_power = f.square().sum() / n  # tr(E[f fᵀ]), the scale centring rounding errors are relative to
    f = f - f.mean(0)
    counts = torch.bincount(codes, minlength=num_classes).to(f.dtype)
    weight = (counts / n).sqrt() / counts  # row c of P: sqrt(n_c/n) · class mean

    # cov = FᵀF/n has eigenpairs (s_i/n, v_i). b_i = Σ_c (n_c/n)(μ_c·v_i)² is cov(E[f|y])
    # along v_i; on the sample side v_i = Fᵀu_i/sqrt(s_i), so b_i = s_i·Σ_c (n_c/n)(mean_c u_i)².
    evals, evecs, side = gram_eigh(f)
    if side == "feature":
        b = ((class_sums(f, codes, num_classes) * weight[:, None]) @ evecs).square().sum(0)
    else:
        b = (class_sums(evecs, codes, num_classes) * weight[:, None]).square().sum(0) * evals
    cov_evals = evals / n
    if float(cov_evals.sum()) <= float(raw_power) * max(n, d) * float(np.finfo(np.float64).eps):
        return 0.0  # constant (collapsed) features: no variance (up to rounding), so none between classes
    if shrinkage:
        mu = cov_evals.sum() / d
        a = _ledoit_wolf_shrinkage(f, cov_evals)
        # Directions outside the span of f carry no between-class variance (b_i = 0 there).
        return float(((1 - a) * b / ((1 - a) * cov_evals + a * mu)).sum())
    tol = cov_evals.max() * max(n, d) * float(np.finfo(np.float64).eps)
    inv = torch.where(cov_evals > tol, 1.0 / cov_evals.clamp(min=tol), torch.zeros_like(cov_evals))
    return float((b * inv).sum())


def _ledoit_wolf_shrinkage(f, cov_evals) -> float:
    """Ledoit & Wolf (2004) optimal shrinkage towards (tr(S)/D)·I for centred ``f``, S = fᵀf/n.

    Uses |S|²_F = Σ eig² and Σ_ij (f²ᵀf²)_ij = Σ_k |f_k|⁴, so no D×D product beyond the Gram.
    """
    n, d = f.shape
    mu = cov_evals.sum() / d
    s_fro2 = cov_evals.square().sum()
    delta = (s_fro2 - d * mu**2) / d  # |S - mu I|²_F / d
    row4 = f.square().sum(1).square().sum()
    beta = (row4 / n - s_fro2) / (d * n)
    beta = min(float(beta), float(delta))
    return 0.0 if beta <= 0 else beta / float(delta)


@hookimpl
def register_estimators(register):
    register(
        Estimator(
            name="hscore",
            score=score,
            higher_is_better=True,
            requires=(FEATURES,),
            description="H-score, between-class share of feature variance (Bao et al., ICIP 2019)",
        )
    )
    register(
        Estimator(
            name="hscore_shrinkage",
            score=score_shrinkage,
            higher_is_better=True,
            requires=(FEATURES,),
            description="H-score with Ledoit-Wolf shrunk covariance (Ibrahim et al., 2022)",
        )
    )
