"""A scratch baseline that its share of the budget can train long enough to be a reference.

A baseline ends by its own rules (``ScratchBaselinePruner.hopeless``: it cannot catch up with the
best finished trial; ``converged``: it stopped improving), and those need ``warmup_epochs +
patience + 1`` epochs of its curve. On a few thousand images at an ImageNet model's input size
a from-scratch epoch on a CPU costs minutes (forward and backward, every parameter), so the
baselines' share of the budget buys one epoch: the curve is at chance when the share ends, and
the comparison with scratch is one in name only.

Such a baseline trains its architecture at a smaller input size instead: the largest multiple of
``SIDE_STEP`` px (at least ``MIN_SIDE``) whose predicted epochs fit the share. The cost of an epoch
is predicted from the source's measured forward cost per item (ranking's extraction): a training
step costs about ``TRAIN_FACTOR`` forward passes, and the validation pass one; convolution cost
grows with the pixels. A smaller input suits a network trained from random init on a few
thousand images (it has no pretrained scale to match), and if it wins it is exported at that size.
"""

from __future__ import annotations

import math
from typing import Any

MIN_SIDE = 64  # never smaller than this (px)
SIDE_STEP = 32  # sizes are multiples of this
TRAIN_FACTOR = 3.0  # a training step (forward + backward + update) in forward passes


def epoch_seconds(per_item: float, n_train: int, n_val: int) -> float:
    """Predicted seconds of one training epoch plus its validation pass at the measured input size."""
    return per_item * (TRAIN_FACTOR * n_train + n_val)


def affordable_side(native: int, per_item: float, n_train: int, n_val: int, seconds: float,
                    epochs: int) -> int | None:
    """The input side at which ``epochs`` epochs fit ``seconds``; None when the native side already fits."""
    need = epochs * epoch_seconds(per_item, n_train, n_val)
    if need <= 0 or need <= seconds:
        return None
    side = native * math.sqrt(max(0.0, seconds) / need)
    side = max(MIN_SIDE, int(side // SIDE_STEP) * SIDE_STEP)
    return side if side < native else None


def resized_spec(spec: str, side: int) -> str:
    """``spec`` with its input size set to ``side`` (the ``size`` option of image sources)."""
    from ..sources import parse_query

    head, query = parse_query(spec)
    query = {**query, "size": str(side)}
    return head + "?" + "&".join(f"{k}={v}" for k, v in query.items())


def native_side(source: Any) -> int | None:
    """The source's square input side, or None when it has no resizable image input."""
    cfg = getattr(source, "data_config", None) or {}
    size = cfg.get("input_size") if getattr(source, "modality", "") == "image" else None
    if not size or size[-1] != size[-2] or not getattr(source, "spec", ""):
        return None
    return int(size[-1])
