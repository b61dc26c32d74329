"""Built-in source plugin: the digits zoo under short names, once ``autotransfer demo`` built it.

``autotransfer.zoo.build_zoo`` pretrains tiny timm models on digits 0–4 and writes
``manifest.json`` beside their weights; this plugin registers each entry (``digits-test_resnet``,
``shuffled-test_resnet`` ...) as a named source built through the ordinary timm source path
(``timm:<arch>@<weights>``), exactly as a user's local weights would be. Nothing is registered
until the zoo exists.
"""

from __future__ import annotations

import json

from autotransfer import hookimpl


@hookimpl
def register_sources(register):
    from autotransfer.zoo import default_zoo_dir

    manifest = default_zoo_dir() / "manifest.json"
    if not manifest.is_file():
        return
    from autotransfer.sources import SourceOptions
    from autotransfer_plugins.sources.timm_source import TimmResolver

    for entry in json.loads(manifest.read_text()):
        weights = manifest.parent / f"{entry['name']}.safetensors"
        sidecar = weights.with_suffix(".json")
        if not (weights.is_file() and sidecar.is_file()):
            continue
        arch = json.loads(sidecar.read_text())["architecture"]
        source = TimmResolver().resolve(f"{arch}@{weights}", SourceOptions())
        source.name = entry["name"]
        register(source)
