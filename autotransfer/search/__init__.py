"""The search: ``autotransfer.search(data, **options) -> SearchResult``.

This package is itself callable, so ``autotransfer.search(...)`` works although
``autotransfer.search`` is also the name of this package.
"""

from __future__ import annotations

import sys
import types
from typing import Any


def search(data: Any, **options: Any):
    """Rank sources, search source × strategy × hyper-parameters, export the winner (see ``runner.search``)."""
    from .rundir import write_errors
    from .runner import search as _search

    with write_errors(options.get("out"), options.get("storage")):
        return _search(data, **options)


def __getattr__(name: str):
    if name in ("SearchResult", "ScratchBaselinePruner"):
        from . import pruner, runner

        return {"SearchResult": runner.SearchResult, "ScratchBaselinePruner": pruner.ScratchBaselinePruner}[name]
    raise AttributeError(name)


class _CallableModule(types.ModuleType):
    def __call__(self, data: Any, **options: Any):
        return search(data, **options)


sys.modules[__name__].__class__ = _CallableModule
