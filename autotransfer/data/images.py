"""Image-folder datasets."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from .dataset import Dataset
from .folders import IMAGE_EXTS, SkipItem, count_exts, scan_class_folders
from .splits import assemble


def _read_image(path: Path):
    """(path, sha256) after a full decode, so a truncated file is caught here and not mid-training."""

    from PIL import Image, UnidentifiedImageError

    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.draft(im.mode, (1, 1))  # JPEG: decode at 1/8 scale; every byte is still read
            im.load()
    except Image.DecompressionBombError as exc:
        raise SkipItem("decompression-bomb size (the header claims more pixels than PIL's limit allows)") from exc
    except OSError as exc:
        if "truncated" in str(exc):
            raise SkipItem("truncated (the image data ends early; re-export or re-download it)") from exc
        return None
    except (UnidentifiedImageError, SyntaxError, ValueError):
        return None
    return str(path), hashlib.sha256(data).hexdigest()


def looks_like_image_folder(root: Path) -> bool:
    if not root.is_dir():
        return False
    counts = count_exts(root)
    n_img = sum(v for k, v in counts.items() if k in IMAGE_EXTS)
    return n_img > 0 and n_img >= counts.get(".txt", 0)  # the majority decides; a tie is images


def load_image_folder(root: Path, options: dict) -> Dataset:
    warnings: list[str] = []
    records = scan_class_folders(root, IMAGE_EXTS, _read_image, "image", warnings)
    return assemble(
        name=root.resolve().name, path=str(root), modality="image", records=records,
        task_names=["label"], options=options, warnings=warnings,
    )
