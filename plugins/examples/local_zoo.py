"""Example third-party source plugin: every weights file in a folder becomes a named source.

Set ``AUTOTRANSFER_LOCAL_ZOO=/path/to/folder`` holding ``<name>.safetensors`` (or ``.pth``) files,
each with a JSON sidecar ``<name>.json`` saying at least ``{"architecture": "<timm model>"}``
(plus ``input_size``, ``mean``, ``std`` ... as the timm source documents). Each file is
registered as source ``<name>``, an ``Alias`` of ``timm:<architecture>@<file>``: built through the
ordinary timm source path, so it is ranked, searched and exported like any other source. Use it
with ``autotransfer --plugins-dir plugins/examples sources``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from autotransfer import hookimpl
from autotransfer.console import warn
from autotransfer.sources import Alias


@hookimpl
def register_sources(register):
    folder = os.environ.get("AUTOTRANSFER_LOCAL_ZOO")
    if not folder:
        return
    for weights in sorted(Path(folder).glob("*.safetensors")) + sorted(Path(folder).glob("*.pth")):
        sidecar = weights.with_suffix(".json")
        try:
            arch = json.loads(sidecar.read_text())["architecture"]
        except (OSError, ValueError, KeyError):
            warn(f"local zoo: {weights.name} skipped: {sidecar.name} missing or without \"architecture\"")
            continue
        register(Alias(weights.stem, f"timm:{arch}@{weights.resolve()}"))
