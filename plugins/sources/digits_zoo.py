"""Built-in source plugin: the digits zoo under short names, once ``autotransfer demo`` built it.

``autotransfer.zoo.build_zoo`` pretrains tiny timm models on digits 0–4 and writes
``manifest.json`` beside their weights; this plugin registers each entry (``digits-test_resnet``,
``shuffled-test_resnet`` ...) as an ``Alias`` of ``timm:<arch>@<weights>``: the ordinary timm source
path, exactly as a user's local weights would be. Registration reads two small JSON files and imports
neither torch nor timm; the timm source is resolved on first use.
Zoo sources are never part of the default zoo used on a user's own data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from autotransfer import hookimpl
from autotransfer.sources import Alias
from autotransfer.zoo import ZOO_VERSION


def _zoo_dir() -> Path:
    root = os.environ.get("AUTOTRANSFER_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "autotransfer"

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
            arch = json.loads(sidecar.read_text())["architecture"]
            # default=False: not offered by default_source_specs, these know digits only
            register(Alias(entry["name"], f"timm:{arch}@{weights}", modality="image", default=False))
