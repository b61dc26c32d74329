"""A class made on first use, so a plugin module that defines an ``nn.Module`` imports without torch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def lazy_class(namespace: dict[str, Any], name: str, make: Callable[[], type]) -> Callable[[], type]:
    """A function returning the class ``make()`` builds, made once, on first call.

    ``namespace`` is the defining module's ``globals()``. The class is stored there as ``name``,
    with ``__qualname__`` and ``__module__`` set so pickle finds it as ``<module>.<name>``, and the
    module gets a ``__getattr__`` that makes it on first access: unpickling a model in a fresh
    process, or ``from <module> import <name>``, works before anything called the returned function::

        def _make_backbone_class():
            import torch.nn as nn

            class MyBackbone(nn.Module): ...
            return MyBackbone

        _backbone_cls = lazy_class(globals(), "MyBackbone", _make_backbone_class)
    """
    getters: dict[str, Callable[[], type]] = namespace.setdefault("_lazy_classes", {})

    def get() -> type:
        cls = namespace.get(name)
        if cls is None:
            cls = make()
            cls.__name__ = cls.__qualname__ = name
            cls.__module__ = namespace["__name__"]
            namespace[name] = cls
        return cls

    def module_getattr(attr: str) -> type:
        if attr in getters:
            return getters[attr]()
        raise AttributeError(f"module {namespace['__name__']!r} has no attribute {attr!r}")

    getters[name] = get
    namespace.setdefault("__getattr__", module_getattr)
    return get
