"""Built-in dataset plugin: image class folders, optionally pre-split."""

from pathlib import Path

from autotransfer import hookimpl
from autotransfer.data.images import load_image_folder, looks_like_image_folder


@hookimpl
def load_dataset(path, options):
    p = Path(path)
    if looks_like_image_folder(p):
        return load_image_folder(p, dict(options))
    return None
