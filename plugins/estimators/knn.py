"""kNN: leave-one-out k-nearest-neighbour accuracy under cosine similarity.

A non-parametric probe of how well the features already separate the target classes, the
k-NN evaluation used for self-supervised representations (e.g. Wu et al., CVPR 2018; Caron
et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021). Features
are L2-normalised; each sample is classified by a majority vote of its k most similar other
samples (k = 5 by default; with several classes even an odd k can tie, and a tie goes to
the tied class whose member is nearest). Returns the accuracy in [0, 1]; higher is better. Similarities are
computed in row batches, so memory is O(batch · N).
"""

from __future__ import annotations

from typing import Any

from autotransfer import hookimpl
from autotransfer.estimators import FEATURES, Estimator

from ._common import as_labels, as_tensor


def score(
    features: Any,
    labels: Any,
    *,
    source_probs: Any = None,
    device: str = "cpu",
    k: int = 5,
    batch_size: int | None = None,
) -> float:
    """Leave-one-out k-NN accuracy of ``features`` for 1-D ``labels``; in [0, 1], higher is better."""
    import torch

    f = as_tensor(features, device, dtype=torch.float32)
    codes, num_classes = as_labels(labels, device)
    n = len(f)
    k = max(1, min(k, n - 1))
    f = torch.nn.functional.normalize(f, dim=1)
    batch = batch_size or max(1, min(n, (1 << 24) // n))  # ~64 MiB of float32 similarities
    correct = 0
    for start in range(0, n, batch):
        rows = torch.arange(start, min(start + batch, n), device=f.device)
        sim = f[rows] @ f.T
        sim[torch.arange(len(rows), device=f.device), rows] = -float("inf")  # leave one out
        nearest = codes[sim.topk(k, dim=1).indices]  # (b, k), most similar first
        votes = torch.zeros(len(rows), num_classes, dtype=torch.int64, device=f.device)
        votes.scatter_add_(1, nearest, torch.ones_like(nearest))
        # argmax returns the first maximum, i.e. the nearest neighbour among the tied classes.
        winner = votes.gather(1, nearest).argmax(1)
        pred = nearest.gather(1, winner[:, None])[:, 0]
        correct += int((pred == codes[rows]).sum())
    return correct / n


@hookimpl
def register_estimators(register):
    register(
        Estimator(
            name="knn",
            score=score,
            higher_is_better=True,
            requires=(FEATURES,),
            description="Leave-one-out 5-NN accuracy on cosine similarity of L2-normalised features",
        )
    )
