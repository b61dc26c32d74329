"""Realistic image folders of any size, made offline from sklearn's 1,797 real handwritten digits.

Each image is a real digit (10 classes), or a pair of real digits side by side (100 classes: the
two-digit numbers 00–99), upscaled to ``size`` px and drawn with its own random affine jitter
(rotation, scale, shift), ink and paper colours and sensor noise, so no two files are alike and
a model has to generalise over handwriting, not memorise 64 pixels. Class folders of PNGs, not
pre-split (the tool splits them), as a user's folder would be.

    python benchmarks/scale_data.py OUT --n 2000 --classes 10 --size 128
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def _glyph(images: np.ndarray, by_class: list[np.ndarray], label: int, classes: int,
           rng: np.random.Generator) -> np.ndarray:
    """The class's ink mask in [0, 1]: one real digit, or two side by side for 100 classes."""
    if classes <= 10:
        return images[rng.choice(by_class[label])]
    tens, ones = divmod(label, 10)
    return np.concatenate([images[rng.choice(by_class[tens])], images[rng.choice(by_class[ones])]], axis=1)


def render(mask: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """One RGB uint8 image of ``mask`` at ``size`` px with its own affine, colours and noise."""
    from PIL import Image

    h, w = mask.shape
    canvas = Image.fromarray((mask * 255).astype(np.uint8)).resize(
        (round(size * 0.7 * w / max(h, w)), round(size * 0.7 * h / max(h, w))), Image.BICUBIC)
    angle, scale = rng.uniform(-15, 15), rng.uniform(0.8, 1.15)
    canvas = canvas.rotate(angle, resample=Image.BICUBIC, expand=True)
    canvas = canvas.resize((max(1, round(canvas.width * scale)), max(1, round(canvas.height * scale))),
                           Image.BICUBIC)
    ink = np.zeros((size, size), np.float32)
    cw, ch = min(canvas.width, size), min(canvas.height, size)
    x0 = int(rng.integers(0, size - cw + 1))
    y0 = int(rng.integers(0, size - ch + 1))
    ink[y0:y0 + ch, x0:x0 + cw] = np.asarray(canvas, np.float32)[:ch, :cw] / 255.0
    paper, pen = rng.uniform(150, 255, 3), rng.uniform(0, 110, 3)
    if rng.random() < 0.3:  # light ink on dark paper
        paper, pen = 255 - paper, 255 - pen
    rgb = paper * (1 - ink[..., None]) + pen * ink[..., None]
    rgb += rng.normal(0, rng.uniform(2, 12), rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _write_chunk(args: tuple) -> None:
    """Render and save one chunk of the folder (a worker process of ``make_folder``)."""
    from PIL import Image

    out, start, labels, classes, size, seed = args
    images, y = _digits()
    by_class = [np.flatnonzero(y == c) for c in range(10)]
    rng = np.random.default_rng([seed, start])
    for i, label in enumerate(labels, start=start):
        Image.fromarray(render(_glyph(images, by_class, int(label), classes, rng), size, rng)).save(
            Path(out) / f"class_{label:02d}" / f"{i:06d}.png", compress_level=1)


def make_folder(out: Path, n: int, classes: int = 10, size: int = 128, seed: int = 0, workers: int = 0) -> Path:
    """``n`` images in ``classes`` class folders (balanced to within one) under ``out``; returns ``out``.

    Reuses ``out`` when it already holds exactly this folder (a ``.made`` stamp says what).
    Rendering runs in ``workers`` processes (0: one per core); the result does not depend on it.
    """
    import os
    from concurrent.futures import ProcessPoolExecutor

    if not 2 <= classes <= 100:
        raise ValueError(f"classes must be 2..100, got {classes}")
    out = Path(out)
    stamp = f"n={n} classes={classes} size={size} seed={seed}"
    if (out / ".made").exists() and (out / ".made").read_text() == stamp:
        return out
    labels = np.random.default_rng(seed).permutation(np.arange(n) % classes)
    for c in range(classes):
        (out / f"class_{c:02d}").mkdir(parents=True, exist_ok=True)
    chunk = 500  # fixed, so every image's random draws are the same whatever the worker count
    jobs = [(str(out), s, labels[s:s + chunk], classes, size, seed) for s in range(0, n, chunk)]
    with ProcessPoolExecutor(workers or os.cpu_count() or 1) as pool:
        list(pool.map(_write_chunk, jobs))
    (out / ".made").write_text(stamp)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(make_folder(args.out, args.n, args.classes, args.size, args.seed))


if __name__ == "__main__":
    main()
