"""TransRate: the coding-rate gain of the features from knowing the target classes.

Huang, Huang, Rong, Yang and Wei, "Frustratingly Easy Transferability Estimation", ICML
2022. With the rate-distortion coding rate R(Z, ε) = 1/2·logdet(I + d/(n ε²)·ZᵀZ) of n
d-dimensional features (Ma et al., 2007; Yu et al., 2020), TransRate = R(Z, ε) -
Σ_c (n_c/n)·R(Z_c, ε), where Z_c are the rows of class c. Features are centred and scaled
to unit mean squared row norm first (the unit-energy convention under which ε is a
distortion level), so the score does not depend on the feature scale. Higher is better.
Each logdet uses the smaller Gram matrix (Sylvester: det(I + c·ZᵀZ) = det(I + c·ZZᵀ)).
"""

from __future__ import annotations

from typing import Any

from autotransfer import hookimpl
from autotransfer.estimators import FEATURES, Estimator

from ._common import as_labels, as_tensor


def score(features: Any, labels: Any, *, source_probs: Any = None, device: str = "cpu", eps: float = 1e-4) -> float:
    """TransRate of ``features`` (N, D) for 1-D ``labels`` at distortion ``eps``; higher is better."""
    import torch

    z = as_tensor(features, device)
    codes, num_classes = as_labels(labels, device)
    n, d = z.shape
    z = z - z.mean(0)
    energy = z.square().sum() / n
    if energy > 0:
        z = z / energy.sqrt()
    rate = coding_rate(z, eps)
    order = torch.argsort(codes, stable=True)
    counts = torch.bincount(codes, minlength=num_classes).tolist()
    class_rate = 0.0
    for rows, n_c in zip(torch.split(order, counts), counts, strict=False):
        class_rate += n_c / n * coding_rate(z[rows], eps)
    return rate - class_rate


def coding_rate(z, eps: float) -> float:
    """R(Z, ε) = 1/2·logdet(I + d/(n ε²)·ZᵀZ) for Z of shape (n, d), via the smaller Gram matrix."""
    import torch

    n, d = z.shape
    gram = z.T @ z if n >= d else z @ z.T
    gram.mul_(d / (n * eps**2)).diagonal().add_(1.0)
    chol = torch.linalg.cholesky(gram)
    return float(torch.log(chol.diagonal()).sum())  # 1/2 · 2·Σ log diag(L)


@hookimpl
def register_estimators(register):
    register(
        Estimator(
            name="transrate",
            score=score,
            higher_is_better=True,
            requires=(FEATURES,),
            description="TransRate, coding-rate gain from the class partition (Huang et al., ICML 2022)",
        )
    )
