"""Built-in dataset plugin: text class folders (``DATA/<class>/*.txt``), optionally pre-split."""

from pathlib import Path

from autotransfer import hookimpl
from autotransfer.data.texts import load_text_folder, looks_like_text_folder


@hookimpl
def load_dataset(path, options):
    p = Path(path)
    if looks_like_text_folder(p):
        return load_text_folder(p, dict(options))
    return None
