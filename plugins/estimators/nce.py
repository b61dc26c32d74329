"""NCE: negative conditional entropy of target labels given the source model's hard labels.

Tran, Nguyen and Hassner, "Transferability and Hardness of Supervised Classification
Tasks", ICCV 2019. The source head's argmax labels z and the target labels y give an
empirical joint P(y, z); NCE = -H(Y | Z) = Σ P(y, z)·log P(y | z). It is ≤ 0, and 0 exactly
when the target label is a function of the source label. Higher is better.
"""

from __future__ import annotations

from typing import Any

from autotransfer import hookimpl
from autotransfer.errors import NotApplicable
from autotransfer.estimators import SOURCE_PROBS, Estimator

from ._common import as_labels, as_tensor


def score(features: Any, labels: Any, *, source_probs: Any = None, device: str = "cpu") -> float:
    """-H(Y | argmax source_probs) for 1-D ``labels``; ``features`` are unused. Higher is better."""
    import torch

    if source_probs is None:
        raise NotApplicable("NCE needs source-head probabilities (source_probs), and there are none")
    z = as_tensor(source_probs, device).argmax(1)
    codes, num_classes = as_labels(labels, device)
    num_source = int(z.max()) + 1
    counts = torch.bincount(codes * num_source + z, minlength=num_classes * num_source)
    joint = counts.view(num_classes, num_source).to(torch.float64) / len(z)
    marginal = joint.sum(0, keepdim=True).expand_as(joint)
    nz = joint > 0
    return float((joint[nz] * torch.log(joint[nz] / marginal[nz])).sum())


@hookimpl
def register_estimators(register):
    register(
        Estimator(
            name="nce",
            score=score,
            higher_is_better=True,
            requires=(SOURCE_PROBS,),
            description="NCE, negative conditional entropy of target given source labels (Tran et al., ICCV 2019)",
        )
    )
