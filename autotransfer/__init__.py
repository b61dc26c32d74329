"""autotransfer: which pretrained model to start from, and how to transfer it.

``import autotransfer`` is light: torch, timm and transformers load only where used.
The public functions (``rank``, ``search``, ``leaderboard``, ``train``, ``evaluate``, ``load_model``,
...) are plain functions re-exported from the private modules that hold them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import AutotransferError, DataError, EstimatorError, NotApplicable, PluginError, SourceError
from .hookspecs import hookimpl, hookspec

__version__ = "0.1.0"

__all__ = [
    "AutotransferError",
    "DataError",
    "EstimatorError",
    "NotApplicable",
    "PluginError",
    "SearchConfig",
    "SearchResult",
    "SourceError",
    "TrainConfig",
    "TrainResult",
    "__version__",
    "estimate",
    "evaluate",
    "get_estimator",
    "hookimpl",
    "hookspec",
    "leaderboard",
    "load_dataset",
    "load_model",
    "rank",
    "search",
    "train",
]


# Public functions live in private modules (optuna-style) and load on first use, so that
# ``import autotransfer`` stays light: torch, timm, optuna and transformers load only where used.
_LAZY = {  # public name -> (module, its name there)
    "estimate": (".estimators", "estimate"),
    "evaluate": ("._evaluate", "evaluate"),
    "get_estimator": (".estimators", "get_estimator"),
    "leaderboard": ("._leaderboard", "leaderboard"),
    "load_dataset": (".datasets", "load"),
    "load_model": (".loading", "load_model"),
    "rank": ("._rank", "rank"),
    "search": ("._search.runner", "search"),
    "SearchConfig": ("._search.config", "SearchConfig"),
    "SearchResult": ("._search.runner", "SearchResult"),
    "train": ("._train", "train"),
    "TrainConfig": ("._train_config", "TrainConfig"),
    "TrainResult": ("._train", "TrainResult"),
}

if TYPE_CHECKING:
    from ._evaluate import evaluate
    from ._leaderboard import leaderboard
    from ._rank import rank
    from ._search.config import SearchConfig
    from ._search.runner import SearchResult, search
    from ._train import TrainResult, train
    from ._train_config import TrainConfig
    from .datasets import load as load_dataset
    from .estimators import estimate, get_estimator
    from .loading import load_model


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module, __name__), attr)
        globals()[name] = value  # later lookups skip this hook
        return value
    raise AttributeError(f"module 'autotransfer' has no attribute {name!r}")
