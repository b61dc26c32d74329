"""The scratch baselines' sources: one per architecture family among the top-k, its cheapest member.

A family is an architecture without its size suffix (``resnet18/50`` -> ``resnet``): trained from
scratch on a small target, a family's scaled variants differ in cost, not in how well they learn,
so one baseline stands for them all.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from ..strategies import source_info

_SIZE_SUFFIX = re.compile(r"(?:\d+[a-z]?|[_-](?:b\d+|[smlx]|xl|xxl|nano|pico|femto|mini|tiny|small|base|medium|large"
                          r"|huge|giant))+$", re.IGNORECASE)


def architecture_family(arch: str) -> str:
    """``arch`` without its size suffix: the scaled members of one family share a scratch baseline.

    ``tf_efficientnet_lite0/1/2`` -> ``tf_efficientnet_lite``, ``resnet18/50`` -> ``resnet``,
    ``convnext_tiny/small`` -> ``convnext``, ``efficientnet_b0/b3`` -> ``efficientnet``. A name
    with no size suffix is its own family.
    """
    name = arch.rsplit("/", 1)[-1]
    while True:
        short = _SIZE_SUFFIX.sub("", name).rstrip("_-")
        if not short or short == name:
            return name
        name = short


def baseline_sources(architectures: dict[str, str], ranked: list[str], limit: int | None,
                     cost: Callable[[str], float] | None = None) -> list[str]:
    """One source per architecture family among the ranked top sources, best-ranked family first.

    Each gets a scratch baseline (its architecture from random init): a small target task is often
    learnt best from scratch by an architecture other than the top-ranked source's, and a transfer
    trial must beat the best of them. Within a family the cheapest member (``cost``; else the
    best-ranked) stands for it: trained from scratch on a small target, a family's scaled variants
    differ in cost, not in how well they learn (measured on the imagenet benchmark task, 8 epochs:
    val 0.407 / 0.407 / 0.353 for lite0 / lite1 / lite2, in 148 / 174 / 205 s). ``limit`` caps
    how many (None: all).
    """
    families: dict[str, list[str]] = {}
    for s in ranked:
        families.setdefault(architecture_family(architectures.get(s, s)), []).append(s)
    picked = [min(members, key=cost) if cost else members[0] for members in families.values()]
    return picked[:limit]


def cost_proxy(source: Any) -> float:
    """Relative cost of training ``source``'s architecture: parameters × input pixels (images)."""

    params = float(sum(source_info(source).group_sizes))
    size = (getattr(source, "data_config", None) or {}).get("input_size") if source.modality == "image" else None
    return params * (float(math.prod(size[1:])) if size else 1.0)
