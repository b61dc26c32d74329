"""LEEP: log expected empirical prediction through the source model's own classifier head.

Nguyen, Hassner, Seeger and Archambeau, "LEEP: A New Measure to Evaluate Transferability of
Learned Representations", ICML 2020. With source-head probabilities θ(x) over source classes
z, the empirical joint P(y, z) = mean_i θ(x_i)_z·[y_i = y] gives P(y | z), and LEEP is the
mean log-likelihood of the "expected empirical predictor": mean_i log Σ_z P(y_i | z)·θ(x_i)_z.
It is ≤ 0; higher is better (0 when the source head already determines the target label,
-H(Y) when the head ignores the input).
"""

from __future__ import annotations

from typing import Any

from autotransfer import hookimpl
from autotransfer.errors import NotApplicable
from autotransfer.estimators import SOURCE_PROBS, Estimator

from ._common import as_labels, as_tensor, class_sums


def score(features: Any, labels: Any, *, source_probs: Any = None, device: str = "cpu") -> float:
    """LEEP of the (N, Z) ``source_probs`` for 1-D ``labels``; ``features`` are unused. Higher is better."""
    import torch

    if source_probs is None:
        raise NotApplicable("LEEP needs source-head probabilities (source_probs), and there are none")
    theta = as_tensor(source_probs, device)
    codes, num_classes = as_labels(labels, device)
    joint = class_sums(theta, codes, num_classes) / len(theta)  # P(y, z), (C, Z)
    marginal = joint.sum(0, keepdim=True)  # P(z)
    conditional = torch.where(marginal > 0, joint / marginal.clamp(min=1e-300), torch.zeros_like(joint))
    total = 0.0
    for start in range(0, len(theta), 4096):  # bounds memory to 4096·Z instead of N·Z
        rows = slice(start, start + 4096)
        eep = (conditional[codes[rows]] * theta[rows]).sum(1)  # Σ_z P(y_i|z)·θ_iz
        total += float(torch.log(eep.clamp(min=1e-300)).sum())
    return total / len(theta)


@hookimpl
def register_estimators(register):
    register(
        Estimator(
            name="leep",
            score=score,
            higher_is_better=True,
            requires=(SOURCE_PROBS,),
            description="LEEP, log-likelihood of the source head's empirical predictor (Nguyen et al., ICML 2020)",
        )
    )
