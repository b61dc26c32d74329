"""The estimator interface and the ``estimate`` entry point.

An estimator is a pure function of arrays. Built-ins live in ``plugins/estimators``
and register through ``register_estimators`` like any third-party plugin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import EstimatorError, NotApplicable
from .plugins import get_registry
from .registry import BUILTIN, Provider

FEATURES = "features"
SOURCE_PROBS = "source_probs"


@dataclass
class Estimator:
    """A transferability estimator."""

    name: str  # registry key, e.g. "logme"
    score: Callable[..., float]  # score(features, labels, *, source_probs=None, device="cpu") -> float
    higher_is_better: bool = True  # ranking flips the sign once when False
    requires: tuple[str, ...] = (FEATURES,)  # inputs it needs: "features" and/or "source_probs"
    supports_regression: bool = False  # accepts a 2-D float target (regression / multi-label)
    description: str = ""  # one line for listings; cite the paper
    provider: Provider = field(default=BUILTIN, compare=False)  # set by the plugin manager

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "provider": str(self.provider),
            "higher_is_better": self.higher_is_better,
            "requires": ",".join(self.requires),
            "description": self.description,
        }


DEFAULT_ESTIMATORS = ("logme", "hscore_shrinkage", "nce", "leep", "transrate", "gbc", "knn")  # ranking order of columns

def get_estimator(name: str) -> Estimator:
    """The registered estimator called ``name`` (error lists close matches)."""

    return get_registry("estimators").get(name)


def default_estimators() -> list[str]:
    """The estimators run when none are named: ``DEFAULT_ESTIMATORS`` that are registered, in that order."""
    registered = get_registry("estimators")
    return [e for e in DEFAULT_ESTIMATORS if e in registered]


def prepare_labels(labels: Any) -> tuple[np.ndarray, bool]:
    """Validate labels; return (labels, is_classification).

    1-D labels are classification: any hashable values are re-encoded to 0..C-1 in
    sorted order. 2-D float labels are a regression / multi-label target.
    """
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1 and not np.issubdtype(y.dtype, np.floating):
        y = y[:, 0]
    if y.ndim == 1:
        _, codes = np.unique(y, return_inverse=True)
        return codes.astype(np.int64), True
    if y.ndim == 2:
        y = y.astype(np.float64)
        if not np.isfinite(y).all():
            raise EstimatorError("labels contain NaN or Inf; expected finite regression targets")
        return y, False
    raise EstimatorError(f"labels must be 1-D class labels or a 2-D target, got shape {y.shape}")


def estimate(
    name: str,
    features: Any,
    labels: Any,
    *,
    source_probs: Any = None,
    device: str = "cpu",
    source: str | None = None,
) -> float:
    """Score how well ``features`` transfer to ``labels`` with estimator ``name``.

    ``features`` is (N, D); ``labels`` is (N,) class labels (re-encoded to 0..C-1) or an
    (N, K) regression / multi-label target; ``source_probs`` is (N, C_source) source-head
    probabilities for estimators that need them. ``source`` only names the features
    in error messages. Raises ``NotApplicable`` when a required input is missing.
    """
    est = get_estimator(name)
    who = f" of source {source!r}" if source else ""
    f = np.asarray(features)
    if f.ndim != 2:
        raise EstimatorError(f"features{who} must be 2-D (samples, dims), got shape {f.shape}")
    if not np.isfinite(f).all():
        bad = int((~np.isfinite(f)).any(axis=1).sum())
        raise EstimatorError(
            f"features{who} contain NaN or Inf in {bad} of {len(f)} rows; "
            "check the source model (e.g. fp16 overflow) or re-extract with --device cpu"
        )
    y, is_cls = prepare_labels(labels)
    if len(y) != len(f):
        raise EstimatorError(f"features{who} have {len(f)} rows but labels have {len(y)}; they must match")
    if is_cls:
        counts = np.bincount(y)
        if len(counts) < 2:
            raise EstimatorError(f"labels{who} have a single class; estimators need at least 2 classes")
        if counts.min() < 2:
            raise EstimatorError(
                f"class {int(counts.argmin())} has {int(counts.min())} sample(s){who}; every class needs "
                "at least 2 — add examples or use a larger --max-samples"
            )
    elif not est.supports_regression:
        raise NotApplicable(f"estimator {name!r} needs 1-D class labels, not a {y.shape[1]}-column target")
    sp = None
    if SOURCE_PROBS in est.requires:
        if source_probs is None:
            raise NotApplicable(f"estimator {name!r} needs source-head probabilities{who}, and there are none")
        sp = np.asarray(source_probs, dtype=np.float64)
        if sp.shape[0] != len(f):
            raise EstimatorError(f"source_probs{who} have {sp.shape[0]} rows, features {len(f)}")
    return float(est.score(f, y, source_probs=sp, device=device))
