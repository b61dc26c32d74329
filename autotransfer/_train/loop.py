"""The loader loop: one stage's batches (items, decoded images or cached features), its forward
pass at the run's precision, and its out-of-memory back-off."""

from __future__ import annotations

import gc
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..augment import CropFlipJitter
from ..console import note
from ..errors import AutotransferError, Diverged
from ..features import EvalCrops
from ..model import TransferModel, to_device
from ..precision import autocast, grad_scaler
from ..sources import Source
from .oom import MAX_OOM_RETRIES, is_oom, oom_message
from .seeding import _stage_seed, _worker_init

if TYPE_CHECKING:
    from ..sources import Source

def auto_batch_size(n_train: int, cached_features: bool) -> int:
    """Default batch size: a power of two giving several steps per epoch even on tiny datasets.

    Backbone training: n/4 clamped to [8, 64]. Cached features (cheap steps, a linear model that
    wants many of them): n/8 clamped to [16, 256]. Never more than n.
    """
    lo, hi, div = (16, 256, 8) if cached_features else (8, 64, 4)
    target = max(lo, min(hi, n_train // div))
    return max(1, min(n_train, 1 << int(math.log2(target))))


class _Items(torch.utils.data.Dataset):
    def __init__(self, source: Source, items: Sequence[Any], train: bool, images: Any = None):
        self.source, self.items, self.train, self.images = source, items, train, images

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        if self.images is not None:  # the split's decoded-image cache
            return self.source.load_decoded(self.images[i], train=self.train)
        return self.source.load_item(self.items[i], train=self.train)


@dataclass
class _Split:
    """One split ready to batch: items (read through the source) or a cached feature matrix."""

    labels: torch.Tensor  # (n, n_tasks) int64
    items: Sequence[Any] | None = None
    features: torch.Tensor | None = None  # (n, D) float32
    images: Any = None  # the split's ``DecodedImages`` (decode cache), or None to read the items

    def __len__(self) -> int:
        return len(self.labels)


class _Loop:
    """Batches and OOM back-off for one stage."""

    def __init__(self, model: TransferModel, source: Source, device: torch.device, batch_size: int,
                 num_workers: int, augment: bool, seed: int, stage: str, precision: str = "fp32"):
        self.model, self.source, self.device = model, source, device
        self.batch_size, self.num_workers, self.augment = batch_size, num_workers, augment
        self.seed, self.stage = seed, stage
        self.retries = 0
        self.precision = precision  # resolved: bf16, fp16 or fp32
        self.scaler = grad_scaler(precision, device)  # fp16 only

    def batches(self, data: _Split, order: torch.Tensor, batch_size: int, train: bool, epoch: int = 0):
        """(inputs on device, labels on device) for ``order`` in chunks of ``batch_size``."""
        chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        if train and len(chunks) > 1 and len(chunks[-1]) == 1:
            chunks = chunks[:-1]  # a batch of one breaks BatchNorm in train mode
        if data.features is not None:
            for idx in chunks:
                yield data.features[idx].to(self.device), data.labels[idx].to(self.device)
            return
        augment = self.source.decoded_augmentation() if train and self.augment and data.images is not None else None
        if augment is not None:  # the whole batch at once, its draws from this epoch's own generator
            rng = np.random.default_rng(_stage_seed(self.seed, self.stage + "/augment", epoch))
            if self.look_ahead and isinstance(augment, CropFlipJitter):
                yield from self._augmented_ahead(augment, data, chunks, rng)
                return
            for idx in chunks:
                yield augment(data.images.array(), idx.numpy(), rng, self.device), data.labels[idx].to(self.device)
            return
        if not (train and self.augment) and EvalCrops.supported(self.source, data.images):
            crops = EvalCrops(self.source, data.images, self.device)  # whole batches, the per-image numbers
            for idx in chunks:
                first, n = int(idx[0]), len(idx)
                contiguous = int(idx[-1]) - first + 1 == n and bool((idx[1:] > idx[:-1]).all())
                yield (crops.to_device(crops.read(slice(first, first + n) if contiguous else idx.numpy())),
                       data.labels[idx].to(self.device))
            return
        ds = _Items(self.source, data.items, train and self.augment, data.images)
        g = torch.Generator().manual_seed(_stage_seed(self.seed, self.stage + "/workers", epoch))  # worker seeds
        loader = torch.utils.data.DataLoader(
            ds, batch_sampler=[c.tolist() for c in chunks], num_workers=self.num_workers,
            collate_fn=self._collate, worker_init_fn=_worker_init if self.num_workers else None, generator=g,
            pin_memory=self.device.type == "cuda",
        )
        for inputs, idx in zip(loader, chunks, strict=False):
            yield to_device(inputs, self.device), data.labels[idx].to(self.device)

    @property
    def look_ahead(self) -> bool:
        """Whether augmented batches are prepared one ahead (``_augmented_ahead``): on CUDA, where the
        card computes while the host prepares. On a 2-core CPU the look-ahead thread only competes
        with torch's own threads (measured: no faster, 0.64-0.82 s vs 0.66-0.81 s a partial epoch)."""
        return self.device.type == "cuda"

    def _augmented_ahead(self, augment: CropFlipJitter, data: _Split, chunks: list[torch.Tensor],
                         rng: np.random.Generator):
        """The host half of batch k + 1 (crops split over one thread per loader worker, pinned for
        CUDA) is prepared while batch k is jittered and trained on. One thread draws, in batch
        order, so the epoch's augmentation is the same as without the look-ahead."""
        threads = max(1, self.num_workers)
        images, pin = data.images.array(), self.device.type == "cuda"
        with ThreadPoolExecutor(threads) as crops, ThreadPoolExecutor(1) as ahead:
            def prepare(idx: torch.Tensor) -> Any:
                return augment.prepare(images, idx.numpy(), rng, pool=crops, threads=threads, pin=pin)

            nxt = ahead.submit(prepare, chunks[0]) if chunks else None
            for k, idx in enumerate(chunks):
                prep = nxt.result()
                if k + 1 < len(chunks):
                    nxt = ahead.submit(prepare, chunks[k + 1])
                yield augment.finish(prep, self.device), data.labels[idx].to(self.device)

    def _collate(self, inputs: list[Any]) -> Any:
        return self.source.collate(inputs)

    def logits(self, inputs: Any, cached: bool) -> list[torch.Tensor]:
        with autocast(self.precision, self.device):
            out = self.model.forward_features(inputs) if cached else self.model(inputs)
        return [o.float() for o in out]

    def backoff(self, first: str) -> None:
        """Free what the failed attempt held and halve the batch size, or give up.

        Called after the ``except`` block has ended, so the exception's traceback (and the
        activations its frames reference) is gone before the cache is emptied.
        """
        if self.retries >= MAX_OOM_RETRIES or self.batch_size <= 1:
            raise AutotransferError(
                f"out of memory training at batch size {self.batch_size} on {self.device} after "
                f"{self.retries} halvings ({first}); pass a smaller batch_size/--batch-size, a smaller "
                "source model, or use a device with more memory"
            ) from None
        self.model.zero_grad(set_to_none=True)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.retries += 1
        self.batch_size = max(1, self.batch_size // 2)
        note(f"out of memory ({first}); retrying the epoch with batch size {self.batch_size}")


def _predictions(model_loop: _Loop, data: _Split, cached: bool) -> tuple[np.ndarray, list[np.ndarray]]:
    """Predicted classes (n, n_tasks) int64 (the logits' argmax) and per-task softmax probabilities
    [(n, C_t) float32] on ``data`` (with OOM back-off): what every metric is computed from."""
    while True:
        try:
            preds, probs = [], [[] for _ in range(data.labels.shape[1])]
            broken = 0  # items whose outputs are nan or inf: a diverged model, whatever argmax says
            with torch.no_grad():
                for inputs, _ in model_loop.batches(data, torch.arange(len(data)),
                                                    model_loop.batch_size * (8 if cached else 1), False):
                    logits = model_loop.logits(inputs, cached)
                    broken += int(sum((~torch.isfinite(lg)).any(1).sum() for lg in logits))
                    preds.append(torch.stack([lg.argmax(1) for lg in logits], 1).cpu())
                    for t, lg in enumerate(logits):
                        probs[t].append(torch.softmax(lg, 1).cpu())
            if broken:
                raise Diverged(f"training diverged: in {model_loop.stage}, {broken} output row(s) for {len(data)} "
                               "evaluated item(s) are nan or inf; lower --lr (or train in fp32: --precision fp32)")
            return (torch.cat(preds).numpy().astype(np.int64),
                    [torch.cat(p).numpy().astype(np.float32) for p in probs])
        except Exception as exc:
            if not is_oom(exc):
                raise
            msg = oom_message(exc)
        model_loop.backoff(msg)
