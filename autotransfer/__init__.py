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
    "load_model",
    "search",
    "train",
]


def __getattr__(name: str):
    # `autotransfer.search` is a callable subpackage: autotransfer.search(data, **options)
    if name == "search":
        import importlib

        return importlib.import_module(".search", __name__)
    raise AttributeError(f"module 'autotransfer' has no attribute {name!r}")


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


def train(dataset: Any, source: Any, strategy: Any, **options: Any):
    """Fine-tune ``source`` on ``dataset`` with ``strategy``; returns a ``TrainResult`` (see ``autotransfer.train``).

    ``autotransfer.train`` is also the module holding the loop; importing it keeps this call
    working (the module is callable), so ``autotransfer.train(...)`` is always this function.
    """
    from .train import train as _train

    return _train(dataset, source, strategy, **options)


def load_model(path: Any, **options: Any):
    """Load a model saved by ``TrainResult.save``; ``.predict(items)`` and ``.tasks`` (see ``autotransfer.model``)."""
    from .model import load_model as _load

    return _load(path, **options)
