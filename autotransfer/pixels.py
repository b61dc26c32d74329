"""An image file as a viewer shows it: the one decode step of training, predict and evaluate.

Pillow opens many files in a form that ``convert("RGB")`` gets wrong: a 16-bit greyscale PNG
(mode ``I;16`` or ``I``) is clipped at 255, so nearly every pixel is white; a phone's JPEG keeps
its EXIF orientation beside unrotated pixels; a transparent pixel's hidden colour (often black)
shows through once the alpha is dropped. ``open_image`` applies the orientation, scales 16-bit
and 32-bit values to 8 bits the way a viewer does (``_eight_bit``: 65535 is white), and lays
transparency over white, before converting to the mode a source wants.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DECODE_VERSION = 2  # part of the cache keys: bump when what a file decodes to changes
ORIENTATION = 0x0112  # the EXIF tag
_WIDE = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA = ("RGBA", "LA", "PA", "RGBa")


def open_image(item: Any, mode: str = "RGB") -> Any:
    """A path (or an open PIL image) as a PIL image in ``mode`` ("RGB" or "L"), as a viewer shows it."""
    from PIL import Image

    if isinstance(item, Image.Image):
        return as_shown(item, mode)
    with Image.open(item) as im:
        return as_shown(im, mode)


def as_shown(im: Any, mode: str = "RGB") -> Any:
    """``im`` upright, in 8 bits, transparency over white, converted to ``mode``."""
    from PIL import Image, ImageOps

    if _orientation(im) != 1:
        im = ImageOps.exif_transpose(im)
    if im.mode in _WIDE:
        im = Image.fromarray(_eight_bit(np.asarray(im), im.mode))
    elif im.mode == "LAB":
        im = _lab_to_rgb(im)
    if im.mode in _ALPHA or (im.mode == "P" and "transparency" in im.info):
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im.convert("RGBA")).convert("RGB")
    return im.convert(mode)


def _orientation(im: Any) -> int:
    try:
        return int(im.getexif().get(ORIENTATION, 1))
    except Exception:  # a malformed EXIF block: the pixels are still good, shown as stored
        return 1


def _eight_bit(values: np.ndarray, mode: str) -> np.ndarray:
    """16-bit, 32-bit or float pixels as uint8, as a viewer scales them: a 16-bit image by its type's
    range (65535 is white); a 32-bit one holding 8-bit values (``convert("I")``'s) as they are; a
    float one in 0..1 times 255; anything else stretched over its own range."""
    v = values.astype(np.float64)
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    if lo >= 0 and hi <= 255 and mode in ("I", "F") and not (mode == "F" and hi <= 1):
        scaled = v
    elif mode == "F" and lo >= 0 and hi <= 1:
        scaled = v * 255.0
    elif mode != "F" and lo >= 0 and hi <= 65535:
        scaled = v / 257.0
    else:
        scaled = (v - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(v)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _lab_to_rgb(im: Any) -> Any:
    from PIL import ImageCms

    lab, srgb = ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB")
    return ImageCms.applyTransform(im, ImageCms.buildTransform(lab, srgb, "LAB", "RGB"))
