"""Example third-party zoo in ten lines: two weights files registered by name.

``AUTOTRANSFER_MY_ZOO`` names a folder holding ``a.safetensors`` and ``b.safetensors``, state dicts of
timm's ``test_resnet`` (``safetensors.torch.save_file(model.state_dict(), ...)``). Each becomes a
source name standing for its ``timm:`` spec at 16 px; nothing is read until the name is used.
Try it: ``AUTOTRANSFER_MY_ZOO=DIR autotransfer --plugins-dir plugins/examples sources``. Its test
(``tests/test_examples.py``) runs ``autotransfer.testing.check_source`` on both names.
"""

import os

from autotransfer import hookimpl
from autotransfer.sources import Alias


@hookimpl
def register_sources(register):
    folder = os.environ.get("AUTOTRANSFER_MY_ZOO")
    for name in ("a", "b") if folder else ():
        register(Alias(f"my-resnet-{name}", f"timm:test_resnet@{folder}/{name}.safetensors", options={"size": 16},
                       description=f"test_resnet weights {name}, at 16 px"))
