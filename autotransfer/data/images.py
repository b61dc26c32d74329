"""Image-folder datasets."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .dataset import Dataset
from .folders import IMAGE_EXTS, count_exts, scan_class_folders
from .splits import assemble


def _read_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    data = path.read_bytes()
    try:
        import io

        with Image.open(io.BytesIO(data)) as im:
            im.verify()  # cheap integrity check; decoding happens at feature/training time
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None
    return str(path), hashlib.sha256(data).hexdigest()


def looks_like_image_folder(root: Path) -> bool:
    if not root.is_dir():
        return False
    counts = count_exts(root)
    n_img = sum(v for k, v in counts.items() if k in IMAGE_EXTS)
    return n_img > 0 and n_img >= counts.get(".txt", 0)


def load_image_folder(root: Path, options: dict) -> Dataset:
    warnings: list[str] = []
    records = scan_class_folders(root, IMAGE_EXTS, _read_image, "image", warnings)
    return assemble(
        name=root.resolve().name, path=str(root), modality="image", records=records,
        task_names=["label"], options=options, warnings=warnings,
    )
