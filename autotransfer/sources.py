"""The source-model interface (implemented by plugins such as ``plugins/sources/timm_source.py``).

A *source* is a pretrained backbone that can be ranked and fine-tuned. The core never
knows a concrete model: it asks the registry for a ``Source`` by name, or asks a
``SpecResolver`` registered for a prefix (``timm``, ``hf``) to build one from a spec
string such as ``timm:resnet18@/path/weights.safetensors``.

Data flow, the same for feature extraction and training::

    items (paths or texts) --load_item(item, train)--> per-item inputs (in DataLoader workers)
        --collate(list)--> batch inputs --Backbone.forward--> (B, feature_dim) pooled features
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .registry import BUILTIN, Provider

if TYPE_CHECKING:  # torch is imported only where used
    import torch


@dataclass
class SourceOptions:
    """Options every source resolver receives."""

    offline: bool = False  # never touch the network (also implied by HF_HUB_OFFLINE=1)
    trust_remote_code: bool = False  # allow HF models with custom code
    cache_dir: str | None = None  # hub/model cache override
    pooling: str | None = None  # text pooling override: "mean" or "cls"
    extra: dict[str, Any] = field(default_factory=dict)  # resolver-specific options


class Source(ABC):
    """A candidate source model. Subclasses set the class attributes or properties below."""

    name: str  # registry key / display name, e.g. "timm:resnet18"
    modality: str  # "image" or "text"
    provider: Provider = BUILTIN  # set by the plugin manager at registration
    spec: str = ""  # the spec string that rebuilds this source (saved with exported models)
    architecture: str = ""  # architecture name, used for the scratch baseline's label

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
    def build(self, pretrained: bool = True) -> "torch.nn.Module":
        """The backbone: ``forward(batch) -> (B, feature_dim)`` pooled features.

        ``pretrained=False`` is the scratch baseline: same architecture, random init.
        The module must expose ``layer_groups() -> list[list[str]]`` (parameter names,
        ordered input -> output, disjoint, covering every parameter) and
        ``source_head`` (an ``nn.Module`` mapping features to source-class logits, or None).
        """

    @abstractmethod
    def load_item(self, item: Any, train: bool = False) -> Any:
        """Turn one dataset item (image path / text) into model input; runs in loader workers."""

    @abstractmethod
    def collate(self, inputs: list[Any]) -> Any:
        """Batch per-item inputs (stack images; tokenize + pad texts dynamically)."""

    def transform_key(self, train: bool = False) -> str:
        """A string that changes whenever the input pipeline changes (part of the feature-cache key)."""
        return f"{self.identity()}|train={train}"

    def describe(self) -> dict[str, Any]:
        ok, _ = self.available()
        return {"name": self.name, "modality": self.modality, "provider": str(self.provider),
                "feature_dim": self._maybe_dim(), "offline_weights": ok}

    def _maybe_dim(self) -> int | None:
        try:
            return self.feature_dim
        except Exception:
            return None


class SpecResolver(ABC):
    """Builds sources from spec strings ``<name>:<rest>``; registered via ``register_sources``."""

    name: str  # the prefix, e.g. "timm" or "hf"
    provider: Provider = BUILTIN
    description: str = ""

    @abstractmethod
    def resolve(self, rest: str, options: SourceOptions) -> Source:
        """The source for ``<name>:<rest>``; raise ``SourceError`` for a bad spec (list close matches)."""

    def defaults(self) -> list[str]:
        """Spec strings of this resolver's default zoo (used when ``--sources`` is not given)."""
        return []

    def describe(self) -> Mapping[str, Any]:
        return {"name": self.name, "modality": "", "description": self.description}


Builder = Callable[[bool], Any]
