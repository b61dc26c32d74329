"""Decode once: a memory-mapped on-disk cache of a split's images, decoded and resized.

Without it every source re-decodes every JPEG during ranking, and every training epoch decodes
it again. With it, a split is decoded once per resize geometry into one uint8 ``.npy`` array
``(n, side, side, channels)`` that every consumer memory-maps: feature extraction centre-crops
and normalises it, training epochs random-resized-crop and flip it. Sources whose eval pipeline
has the same geometry (same input size, crop and interpolation) share one file.

What is stored: each image converted to RGB (or L), resized so its short side is ``side``
(torchvision ``Resize(side)``, the interpolation of the source), then the ``side × side`` square
whose centre crop of ``crop`` pixels is exactly the source's own centre crop (so features from
the cache equal features from the files, bit for bit).

Key: the dataset fingerprint (a hash of every file's bytes: a changed file is a new key), the
split, and the geometry (``DecodeSpec.key``). Files live in ``<cache_dir>/images`` when a cache
folder is given (the same ``cache_dir`` / ``--cache-dir`` the feature cache takes), else in
``$AUTOTRANSFER_CACHE_DIR/images``, else ``~/.cache/autotransfer/images``.
Each cache is a ``.npy`` plus a ``.json`` with its key and checksum, both written to temporary
names and renamed; a file that fails to load or to match its checksum is deleted and decoded
again with one warning line.

Size bound: a split whose decoded array would exceed ``AUTOTRANSFER_DECODE_CACHE_MAX_GB``
(default: half of the free space on the cache's disk) is not cached: one note, then the images
stream from the files as before. ``AUTOTRANSFER_DECODE_CACHE_MAX_GB=0`` turns the cache off.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .console import note, warn
from .errors import AutotransferError
from .memo import BoundedMemo
from .pixels import DECODE_VERSION, open_image

if TYPE_CHECKING:
    from .data.dataset import Dataset

CACHE_VERSION = 1  # bump when the stored layout changes
MAX_GB_ENV = "AUTOTRANSFER_DECODE_CACHE_MAX_GB"
DEFAULT_FREE_FRACTION = 0.5  # without the env var: at most this fraction of the free disk
BUILD_BATCH = 16  # images per decoding task (one thread decodes a chunk into the memory map)

_verified: BoundedMemo[bool] = BoundedMemo(1024)  # (path, size, mtime) whose checksum matched in this process


@dataclass(frozen=True)
class DecodeSpec:
    """How a source's images are stored decoded: the resize geometry (part of the cache key)."""

    side: int  # short side after the resize; stored images are side × side
    crop: tuple[int, int]  # (h, w) eval centre crop the stored square contains exactly
    interpolation: str  # torchvision InterpolationMode value, e.g. "bilinear", "bicubic"
    mode: str = "RGB"  # PIL mode the images are converted to ("RGB" or "L")

    def __post_init__(self) -> None:
        if self.side < 1 or not (1 <= self.crop[0] <= self.side and 1 <= self.crop[1] <= self.side):
            raise AutotransferError(f"decode spec {self} is invalid; expected 1 <= crop <= side")

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3

    def key(self) -> str:
        return f"side={self.side}|crop={self.crop[0]}x{self.crop[1]}|interp={self.interpolation}|mode={self.mode}"


def images_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache_dir>/images``, else ``$AUTOTRANSFER_CACHE_DIR/images``, else ``~/.cache/autotransfer/images``."""
    if cache_dir not in (None, True, False):
        return Path(cache_dir).expanduser() / "images"
    root = os.environ.get("AUTOTRANSFER_CACHE_DIR")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "autotransfer") / "images"


def cache_key(dataset: Dataset, split: str, spec: DecodeSpec) -> str:
    """sha256 of (layout version, decoding version, dataset fingerprint, split, resize geometry)."""
    parts = [f"v{CACHE_VERSION}", f"decode{DECODE_VERSION}", dataset.fingerprint, split, spec.key()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _centre(length: int, crop: int) -> int:
    return int(round((length - crop) / 2.0))  # torchvision CenterCrop's offset


def decode(item: Any, spec: DecodeSpec) -> np.ndarray:
    """One image (path or PIL image) as uint8 ``(side, side, channels)``: decoded, resized, squared."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    img = open_image(item, spec.mode)
    img = F.resize(img, spec.side, interpolation=InterpolationMode(spec.interpolation), antialias=True)
    w, h = img.size
    # the square's offset is chosen so that its own centre crop lands where the crop of the whole image would
    top = min(max(0, _centre(h, spec.crop[0]) - _centre(spec.side, spec.crop[0])), h - spec.side)
    left = min(max(0, _centre(w, spec.crop[1]) - _centre(spec.side, spec.crop[1])), w - spec.side)
    arr = np.asarray(img.crop((left, top, left + spec.side, top + spec.side)), dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def centre_offsets(spec: DecodeSpec) -> tuple[int, int]:
    """(top, left) of the eval centre crop in a stored ``side × side`` square."""
    return _centre(spec.side, spec.crop[0]), _centre(spec.side, spec.crop[1])


def centre_crop(image: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    """The eval centre crop of a stored square (torchvision's offsets)."""
    top, left = _centre(image.shape[0], crop[0]), _centre(image.shape[1], crop[1])
    return image[top:top + crop[0], left:left + crop[1]]


class DecodedImages:
    """A cached split: ``images[i]`` is item i's uint8 ``(side, side, channels)`` array.

    Memory-maps lazily and pickles as its path, so loader workers map the file themselves.
    """

    def __init__(self, path: Path, shape: tuple[int, ...]):
        self.path, self.shape = path, tuple(shape)
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i: int) -> np.ndarray:
        return self.array()[int(i)]

    def array(self) -> np.ndarray:
        """The whole split, memory-mapped: ``(n, side, side, channels)`` uint8."""
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "shape": self.shape, "_array": None}


def default_workers() -> int:
    """Parallel workers for loading images (decoding threads, loader processes): one per core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def max_bytes(folder: Path) -> int:
    """The size bound: ``$AUTOTRANSFER_DECODE_CACHE_MAX_GB`` GB, else half the free disk under ``folder``."""
    value = os.environ.get(MAX_GB_ENV, "").strip()
    if value:
        try:
            gb = float(value)
        except ValueError:
            raise AutotransferError(f"{MAX_GB_ENV}={value!r} is not a number; expected gigabytes, e.g. "
                                    f"{MAX_GB_ENV}=20 (0 turns the decoded-image cache off)") from None
        return int(max(0.0, gb) * 1e9)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return int(shutil.disk_usage(probe).free * DEFAULT_FREE_FRACTION)


def _paths(folder: Path, split: str, spec: DecodeSpec, key: str) -> tuple[Path, Path]:
    stem = f"{split}__{spec.side}px-{spec.interpolation}-{spec.mode}__{key[:24]}"
    return folder / f"{stem}.npy", folder / f"{stem}.json"


def _load(npy: Path, meta_path: Path, key: str, shape: tuple[int, ...]) -> DecodedImages:
    """The cached split; raises ValueError (with the reason) when the files are not right."""
    meta = json.loads(meta_path.read_text())
    if meta.get("key") != key:
        raise ValueError("its key does not match")
    arr = np.load(npy, mmap_mode="r")
    if arr.dtype != np.uint8 or tuple(arr.shape) != shape:
        raise ValueError(f"array is {arr.dtype} {tuple(arr.shape)}, expected uint8 {shape}")
    st = npy.stat()
    # hashing reads the whole file: once per process is enough (a mismatch raises and is not kept)
    _verified.get((str(npy.resolve()), st.st_size, st.st_mtime_ns), lambda: _checksum_matches(arr, meta))
    return DecodedImages(npy, shape)


def _checksum_matches(arr: np.ndarray, meta: dict) -> bool:
    if _checksum(arr) != meta.get("checksum"):
        raise ValueError("checksum mismatch")
    return True


def _checksum(arr: np.ndarray) -> str:
    h = hashlib.sha256(str(arr.shape).encode())
    for start in range(0, len(arr), 256):
        h.update(memoryview(np.ascontiguousarray(arr[start:start + 256])))  # no copy of a contiguous slice
    return h.hexdigest()


def _decode_into(out: np.ndarray, items: list[Any], spec: DecodeSpec, start: int) -> None:
    for k, item in enumerate(items):
        out[start + k] = decode(item, spec)


def _write(npy: Path, meta_path: Path, key: str, items: list[Any], spec: DecodeSpec, shape: tuple[int, ...],
           num_workers: int, progress: bool, desc: str) -> None:
    """Decode ``items`` into ``npy`` (temporary name, then renamed) and write its meta file.

    ``num_workers`` threads decode chunks of ``BUILD_BATCH`` images straight into the memory map:
    PIL releases the GIL while it decodes and resizes, so threads use every core without a
    process's start-up or the copy of each array back through a pipe (measured on 2 cores, 168
    JPEGs of 500x375: 0.26-0.31 s with two threads, 0.34-0.42 s with two processes, 0.45 s in one).
    """
    from tqdm.auto import tqdm

    npy.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=npy.name + ".", suffix=".tmp", dir=npy.parent)
    os.close(fd)
    meta_tmp = ""
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        starts = range(0, len(items), BUILD_BATCH)
        h = hashlib.sha256(str(shape).encode())  # the same digest as _checksum, computed as the chunks finish
        with ThreadPoolExecutor(max(1, min(num_workers, len(starts)))) as pool, \
                tqdm(total=len(items), desc=desc, unit="img", file=sys.stderr, disable=not progress,
                     leave=False) as bar:
            done = [pool.submit(_decode_into, out, items[s:s + BUILD_BATCH], spec, s) for s in starts]
            try:
                for future, s in zip(done, starts, strict=True):
                    future.result()
                    h.update(memoryview(np.ascontiguousarray(out[s:s + BUILD_BATCH])))
                    bar.update(min(BUILD_BATCH, len(items) - s))
            except BaseException:
                pool.shutdown(cancel_futures=True)  # a failed image or an interrupt: no more decoding
                raise
        # no msync: readers share the page cache, and a file a crash leaves short of its bytes fails its
        # checksum at the next load and is decoded again
        meta = {"key": key, "shape": list(shape), "spec": spec.key(), "checksum": h.hexdigest(),
                "version": CACHE_VERSION}
        del out
        fd, meta_tmp = tempfile.mkstemp(prefix=meta_path.name + ".", suffix=".tmp", dir=npy.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(meta, f)
        os.replace(tmp, npy)
        os.replace(meta_tmp, meta_path)
    except BaseException:
        for t in (tmp, meta_tmp):
            if t:
                with contextlib.suppress(OSError):
                    os.unlink(t)
        raise


def decoded(dataset: Dataset, split: str, spec: DecodeSpec | None, *,
            cache_dir: str | os.PathLike | None | bool = None, num_workers: int | None = None,
            progress: bool = False) -> DecodedImages | None:
    """The decoded images of ``dataset.splits[split]`` under ``spec``, decoding them on the first call.

    Returns None (stream from the files instead) when ``spec`` is None, the dataset is not
    images, caching is off (``cache_dir=False``), the split is empty, or the array would not
    fit under the size bound (with one note saying so). A cache that cannot be written (full or
    read-only disk) is a warning, not an error: the caller streams.
    """
    if spec is None or cache_dir is False or dataset.modality != "image":
        return None
    items = dataset.split_items(split)
    if not items:
        return None
    folder = images_dir(cache_dir)
    key = cache_key(dataset, split, spec)
    npy, meta_path = _paths(folder, split, spec, key)
    shape = (len(items), spec.side, spec.side, spec.channels)
    if npy.exists() or meta_path.exists():
        try:
            return _load(npy, meta_path, key, shape)
        except Exception as exc:  # any unreadable / inconsistent file: drop it and decode again
            warn(f"decoded-image cache file {npy} is corrupt ({type(exc).__name__}: {exc}); deleted it, "
                 "decoding again")
            for p in (npy, meta_path):
                with contextlib.suppress(OSError):
                    p.unlink()
    need = int(np.prod(shape))
    limit = max_bytes(folder)
    if need > limit:
        if limit > 0:
            note(f"decoded-image cache for {dataset.name!r} [{split}] needs {need / 1e9:.2f} GB, over the "
                 f"{limit / 1e9:.2f} GB limit ({MAX_GB_ENV}, default half the free disk): reading the image "
                 f"files instead; raise {MAX_GB_ENV} or free disk space to cache it")
        return None
    workers = default_workers() if num_workers is None else int(num_workers)
    try:
        _write(npy, meta_path, key, items, spec, shape, workers, progress, f"decoding {dataset.name} [{split}]")
    except OSError as exc:  # the cache only saves time: a full or read-only disk must not cost the run
        warn(f"could not write decoded-image cache file {npy} ({exc}); reading the image files instead")
        return None
    return DecodedImages(npy, shape)
