"""Built-in source plugin: the digits zoo under short names, once ``autotransfer demo`` built it.

``autotransfer.zoo.build_zoo`` pretrains tiny timm models on digits 0–4 and writes
``manifest.json`` beside their weights; this plugin registers each entry (``digits-test_resnet``,
``shuffled-test_resnet`` ...) as a named source built through the ordinary timm source path
(``timm:<arch>@<weights>``), exactly as a user's local weights would be. Registration reads two
small JSON files and imports neither torch nor timm; the timm source is resolved on first use.
Zoo sources are never part of the default zoo used on a user's own data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from autotransfer import hookimpl
from autotransfer.sources import Source, SourceOptions


class ZooSource(Source):
    """A digits-zoo entry; every method delegates to the timm source for ``timm:<arch>@<weights>``."""

    modality = "image"
    default = False  # not offered by default_source_specs: these know digits only

    def __init__(self, name: str, arch: str, weights: Path):
        self.name = name
        self.architecture = arch
        self._rest = f"{arch}@{weights}"
        self._src: Source | None = None

    def _real(self) -> Source:
        if self._src is None:
            from autotransfer_plugins.sources.timm_source import TimmResolver

            self._src = TimmResolver().resolve(self._rest, SourceOptions())
        return self._src

    @property
    def spec(self) -> str:  # type: ignore[override]
        return self._real().spec

    @property
    def feature_dim(self) -> int:
        return self._real().feature_dim

    def identity(self) -> str:
        return self._real().identity()

    def available(self) -> tuple[bool, str]:
        return self._real().available()

    def build(self, pretrained: bool = True):
        return self._real().build(pretrained)

    def load_item(self, item: Any, train: bool = False) -> Any:
        return self._real().load_item(item, train)

    def collate(self, inputs: list[Any]) -> Any:
        return self._real().collate(inputs)

    def transform_key(self, train: bool = False) -> str:
        return self._real().transform_key(train)

    def export(self, folder: Path) -> dict[str, Any] | None:
        return self._real().export(folder)


def _zoo_dir() -> Path:
    root = os.environ.get("AUTOTRANSFER_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "autotransfer"
    from autotransfer.zoo import ZOO_VERSION

    return base / "zoo" / f"digits-{ZOO_VERSION}"


@hookimpl
def register_sources(register):
    manifest = _zoo_dir() / "manifest.json"
    if not manifest.is_file():
        return
    for entry in json.loads(manifest.read_text()):
        weights = manifest.parent / f"{entry['name']}.safetensors"
        sidecar = weights.with_suffix(".json")
        if weights.is_file() and sidecar.is_file():
            register(ZooSource(entry["name"], json.loads(sidecar.read_text())["architecture"], weights))
