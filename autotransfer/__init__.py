"""autotransfer: which pretrained model to start from, and how to transfer it.

``import autotransfer`` is light: torch, timm and transformers load only where used.
"""

from __future__ import annotations

from typing import Any

from .errors import AutotransferError, DataError, EstimatorError, NotApplicable, PluginError, SourceError
from .hookspecs import hookimpl, hookspec

__version__ = "0.1.0"

__all__ = [
    "AutotransferError",
    "DataError",
    "EstimatorError",
    "NotApplicable",
    "PluginError",
    "SourceError",
    "__version__",
    "estimate",
    "get_estimator",
    "hookimpl",
    "hookspec",
    "load_dataset",
]


def estimate(name: str, features: Any, labels: Any, *, source_probs: Any = None, device: str = "cpu") -> float:
    """Transferability score of ``features`` for ``labels`` by estimator ``name`` (see ``autotransfer.estimators``)."""
    from .estimators import estimate as _estimate

    return _estimate(name, features, labels, source_probs=source_probs, device=device)


def get_estimator(name: str):
    """The registered estimator ``name``; ``.higher_is_better`` says its direction."""
    from .estimators import get_estimator as _get

    return _get(name)


def load_dataset(path: Any, **options: Any):
    """Load and validate a dataset folder or table (see ``autotransfer.data.load``)."""
    from .data import load

    return load(path, **options)
