"""The feature cache of one ``train`` call: each split's backbone features, fetched once."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import AutotransferError
from ..features import extract
from ..model import TransferModel, to_device
from ..precision import autocast
from ..sources import Source
from .loop import _Items, _Split

if TYPE_CHECKING:
    from ..data import Dataset
    from ..sources import Source

class _Features:
    """Cached backbone features per split, fetched once per ``train`` call."""

    def __init__(self, model: TransferModel, source: Source, dataset: Dataset, device: torch.device,
                 cache_dir: Any, pretrained: bool, batch_size: int | None, progress: bool = False,
                 precision: str = "fp32", check: Callable[[], None] | None = None):
        self.model, self.source, self.dataset, self.device = model, source, dataset, device
        self.check = check  # before every extraction batch (the run's deadline)
        self.cache_dir, self.pretrained, self.batch_size = cache_dir, pretrained, batch_size
        self.progress, self.precision = progress, precision
        self.splits: dict[str, _Split] = {}
        self.seconds = 0.0
        self.from_cache: bool | None = None

    def get(self, split: str, base: _Split) -> _Split:
        if split not in self.splits:
            t0 = time.perf_counter()
            if self.pretrained:
                f = extract(self.source, self.dataset, split, device=str(self.device),
                            batch_size=self.batch_size, cache_dir=self.cache_dir, progress=self.progress,
                            precision=self.precision, check=self.check)
                feats = torch.as_tensor(np.asarray(f.features, dtype=np.float32))
                self.from_cache = bool(f.cached) and self.from_cache is not False
            else:  # random-init backbone: nothing to share through the cache; one pass of our own
                feats = self._forward(base)
            if feats.shape != (len(base), self.model.feature_dim):
                raise AutotransferError(
                    f"cached features of {split!r} have shape {tuple(feats.shape)}, expected "
                    f"({len(base)}, {self.model.feature_dim}); clear the feature cache"
                )
            self.splits[split] = _Split(base.labels, features=feats)
            self.seconds += time.perf_counter() - t0
        return self.splits[split]

    @torch.no_grad()
    def _forward(self, base: _Split) -> torch.Tensor:
        self.model.eval()
        out = []
        bs = self.batch_size or 64
        items = _Items(self.source, base.items, False, base.images)
        for s in range(0, len(items), bs):
            if self.check is not None:
                self.check()
            batch = self.source.collate([items[i] for i in range(s, min(s + bs, len(items)))])
            with autocast(self.precision, self.device):
                out.append(self.model.backbone(to_device(batch, self.device)).float().cpu())
        return torch.cat(out)
