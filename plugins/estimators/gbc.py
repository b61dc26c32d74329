"""GBC: Gaussian Bhattacharyya coefficient, the overlap between per-class Gaussians.

Pandy, Agostinelli, Uijlings, Ferrari and Mensink, "Transferability Estimation using
Bhattacharyya Class Separability", CVPR 2022. Features are reduced by PCA to at most 64
dimensions, each class is modelled as a Gaussian with a spherical (default) or diagonal
covariance, and GBC = -Σ_{i≠j} BC(i, j) with BC = exp(-D_B) and D_B the Bhattacharyya
distance. It lies in [-C(C-1), 0]; higher (closer to 0, less overlap) is better.
"""

from __future__ import annotations

from typing import Any

from autotransfer import hookimpl
from autotransfer.errors import EstimatorError
from autotransfer.estimators import FEATURES, Estimator

from ._common import as_labels, as_tensor, class_sums, gram_eigh


def score(
    features: Any,
    labels: Any,
    *,
    source_probs: Any = None,
    device: str = "cpu",
    covariance: str = "spherical",
    dims: int = 64,
) -> float:
    """GBC of ``features`` for 1-D ``labels``; ``covariance`` is "spherical" or "diagonal". Higher is better."""
    import torch

    if covariance not in ("spherical", "diagonal"):
        raise EstimatorError(f"GBC covariance must be 'spherical' or 'diagonal', but got {covariance=}")
    f = as_tensor(features, device)
    codes, num_classes = as_labels(labels, device)
    x = _pca(f - f.mean(0), dims)
    p = x.shape[1]
    counts = torch.bincount(codes, minlength=num_classes).to(x.dtype)[:, None]
    mean = class_sums(x, codes, num_classes) / counts  # (C, p)
    var = (class_sums(x.square(), codes, num_classes) / counts - mean.square()).clamp_(min=0)
    # A class of identical points would give log(0); floor variances far below the data's scale.
    var += 1e-10 * float(x.square().mean()) + 1e-300
    if covariance == "spherical":
        v = var.mean(1)  # (C,)
        vij = (v[:, None] + v[None, :]) / 2
        dist2 = torch.cdist(mean, mean).square()
        db = dist2 / (8 * vij) + p / 2 * (torch.log(vij) - (torch.log(v)[:, None] + torch.log(v)[None, :]) / 2)
        bc = torch.exp(-db)
        total = float(bc.sum() - bc.diagonal().sum())
    else:
        log_var = torch.log(var)
        total = 0.0
        rows = max(1, (1 << 22) // max(1, num_classes * p))  # bounds memory to ~4M doubles
        for start in range(0, num_classes, rows):
            sl = slice(start, start + rows)
            vij = (var[sl, None, :] + var[None, :, :]) / 2  # (r, C, p)
            db = ((mean[sl, None, :] - mean[None, :, :]).square() / (8 * vij)).sum(2) + 0.5 * (
                torch.log(vij) - (log_var[sl, None, :] + log_var[None, :, :]) / 2
            ).sum(2)
            bc = torch.exp(-db)
            idx = torch.arange(bc.shape[0], device=bc.device)
            bc[idx, idx + start] = 0.0
            total += float(bc.sum())
    return -total


def _pca(x, dims: int):
    """Projection of centred ``x`` on its top ``dims`` principal directions (fewer if rank allows)."""
    n, d = x.shape
    if d <= dims:
        return x
    evals, evecs, side = gram_eigh(x)
    top = evecs[:, -dims:]  # eigh is ascending
    if side == "feature":
        return x @ top
    # x = U S Vᵀ, so the scores x V = U S
    return top * evals[-dims:].sqrt()


@hookimpl
def register_estimators(register):
    register(
        Estimator(
            name="gbc",
            score=score,
            higher_is_better=True,
            requires=(FEATURES,),
            description="GBC, minus the Bhattacharyya overlap of per-class Gaussians (Pandy et al., CVPR 2022)",
        )
    )
