"""The source contract: what a source plugin implements (``Source``, ``SpecResolver``) and gets (``SourceOptions``).

A *source* is a pretrained backbone that can be ranked and fine-tuned. The core never
knows a concrete model: it asks the registry for a ``Source`` (or an ``Alias``) by name, or
asks a ``SpecResolver`` registered for a prefix (``timm``, ``hf``) to build one from a spec
string such as ``timm:resnet18@/path/weights.safetensors``. ``Source.build`` returns a
``Backbone``. ``autotransfer.testing.check_source`` runs the whole contract on one source.

Data flow, the same for feature extraction and training::
    items (paths or texts) --load_item(item, train)--> per-item inputs (in DataLoader workers)
        --collate(list)--> batch inputs --Backbone.forward--> (B, feature_dim) pooled features

This module sits below the plugin manager (``autotransfer.plugins`` checks registered items against
it) and imports nothing from it; resolving spec strings through the registered plugins is
``autotransfer.sources``, which re-exports every name defined here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .errors import SourceError
from .registry import BUILTIN, Provider

if TYPE_CHECKING:  # torch is imported only where used
    import torch

    from .decode_cache import DecodeSpec



@dataclass
class SourceOptions:
    """Options every source resolver receives."""

    offline: bool = False  # never touch the network (also implied by HF_HUB_OFFLINE=1)
    trust_remote_code: bool = False  # allow HF models with custom code
    cache_dir: str | None = None  # hub/model cache override
    pooling: str | None = None  # text pooling override: "mean" or "cls"
    extra: dict[str, Any] = field(default_factory=dict)  # resolver-specific options


@runtime_checkable
class Backbone(Protocol):
    """What ``Source.build`` returns: an ``nn.Module`` with these members (the core uses no others).

    Calling it on a collated batch gives ``(B, feature_dim)`` pooled features.
    """

    # the pretrained classifier, an nn.Module mapping pooled features to source-class logits (LEEP
    # and NCE need it), or None; not a submodule: never trained, not in parameters()/state_dict()
    source_head: Any

    def __call__(self, batch: Any) -> torch.Tensor: ...

    def layer_groups(self) -> list[list[str]]:
        """Parameter names grouped input -> output (what "unfreeze depth k" counts): disjoint, covering
        every parameter, each group after the previous one in forward order."""
        ...


class Source(ABC):
    """A candidate source model. Subclasses set the class attributes or properties below."""

    name: str  # registry key / display name, e.g. "timm:resnet18"
    modality: str  # "image" or "text"
    provider: Provider = BUILTIN  # set by the plugin manager at registration
    spec: str = ""  # the spec string that rebuilds this source (saved with exported models)
    architecture: str = ""  # architecture name, used for the scratch baseline's label
    description: str = ""  # one line for ``autotransfer sources``
    default: bool = True  # a registered source of the data's modality joins the default zoo (no --sources)
    offline_zoo: bool = False  # the default zoo when the hub cannot be reached (weights ship in a package)

    @property
    @abstractmethod
    def feature_dim(self) -> int:
        """Width of the pooled features ``build(...)`` returns."""

    @abstractmethod
    def identity(self) -> str:
        """Stable cache key: name plus a weights-file hash or hub revision."""

    @abstractmethod
    def available(self) -> tuple[bool, str]:
        """(whether the pretrained weights can be loaded now, how to provide them if not)."""

    @abstractmethod
    def build(self, pretrained: bool = True) -> Backbone:
        """The backbone (see ``Backbone``): ``forward(batch) -> (B, feature_dim)`` pooled features.

        ``pretrained=False`` is the scratch baseline: same architecture, random init.
        """

    @abstractmethod
    def load_item(self, item: Any, train: bool = False) -> Any:
        """Turn one dataset item (image path / text) into model input; runs in loader workers."""

    @abstractmethod
    def collate(self, inputs: list[Any]) -> Any:
        """Batch per-item inputs (stack images; tokenize + pad texts dynamically)."""

    def decode_spec(self) -> DecodeSpec | None:
        """How this source's images can be decoded once and shared (``autotransfer.decode_cache``).

        None (the default, and for text) means items always stream through ``load_item``.
        A source returning a spec must implement ``load_decoded``.
        """
        return None

    def eval_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """(mean, std) per channel when the eval input from a cached image is exactly its centre crop
        (``decode_spec().crop``) scaled to [0, 1] and normalised; then extraction may batch the
        cached uint8 crops onto the device and normalise there. None (default): ``load_decoded``
        per image."""
        return None

    def load_decoded(self, image: Any, train: bool = False) -> Any:
        """Model input from a cached uint8 ``(side, side, channels)`` array (eval crop, or training augmentation)."""
        from PIL import Image

        return self.load_item(Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image), train)

    def decoded_augmentation(self) -> Callable[..., torch.Tensor] | None:
        """The training augmentation of a batch of cached images, or None (the default): then every
        training image goes through ``load_decoded(image, train=True)``.

        A callable ``(images, index, rng, device) -> (B, C, h, w) float32 tensor on device``:
        ``images`` is a split's uint8 ``(N, side, side, channels)`` cache array, ``index`` the batch's
        rows, ``rng`` a ``numpy.random.Generator`` it must draw every random number from (so an
        epoch's augmentation depends on its seed alone). ``autotransfer.augment.CropFlipJitter``
        is one.
        """
        return None

    def transform_key(self, train: bool = False) -> str:
        """A string that changes whenever the input pipeline changes (part of the feature-cache key)."""
        return f"{self.identity()}|train={train}"

    def export(self, folder: Path) -> dict[str, Any] | None:
        """What rebuilds this source for inference without its pretrained weights, or None.

        Called when a model trained on this source is saved into ``folder``. Return a JSON-able
        dict with ``"resolver"`` (the prefix of a registered ``SpecResolver`` whose
        ``from_export`` rebuilds it) plus the architecture and the resolved input pipeline;
        any files it needs (a tokenizer, a model config) are written under ``folder`` and named
        relative to it. None (the default) means the model is reloaded from ``spec``, which then
        needs the source's files at load time.
        """
        return None

    def with_options(self, query: dict[str, str]) -> Source:
        """This source with spec options, for ``<registered name>?size=64``; by default it takes none."""

        raise SourceError(f"source {self.name!r} takes no options (got {query}); pass {self.name!r} alone")

    def describe(self) -> dict[str, Any]:
        ok, _ = self.available()
        return {"name": self.name, "modality": self.modality, "provider": str(self.provider),
                "feature_dim": self._maybe_dim(), "offline_weights": ok, "description": self.description}

    def _maybe_dim(self) -> int | None:
        try:
            return self.feature_dim
        except Exception:
            return None


class SpecResolver(ABC):
    """Builds sources from spec strings ``<name>:<rest>``; registered via ``register_source_resolvers``."""

    name: str  # the prefix, e.g. "timm" or "hf"
    provider: Provider = BUILTIN
    description: str = ""
    modality: str = ""  # "image" or "text" for the sources it builds; "" when it varies

    @abstractmethod
    def resolve(self, rest: str, options: SourceOptions) -> Source:
        """The source for ``<name>:<rest>``; raise ``SourceError`` for a bad spec (list close matches)."""

    def defaults(self) -> list[str]:
        """Spec strings of this resolver's default zoo (used when ``--sources`` is not given)."""
        return []

    def from_export(self, export: Mapping[str, Any], folder: Path, name: str, spec: str,
                    options: SourceOptions) -> Source:
        """The inference source described by ``Source.export``'s dict (files relative to ``folder``).

        It must build the same architecture (``build(pretrained=False)``) and the same input
        pipeline as the source that was exported, reading nothing outside ``folder``.
        """

        raise SourceError(f"source resolver {self.name!r} cannot rebuild an exported source; "
                          f"load the model with source= given explicitly")

    def describe(self) -> Mapping[str, Any]:
        return {"name": self.name, "modality": self.modality, "description": self.description}


Builder = Callable[[bool], Any]
