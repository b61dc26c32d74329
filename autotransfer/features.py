"""Batched feature extraction with an on-disk cache, and the device helper the trainer shares.

``extract(source, dataset, split)`` runs the pretrained backbone once over a split (eval
transforms, ``torch.inference_mode``, autocast at the run's precision and channels-last on
CUDA only) and returns pooled features, labels, and the source head's class probabilities when
the source has one (for LEEP / NCE). Images are read from the decoded-image cache
(``autotransfer.decode_cache``: decoded once, shared by every source of the same input
geometry) when the source supports it, else decoded from the files in loader workers.

Cache: one ``.npz`` file per (source identity, dataset fingerprint, split, eval input
pipeline, precision), under ``cache_dir``, else ``$AUTOTRANSFER_CACHE_DIR/features``, else
``~/.cache/autotransfer/features``. Files are written to a temporary name and renamed, so
a crash never leaves half a file; a file that fails to load, has the wrong shape or the
wrong checksum is deleted and recomputed with one warning line.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import decode_cache
from .console import warn
from .decode_cache import centre_offsets, decoded
from .errors import AutotransferError
from .memory import keep_freed_memory
from .precision import autocast, resolve_precision

if TYPE_CHECKING:
    import torch

    from .data.dataset import Dataset
    from .decode_cache import DecodedImages
    from .sources import Source

CACHE_VERSION = 2  # bump when the file layout changes: old files then miss instead of misloading
DEVICE_FEATURES_MAX = 2**26  # float values (256 MB) of features held on the card before one copy to the host
CUDA_READERS = 4  # threads reading batches from the decoded-image cache ahead of the card


@dataclass
class Features:
    """What ``extract`` returns for one (source, dataset, split)."""

    features: np.ndarray  # (n, D) float32 pooled backbone features
    labels: np.ndarray  # (n, n_tasks) int64 class indices, in split order
    source_probs: np.ndarray | None  # (n, C_src) float32 softmax of the source head; None without one
    cached: bool  # True when loaded from the cache (no model was built, no forward pass)
    seconds: float  # wall time of the call
    cache_path: str | None = None  # the cache file read or written; None when caching is off


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cpu``; ``cuda`` / ``cuda:N`` (checked to exist)."""
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    value = str(device).strip().lower()
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if value == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", value):
        if not torch.cuda.is_available():
            raise AutotransferError(
                f"device {device!r} was asked for but CUDA is not available here (torch "
                f"{torch.__version__}, built for CUDA {torch.version.cuda or 'none'}); "
                "use --device cpu, or --device auto to take a GPU only when there is one"
            )
        dev = torch.device(value)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise AutotransferError(
                f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} "
                f"CUDA device(s), cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
        return dev
    raise AutotransferError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N")


def move_to(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """``batch`` (a tensor, or a dict / list / tuple of tensors) on ``device``."""
    import torch

    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict) or hasattr(batch, "items") and hasattr(batch, "keys"):
        return {k: move_to(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device, non_blocking) for v in batch)
    return batch


def default_cache_dir() -> Path:
    """``$AUTOTRANSFER_CACHE_DIR/features`` or ``~/.cache/autotransfer/features``."""
    root = os.environ.get("AUTOTRANSFER_CACHE_DIR")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "autotransfer") / "features"


def cache_key(source: Source, dataset: Dataset, split: str, precision: str = "fp32") -> str:
    """sha256 of (source identity, dataset fingerprint, split, eval input pipeline, resolved precision)."""
    parts = [f"v{CACHE_VERSION}", source.identity(), dataset.fingerprint, split, source.transform_key(False),
             f"precision={precision}"]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _checksum(*arrays: np.ndarray | None) -> str:
    h = hashlib.sha256()
    for a in arrays:
        if a is not None:
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:60] or "source"


def _load_cached(path: Path, key: str, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The arrays in ``path``; raises ValueError (with the reason) when the file is not right."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        feats = np.array(z["features"])
        probs = np.array(z["source_probs"]) if "source_probs" in z.files else None
    if meta.get("key") != key:
        raise ValueError("its key does not match")
    if feats.ndim != 2 or feats.shape[0] != n or list(feats.shape) != meta.get("features_shape"):
        raise ValueError(f"features have shape {feats.shape}, expected ({n}, {meta.get('features_shape', ['?'])[-1]})")
    if probs is not None and (probs.ndim != 2 or probs.shape[0] != n):
        raise ValueError(f"source_probs have shape {probs.shape}, expected {n} rows")
    if _checksum(feats, probs) != meta.get("checksum"):
        raise ValueError("checksum mismatch")
    return feats.astype(np.float32, copy=False), probs


def _save_cached(path: Path, key: str, source: Source, split: str, feats: np.ndarray,
                 probs: np.ndarray | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"key": key, "source": source.name, "split": split, "features_shape": list(feats.shape),
            "checksum": _checksum(feats, probs), "version": CACHE_VERSION}
    arrays: dict[str, np.ndarray] = {"features": feats, "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
    if probs is not None:
        arrays["source_probs"] = probs
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class _Items:
    """Map-style dataset: item i -> ``source.load_item(items[i])``, or ``source.load_decoded(images[i])``
    when the split's decoded images are cached (runs in loader workers)."""

    def __init__(self, source: Source, items: list[Any], order: np.ndarray, images: DecodedImages | None = None):
        self.source = source
        self.items = items
        self.order = order
        self.images = images

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> Any:
        j = int(self.order[i])
        if self.images is not None:
            return self.source.load_decoded(self.images[j], train=False)
        return self.source.load_item(self.items[j], train=False)


def _backbone(source: Source, dev: Any) -> tuple[Any, Any]:
    """The pretrained backbone in eval mode on ``dev`` (channels-last for images on CUDA), and its source head;
    on the CPU, freed memory is kept for reuse from here on (``memory``)."""
    import torch

    keep_freed_memory(dev)
    model = source.build(pretrained=True)
    model.eval().to(dev)
    if dev.type == "cuda" and source.modality == "image":
        model.to(memory_format=torch.channels_last)
    head = getattr(model, "source_head", None)
    if head is not None:
        head.eval().to(dev)
    return model, head


def _forward_all(model: Any, head: Any, loader: Any, dev: Any, precision: str, image: bool,
                 bar: Any, check: Callable[[], None] | None = None) -> tuple[list[Any], list[Any]]:
    """Pooled features (and source-head probabilities) of every batch, on the CPU; ``check()`` before each."""
    import torch

    cuda = dev.type == "cuda"
    feats: list[torch.Tensor] = []
    probs: list[torch.Tensor] = []
    waiting = 0  # feature values kept on the card: a copy to the host per batch would wait for the card each time
    with torch.inference_mode(), autocast(precision, dev), bar:
        for batch in loader:
            if check is not None:
                check()
            batch = move_to(batch, dev, non_blocking=cuda)
            if cuda and image and isinstance(batch, torch.Tensor):
                batch = batch.contiguous(memory_format=torch.channels_last)
            out = model(batch)
            if head is not None:
                probs.append(head(out).float().softmax(dim=-1))
            feats.append(out.float())
            bar.update(len(out))
            waiting += out.numel() + (probs[-1].numel() if head is not None else 0)
            if cuda and waiting > DEVICE_FEATURES_MAX:
                feats, probs = [torch.cat(feats).cpu()], [torch.cat(probs).cpu()] if probs else []
                waiting = 0
    return [f.cpu() for f in feats], [p.cpu() for p in probs]


def _default_batch_size(modality: str, cuda: bool) -> int:
    if modality == "text":
        return 128 if cuda else 32
    return 256 if cuda else 64


def extract(
    source: Source,
    dataset: Dataset,
    split: str,
    *,
    device: str | torch.device = "auto",
    batch_size: int | None = None,
    cache_dir: str | os.PathLike | None | bool = None,
    num_workers: int | None = None,
    progress: bool = True,
    precision: str = "auto",
    check: Callable[[], None] | None = None,
) -> Features:
    """Pooled features of ``source``'s pretrained backbone over ``dataset.splits[split]``.

    Args:
        source: the source model (``autotransfer.sources.Source``).
        dataset: the dataset; its ``fingerprint`` is part of the cache key.
        split: "train", "val" or "test".
        device: "auto" (cuda when available), "cpu", "cuda" or "cuda:N".
        batch_size: items per forward pass (default 64 images / 32 texts on CPU, 256 / 128 on CUDA).
        cache_dir: folder of cache files; default ``$AUTOTRANSFER_CACHE_DIR/features`` or
            ``~/.cache/autotransfer/features``; ``False`` turns the cache off.
        num_workers: loader processes preparing items (default: one per core for images decoded from
            files or on CUDA; 0 for text, and for cached decoded images on CPU, where the forward
            pass needs the cores and a crop + normalise per image is cheap).
        progress: show a progress bar on stderr.
        precision: auto, bf16, fp16 or fp32 (``autotransfer.precision``); part of the cache key.
        check: called before every batch; raise from it to stop (a deadline). Nothing is cached then.

    Returns:
        ``Features``; ``cached`` says whether it came from the cache without a forward pass.
    """
    start = time.perf_counter()
    _check_inputs(source, dataset, split)

    items = dataset.split_items(split)
    labels = np.asarray(dataset.split_labels(split), dtype=np.int64)
    n = len(items)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)

    path, key = _cache_path(source, dataset, split, prec, cache_dir)
    if path is not None and path.exists():
        hit = _read_cache(path, key, n)
        if hit is not None:
            return Features(hit[0], labels, hit[1], True, time.perf_counter() - start, str(path))

    images = decoded(dataset, split, source.decode_spec() if source.modality == "image" else None,
                     cache_dir=cache_dir, progress=progress)
    feats, probs = _compute(source, items, device=dev, batch_size=batch_size, num_workers=num_workers,
                            progress=progress, desc=f"{source.name} [{split}]", images=images, precision=prec,
                            check=check)
    if path is not None:
        try:
            _save_cached(path, key, source, split, feats, probs)
        except OSError as exc:  # the cache only saves time: a full or read-only disk must not cost the run
            warn(f"could not write feature cache file {path} ({exc}); continuing without caching")
            path = None
    return Features(feats, labels, probs, False, time.perf_counter() - start, str(path) if path else None)


def is_cached(source: Source, dataset: Dataset, split: str, *, device: str | Any = "auto",
              precision: str = "auto", cache_dir: str | os.PathLike | None | bool = None) -> bool:
    """Whether ``extract`` would find these features in the cache (no forward pass)."""
    _check_inputs(source, dataset, split)
    path, key = _cache_path(source, dataset, split, resolve_precision(precision, resolve_device(device)), cache_dir)
    return path is not None and path.exists() and _read_cache(path, key, len(dataset.splits[split])) is not None


def seconds_per_item(source: Source, dataset: Dataset, split: str = "train", *, device: str | Any = "auto",
                     precision: str = "auto", items: int = 8, check: Callable[[], None] | None = None) -> float:
    """Seconds per item of ``source``'s extraction, timed on a few items: read, preprocess and forward.

    One warm-up batch of ``items`` items, then one timed batch of the next ``items`` (fewer when
    the split is small). The plan of a search's ranking multiplies this by the items to extract.
    """
    import torch

    _check_inputs(source, dataset, split)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    pool = dataset.split_items(split)[:2 * items]
    if not pool:
        return 0.0
    model, _ = _backbone(source, dev)
    timed = pool[len(pool) // 2:] or pool
    for batch_items in (pool[:len(pool) // 2] or pool, timed):
        if check is not None:
            check()
        start = time.perf_counter()
        batch = source.collate([source.load_item(it, train=False) for it in batch_items])
        with torch.inference_mode(), autocast(prec, dev):
            model(move_to(batch, dev))
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - start
    return seconds / len(timed)


class EvalCrops:
    """Eval inputs straight from a split's decoded-image cache, a batch at a time: the batch's uint8
    centre crops are one read of the memory map (no per-image work, no collate copy, no loader
    processes).

    CUDA: ``read`` copies the uint8 crops pinned (4× fewer bytes than float32) and ``to_device``
    normalises them on the card. CPU: ``read`` normalises in numpy with torchvision's ToTensor +
    Normalize arithmetic (float32 / 255, - mean, / std) into one contiguous NCHW batch: element for
    element the per-image path's numbers, so features and predictions are bit for bit the same.
    ``supported(source, images)`` says when the source's eval input is that normalised centre crop.
    """

    def __init__(self, source: Source, images: DecodedImages, dev: torch.device):
        import torch

        spec, (mean, std) = source.decode_spec(), source.eval_normalization()
        self.arr = images.array()
        (self.top, self.left), (self.h, self.w) = centre_offsets(spec), spec.crop
        self.dev, self.cuda = dev, dev.type == "cuda"
        self.mean32 = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
        self.std32 = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
        if self.cuda:  # (x / 255 - mean) / std, here as (x - 255 mean) / (255 std) in float32
            self.shift = torch.tensor(mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1) * 255
            self.scale = torch.tensor(std, dtype=torch.float32, device=dev).view(1, -1, 1, 1) * 255

    @staticmethod
    def supported(source: Source, images: DecodedImages | None) -> bool:
        return images is not None and source.modality == "image" and source.eval_normalization() is not None

    def read(self, index: Any) -> torch.Tensor:
        """The inputs of items ``index`` (a slice or an index array), on the host."""
        import torch

        t, lft = self.top, self.left
        crops = self.arr[index, t:t + self.h, lft:lft + self.w] if isinstance(index, slice) else \
            self.arr[np.asarray(index)][:, t:t + self.h, lft:lft + self.w]
        if self.cuda:
            return torch.from_numpy(np.require(crops, requirements=["C", "W"])).pin_memory()
        x = crops.transpose(0, 3, 1, 2).astype(np.float32, order="C")  # NCHW contiguous, as stacked CHW tensors
        x /= np.float32(255)
        x -= self.mean32
        x /= self.std32
        return torch.from_numpy(x)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        """A ``read`` batch as model input on the device."""
        if not self.cuda:
            return x.to(self.dev)
        # NHWC viewed as NCHW: the float copy keeps channels-last strides, the layout the model runs in
        return x.to(self.dev, non_blocking=True).permute(0, 3, 1, 2).float().sub_(self.shift).div_(self.scale)


def _cached_batches(source: Source, images: DecodedImages, batch_size: int, dev: torch.device):
    """``EvalCrops`` batches of a whole split, in order, read ahead by threads: one on CPU (the
    forward pass needs the cores), ``CUDA_READERS`` on CUDA (a batch is a large memory-map read,
    slow in page faults, and pinning; one reader thread kept the card waiting)."""
    crops = EvalCrops(source, images, dev)
    starts = list(range(0, len(crops.arr), batch_size))
    readers = min(CUDA_READERS, decode_cache.default_workers()) if dev.type == "cuda" else 1
    with ThreadPoolExecutor(max(1, readers)) as pool:
        ahead = collections.deque(pool.submit(crops.read, slice(s, s + batch_size)) for s in starts[:readers])
        for k in range(len(starts)):
            x = ahead.popleft().result()
            if k + readers < len(starts):
                ahead.append(pool.submit(crops.read, slice(starts[k + readers], starts[k + readers] + batch_size)))
            yield crops.to_device(x)


def _check_inputs(source: Source, dataset: Dataset, split: str) -> None:
    if split not in dataset.splits:
        raise AutotransferError(f"split {split!r} is not in dataset {dataset.name!r}; it has "
                                f"{', '.join(dataset.splits)}")
    if source.modality != dataset.modality:
        raise AutotransferError(f"source {source.name!r} takes {source.modality} input but dataset "
                                f"{dataset.name!r} is {dataset.modality}; pick a {dataset.modality} source")


def _cache_path(source: Source, dataset: Dataset, split: str, prec: str,
                cache_dir: Any) -> tuple[Path | None, str]:
    """The cache file of these features and its key ((None, "") when ``cache_dir`` is False)."""
    if cache_dir is False:
        return None, ""
    folder = Path(cache_dir).expanduser() if cache_dir not in (None, True) else default_cache_dir()
    key = cache_key(source, dataset, split, prec)
    return folder / f"{_slug(source.name)}__{_slug(split)}__{key[:24]}.npz", key


def _read_cache(path: Path, key: str, n: int) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Cached (features, probabilities), or None: an unreadable or inconsistent file is deleted and recomputed."""
    try:
        return _load_cached(path, key, n)
    except Exception as exc:
        warn(f"feature cache file {path} is corrupt ({type(exc).__name__}: {exc}); deleted it, recomputing")
        with contextlib.suppress(OSError):
            path.unlink()
        return None


def _compute(source: Source, items: list[Any], *, device: Any, batch_size: int | None,
             num_workers: int | None, progress: bool, desc: str, images: DecodedImages | None = None,
             precision: str = "fp32", cached_batches: bool | None = None,
             check: Callable[[], None] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    image = source.modality == "image"
    n = len(items)
    if batch_size is None:
        batch_size = _default_batch_size(source.modality, cuda)
    if batch_size < 1:
        raise AutotransferError(f"batch_size must be at least 1, got {batch_size=}")
    if num_workers is None:
        num_workers = decode_cache.default_workers() if image and (cuda or images is None) else 0
    num_workers = max(0, min(int(num_workers), max(1, n // batch_size)))  # no idle workers on tiny splits
    # Texts run longest first so each batch pads to similar lengths (and an OOM shows up at once).
    order = np.argsort([-len(t) for t in items], kind="stable") if not image else np.arange(n)

    model, head = _backbone(source, dev)
    if EvalCrops.supported(source, images) and cached_batches is not False:
        loader = _cached_batches(source, images, batch_size, dev)
    else:
        loader = DataLoader(
            _Items(source, items, order, images), batch_size=batch_size, shuffle=False, num_workers=num_workers,
            collate_fn=source.collate, pin_memory=cuda,
            **({"prefetch_factor": 4, "persistent_workers": False} if num_workers else {}),
        )
    bar = tqdm(total=n, desc=desc, unit="img" if image else "text", file=sys.stderr,
               disable=not progress, leave=False)
    feats, probs = _forward_all(model, head, loader, dev, precision, image, bar, check)
    if feats:
        f = torch.cat(feats).numpy()
    else:
        f = np.zeros((0, source.feature_dim), np.float32)
    p = torch.cat(probs).numpy() if probs else None
    if not image:  # back to split order
        inverse = np.empty_like(order)
        inverse[order] = np.arange(n)
        f = f[inverse]
        p = p[inverse] if p is not None else None
    if f.ndim != 2 or f.shape[0] != n:
        raise AutotransferError(f"source {source.name!r} returned features of shape {tuple(f.shape)} for {n} "
                                "items; a backbone must return (batch, feature_dim) pooled features")
    return np.ascontiguousarray(f, dtype=np.float32), (np.ascontiguousarray(p, dtype=np.float32)
                                                       if p is not None else None)
