"""The one training loop, used by every strategy and by the search.

``train(dataset, source, strategy, ...)`` builds a ``TransferModel`` (shared backbone, one
linear head per task), asks the strategy for its stages, and runs ``fit`` once per stage:
AdamW, linear warm-up then cosine decay (driven by training progress, so a batch-size change
does not bend it), gradient clipping at 1.0, autocast at the run's precision on CUDA only
(``autotransfer.precision``; fp16 with a gradient scaler), an evaluation on the
validation split after every epoch followed by ``report(epoch, val_score)`` (return True or
raise ``StopTraining`` to stop: the pruner's hook), and the kept epoch's weights restored at the
end (``kept_epoch``: the latest epoch within one standard error of the best validation score).
Cached-feature stages run the same loop over a feature matrix instead of items.

Reproducible on CPU: the seed fixes the backbone's random init, the heads, every epoch's
shuffle (a generator seeded from seed, stage name and epoch, so an OOM retry replays the same
order) and augmentation; loading runs in the main process on CPU (``num_workers=0``), in one
loader process per core on CUDA. Images come from the decoded-image cache
(``autotransfer.decode_cache``) when the source supports it: decoded once, then every epoch
centre-crops the cached arrays a batch at a time, or augments them: a batch at a time through
the source's ``decoded_augmentation`` (``autotransfer.augment``: its random draws come from a
generator seeded by seed, stage and epoch; on CUDA the next batch's crops are prepared while the
card trains), else per image through ``load_decoded``.

Out of memory on CUDA: the epoch is retried with half the batch size, up to 3 times per stage,
then an ``AutotransferError`` says what to change. Any exception that ``is_oom`` recognises
triggers it, so a test double can raise ``torch.cuda.OutOfMemoryError`` on CPU.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import decode_cache
from . import sources as sources_mod  # looked up at call time: a plugin or a test may replace resolve_source
from ._train_config import TrainConfig
from .augment import CropFlipJitter
from .console import note
from .datasets import load
from .decode_cache import decoded
from .errors import AutotransferError, DataError, Diverged
from .features import EvalCrops, extract, resolve_device
from .model import TransferModel, non_finite, to_device
from .monitor import StopTraining, TrainMonitor
from .precision import autocast, grad_scaler, resolve_precision
from .probe import L2_PATH, solve_dtype, solve_path
from .sources import Source, SourceOptions, display_source
from .strategies import SourceInfo, get_strategy

if TYPE_CHECKING:
    from .data import Dataset
    from .sources import Source
    from .strategies import Strategy

MAX_OOM_RETRIES = 3  # halvings of the batch size per stage before giving up
GRAD_CLIP = 1.0  # max global grad norm
WARMUP = 0.1  # fraction of training spent in linear warm-up
MIN_AUGMENT_SIDE = 64  # images smaller than this (e.g. 8x8 digits) train without augmentation

Report = Callable[[int, float], "bool | None"]


@dataclass
class TrainResult:
    """What one ``train`` call produced. Scores are accuracies in [0, 1], mean over tasks."""

    val_curve: list[float]  # mean val accuracy after each reported epoch (0-based epochs)
    val_score: float  # val_curve at best_epoch; ``model`` holds that epoch's weights
    test_score: float | None  # mean test accuracy of the returned model (None: evaluate_test=False)
    task_scores: dict[str, float]  # val accuracy per task at the kept epoch
    test_task_scores: dict[str, float]  # test accuracy per task ({} without a test evaluation)
    seconds: float  # wall time of the whole call (feature extraction included)
    trainable_params: int  # parameters trained in the main (last) stage, heads included
    total_params: int  # all parameters of the model, heads and adapters included
    epochs_run: int  # reported epochs actually run (< epochs when report() stopped the run)
    best_epoch: int  # index into val_curve of the kept weights (``kept_epoch``: TrainConfig.keep's rule)
    model: TransferModel  # the trained model (kept epoch); ``.predict(items)``
    strategy: str  # strategy name
    source: str  # source spec (or name)
    params: dict[str, Any]  # everything that defined the run: lr, epochs, seed, strategy params ...
    batch_size: int  # batch size at the end (smaller than asked for after an OOM back-off)
    oom_retries: int = 0  # how many times the batch size was halved
    stopped_early: bool = False  # report() asked to stop
    epoch_seconds: list[float] = field(default_factory=list)  # wall time per reported epoch (train + val)
    feature_seconds: float = 0.0  # time spent getting cached features (0 if none were needed)
    features_from_cache: bool | None = None  # cached features came from the disk cache (None: none used)
    task_curves: dict[str, list[float]] = field(default_factory=dict)  # val accuracy per task per epoch
    stage_curves: dict[str, list[float]] = field(default_factory=dict)  # val curves of unreported stages

    def predict(self, items: Sequence[Any], batch_size: int = 64) -> tuple[np.ndarray, list[np.ndarray]]:
        """Predicted class indices (n, n_tasks) and per-task probabilities; see ``TransferModel.predict``."""
        return self.model.predict(items, batch_size)

    def summary(self) -> dict[str, Any]:
        """Plain data for leaderboards (no model); a local source by its file name, not this machine's path."""

        return {
            "source": display_source(self.source), "strategy": self.strategy, "val_score": self.val_score,
            "test_score": self.test_score, "task_scores": self.task_scores,
            "test_task_scores": self.test_task_scores, "val_curve": self.val_curve,
            "best_epoch": self.best_epoch, "epochs_run": self.epochs_run, "seconds": self.seconds,
            "trainable_params": self.trainable_params, "total_params": self.total_params,
            "batch_size": self.batch_size, "oom_retries": self.oom_retries,
            "stopped_early": self.stopped_early, "params": self.params,
        }

    def save(self, path: str | Path) -> Path:
        """Weights (safetensors) + config.json for ``autotransfer.load_model``, plus result.json.

        Written to a sibling folder first and moved in file by file: a disk that fills while saving
        leaves no half-written model behind.
        """
        out = Path(path)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            self.model.save(tmp)
            (tmp / "result.json").write_text(json.dumps(self.summary(), indent=2, default=str) + "\n")
            out.mkdir(parents=True, exist_ok=True)
            for item in tmp.iterdir():
                if (out / item.name).is_dir():
                    shutil.rmtree(out / item.name)
                os.replace(item, out / item.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out


# --- small pieces ---


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error (CUDA's own class, or a RuntimeError saying so)."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def oom_message(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def auto_batch_size(n_train: int, cached_features: bool) -> int:
    """Default batch size: a power of two giving several steps per epoch even on tiny datasets.

    Backbone training: n/4 clamped to [8, 64]. Cached features (cheap steps, a linear model that
    wants many of them): n/8 clamped to [16, 256]. Never more than n.
    """
    lo, hi, div = (16, 256, 8) if cached_features else (8, 64, 4)
    target = max(lo, min(hi, n_train // div))
    return max(1, min(n_train, 1 << int(math.log2(target))))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _stage_seed(seed: int, stage: str, epoch: int) -> int:
    h = hashlib.sha256(f"{seed}|{stage}|{epoch}".encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


def _worker_init(worker_id: int) -> None:
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


def lr_factor(progress: float, warmup: float = WARMUP) -> float:
    """Linear warm-up over the first ``warmup`` of training, then cosine decay to 0."""
    if progress < warmup:
        return progress / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (progress - warmup) / (1.0 - warmup))))


def auto_augment(dataset: Dataset, augment: bool | None) -> bool:
    """The augmentation rule: images whose smaller side is >= 64 px get the source's train transforms.

    Random crops of tiny images (8x8 digits, 32x32 icons) destroy what little there is, so
    they train on the eval transform; text is never augmented. ``augment`` True/False overrides.
    """
    if augment is not None:
        return bool(augment)
    if dataset.modality != "image":
        return False
    try:
        from PIL import Image

        with Image.open(dataset.items[int(dataset.splits["train"][0])]) as im:
            return min(im.size) >= MIN_AUGMENT_SIDE
    except Exception:
        return False


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


def _accuracies(model_loop: _Loop, data: _Split, cached: bool) -> list[float]:
    """Per-task accuracy on ``data`` (with OOM back-off)."""
    while True:
        try:
            correct = torch.zeros(data.labels.shape[1], dtype=torch.long)
            broken = 0  # items whose outputs are nan or inf: a diverged model, whatever argmax says
            with torch.no_grad():
                for inputs, y in model_loop.batches(data, torch.arange(len(data)),
                                                    model_loop.batch_size * (8 if cached else 1), False):
                    for t, lg in enumerate(model_loop.logits(inputs, cached)):
                        right, bad = torch.stack([(lg.argmax(1) == y[:, t]).sum(),
                                                  (~torch.isfinite(lg)).any(1).sum()]).cpu().tolist()
                        correct[t] += right
                        broken += bad
            if broken:
                raise Diverged(f"training diverged: in {model_loop.stage}, {broken} output row(s) for {len(data)} "
                               "evaluated item(s) are nan or inf; lower --lr (or train in fp32: --precision fp32)")
            return (correct.double() / max(1, len(data))).tolist()
        except Exception as exc:
            if not is_oom(exc):
                raise
            msg = oom_message(exc)
        model_loop.backoff(msg)


@dataclass
class _FitOut:
    curve: list[float]
    task_curve: list[list[float]]
    best_epoch: int
    stopped: bool
    epoch_seconds: list[float]


def standard_error(score: float, n: int) -> float:
    """The standard error of an accuracy ``score`` measured on ``n`` items: sqrt(p(1 - p) / n)."""
    p = min(1.0, max(0.0, float(score)))
    return math.sqrt(p * (1.0 - p) / max(1, int(n)))


def kept_epoch(curve: Sequence[float], n_val: int, keep: str = "within_se") -> int:
    """The epoch whose weights a run keeps, given its validation ``curve`` on ``n_val`` items.

    ``within_se`` (the default): the latest epoch whose score is within one standard error of the
    curve's best (the one-standard-error rule). A validation split of 150 images measures 0.93 to
    within +-0.021, so an early maximum reached at a high learning rate is no evidence against a
    later, converged epoch a point below it. Measured on the imagenet benchmark task: lite0's LP-FT
    (lr 2.7e-4) peaked at epoch 3 (val 0.933, test 0.884) and ended at epoch 8 (val 0.920, test
    0.917). ``best``: the first epoch at the maximum.
    """
    best = max(range(len(curve)), key=lambda e: (curve[e], -e))
    if keep == "best":
        return best
    floor = curve[best] - standard_error(curve[best], n_val)
    return max(e for e in range(len(curve)) if curve[e] >= floor)


def fit(model: TransferModel, loop: _Loop, groups: list[dict[str, Any]], train: _Split, val: _Split, *,
        epochs: int, cached: bool, weight_decay: float, report: Report | None, verbose: bool = False,
        monitor: TrainMonitor | None = None, keep: str = "within_se") -> _FitOut:
    """Train ``groups`` for ``epochs`` epochs; evaluate and report after each; restore the kept epoch.

    The kept epoch is ``kept_epoch(curve, len(val), keep)``. ``monitor.plan`` may shorten the run
    after each reported epoch (the schedule follows the new length); ``monitor.batch`` may end it
    mid-epoch.
    """
    monitor = monitor or TrainMonitor()
    module: torch.nn.Module = model.heads if cached else model
    trainable = [p for g in groups for p in g["params"]]
    opt = torch.optim.AdamW(groups, weight_decay=weight_decay)
    base_lrs = [g["lr"] for g in opt.param_groups]
    state_names = {n for n, p in module.named_parameters() if p.requires_grad} | {n for n, _ in module.named_buffers()}
    best_state: dict[str, torch.Tensor] | None = None
    curve: list[float] = []
    task_curve: list[list[float]] = []
    seconds: list[float] = []
    best_epoch, stopped = -1, False
    epoch = 0
    while epoch < epochs:
        t0 = time.perf_counter()
        try:
            _epoch_with_backoff(model, loop, opt, base_lrs, trainable, train, epoch, epochs, cached, monitor)
        except StopTraining:
            stopped = True
            break
        _check_finite(module, state_names, loop.stage, epoch, base_lrs)
        model.eval()
        t_eval = time.perf_counter()
        accs = _accuracies(loop, val, cached)
        monitor.evaluated(len(val), time.perf_counter() - t_eval, cached)
        score = float(np.mean(accs))
        curve.append(score)
        task_curve.append(accs)
        seconds.append(time.perf_counter() - t0)
        if kept_epoch(curve, len(val), keep) == epoch:  # only a new epoch can become the kept one
            best_epoch = epoch
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items() if k in state_names}
        if verbose:
            note(f"{loop.stage} epoch {epoch + 1}/{epochs}: val {score:.4f} ({seconds[-1]:.1f}s)")
        if report is not None:
            try:
                stopped = bool(report(epoch, score))
            except StopTraining:
                stopped = True
            if stopped:
                break
        epoch += 1
        if report is not None and epoch < epochs:
            epochs = max(epoch, min(epochs, int(monitor.plan(epoch, epochs, seconds))))
    if best_state is not None:
        module.load_state_dict(best_state, strict=False)
    model.eval()
    return _FitOut(curve, task_curve, best_epoch, stopped, seconds)


def _check_finite(module: torch.nn.Module, names: set[str], stage: str, epoch: int, base_lrs: list[float]) -> None:
    """A run whose trained weights turned nan or inf fails here, naming why: it is never evaluated,
    kept, saved or used to predict."""
    bad = non_finite((n, t) for n, t in module.state_dict().items() if n in names)
    if bad:
        raise Diverged(f"training diverged: after epoch {epoch + 1} of {stage}, {len(bad)} weight tensor(s) hold nan "
                       f"or inf (e.g. {bad[0]}) at a peak learning rate of {max(base_lrs):g} (the strategy scales "
                       "--lr per layer group); lower --lr")


def _epoch_with_backoff(model: TransferModel, loop: _Loop, opt: torch.optim.Optimizer, base_lrs: list[float],
                        trainable: list[torch.nn.Parameter], data: _Split, epoch: int, epochs: int, cached: bool,
                        monitor: TrainMonitor) -> None:
    """``_train_epoch``, retried at half the batch size on out-of-memory (``StopTraining`` passes through)."""
    while True:
        try:
            _train_epoch(model, loop, opt, base_lrs, trainable, data, epoch, epochs, cached, monitor)
            return
        except StopTraining:
            raise
        except Exception as exc:
            if not is_oom(exc):
                raise
            msg = oom_message(exc)
        loop.backoff(msg)  # outside the except block: the OOM's frames are gone before the cache is emptied


def _train_epoch(model: TransferModel, loop: _Loop, opt: torch.optim.Optimizer, base_lrs: list[float],
                 trainable: list[torch.nn.Parameter], data: _Split, epoch: int, epochs: int, cached: bool,
                 monitor: TrainMonitor) -> None:
    g = torch.Generator().manual_seed(_stage_seed(loop.seed, loop.stage, epoch))
    order = torch.randperm(len(data), generator=g)
    torch.manual_seed(_stage_seed(loop.seed, loop.stage + "/rng", epoch))  # dropout, augmentation
    random.seed(_stage_seed(loop.seed, loop.stage + "/py", epoch))
    model.train()
    if cached:
        model.backbone.eval()  # not run; keeps the module's mode honest
    bs = loop.batch_size
    n_batches = max(1, math.ceil(len(data) / bs))
    for i, (inputs, y) in enumerate(loop.batches(data, order, bs, True, epoch)):
        factor = lr_factor((epoch + (i + 0.5) / n_batches) / epochs)
        for group, base in zip(opt.param_groups, base_lrs, strict=False):
            group["lr"] = base * factor
        logits = loop.logits(inputs, cached)
        loss = sum(torch.nn.functional.cross_entropy(lg, y[:, t]) for t, lg in enumerate(logits))
        opt.zero_grad(set_to_none=True)
        if loop.scaler is None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, GRAD_CLIP)
            opt.step()
        else:  # fp16: scaled loss; unscale before clipping so the threshold means the same
            loop.scaler.scale(loss).backward()
            loop.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(trainable, GRAD_CLIP)
            loop.scaler.step(opt)
            loop.scaler.update()
        monitor.batch(loop.stage, epoch, i, n_batches, epochs)


def solve_probe(heads: torch.nn.ModuleList, train: _Split, val: _Split, path: Sequence[float] = L2_PATH,
                check: Callable[[], None] | None = None) -> tuple[list[float], float]:
    """Solve the heads on (standardised) cached features; the L2 strength is chosen on val.

    ``autotransfer.probe.solve_path`` on the heads' device (``solve_dtype``): a logistic regression per
    task along ``path`` (strongest first, warm-started, cut ``PATIENCE`` points after its best;
    ties on mean val accuracy go to the lower val cross-entropy). ``check`` is called before
    every gradient and may raise to stop. Returns the winner's per-task val accuracies and its
    L2 strength; the heads hold its weights.
    """
    dev = heads[0].weight.device
    dtype = solve_dtype(dev)
    res = solve_path(train.features.to(dev, dtype), train.labels.to(dev),
                     val.features.to(dev, dtype), val.labels.to(dev), path,
                     classes=[h.out_features for h in heads], check=check)
    with torch.no_grad():
        for head, (w, b) in zip(heads, res.weights, strict=True):
            head.weight.copy_(w.to(head.weight.dtype))
            head.bias.copy_(b.to(head.bias.dtype))
    return res.accuracies, res.l2


def _solve_stage(model: TransferModel, train: _Split, val: _Split, epochs: int,
                 report: Report | None, monitor: TrainMonitor | None) -> tuple[_FitOut, float]:
    """A solver stage: one solve, reported once as the run's last epoch (nothing is left to run).

    The monitor checks before every gradient, so a deadline stops the solve as it stops an epoch.
    """
    t0 = time.perf_counter()
    accs, l2 = solve_probe(model.heads, train, val, check=monitor.check if monitor is not None else None)
    score = float(np.mean(accs))
    model.eval()
    stopped = False
    if report is not None:
        try:
            stopped = bool(report(epochs - 1, score))
        except StopTraining:
            stopped = True
    return _FitOut([score], [accs], 0, stopped, [time.perf_counter() - t0]), l2


# --- the public entry point ---


def _resolve_source(source: Any, source_options: Any) -> Source:
    if isinstance(source, Source):
        return source
    if not isinstance(source, str):
        raise AutotransferError(f"source must be a spec string or a Source, got {type(source).__name__}")
    return sources_mod.resolve_source(source, source_options or SourceOptions())


def _split(dataset: Dataset, name: str) -> _Split:
    idx = dataset.splits.get(name)
    if idx is None or len(idx) == 0:
        raise DataError(
            f"dataset {dataset.name!r} has an empty {name!r} split; training needs train and val examples "
            "— add data or change --split"
        )
    return _Split(torch.as_tensor(dataset.labels[idx], dtype=torch.long), items=[dataset.items[i] for i in idx])


def standardizer(features: torch.Tensor, isotropic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std of the training features (std floored: constant dims stay finite).

    ``isotropic``: one scale for every dimension (the RMS of the centred features). Solver stages use
    it: a per-dimension scale changes which directions an L2 penalty favours, and blows up the many
    near-constant dimensions of real pooled features (lite0 on digits: probe val 0.85 vs 0.91).
    """
    mean = features.mean(0)
    if isotropic:
        return mean, ((features - mean) ** 2).mean().sqrt().clamp_min(1e-6).expand_as(mean).clone()
    std = features.std(0, unbiased=False).clamp_min(1e-6)
    return mean, std


@torch.no_grad()
def fold_standardizer(heads: torch.nn.ModuleList, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Rewrite heads trained on ``(x - mean) / std`` as plain linear maps of ``x``.

    Probes on standardised features are far better conditioned (pooled features of some
    backbones vary by 1e-2 between inputs); folding keeps the model a plain ``nn.Linear`` per
    task, so the backbone's raw output feeds it at prediction time and in a later stage.
    """
    for head in heads:
        w = head.weight / std.to(head.weight.device)
        head.bias -= w @ mean.to(w.device)
        head.weight.copy_(w)


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


def train(dataset: Any, source: Any, strategy: str | Strategy, config: TrainConfig | None = None,
          **options: Any) -> TrainResult:
    """Fine-tune ``source`` on ``dataset`` with ``strategy``; the one training loop.

    Args:
        dataset: a path (loaded with ``autotransfer.data.load``) or a loaded ``Dataset``.
        source: a spec string (``timm:test_resnet@/w.safetensors``), a registered name, or a ``Source``.
        strategy: a registered strategy name (``autotransfer strategies``) or a ``Strategy``.
        config: a ``TrainConfig`` (lr, epochs, seed, device, report, monitor ...: every option and
            its default); keyword arguments that name its fields override them.
        **options: ``TrainConfig`` fields, and the strategy's own parameters (``depth`` for
            ``partial``, ``lr_decay``, ``lora_rank`` ...; a strategy rejects one it does not take).

    Returns:
        A ``TrainResult``; ``val_score`` is the kept epoch's (``kept_epoch``), whose weights the model keeps.
    """

    start = time.perf_counter()
    cfg, strategy_params = TrainConfig.split_options(config, options)  # checked in its __post_init__
    ds = load(dataset)
    src = _resolve_source(source, cfg.source_options)
    strat = get_strategy(strategy)
    if getattr(src, "modality", ds.modality) != ds.modality:
        raise AutotransferError(
            f"source {src.name!r} takes {src.modality} input but dataset {ds.name!r} is {ds.modality}; "
            f"pick a{'n' if ds.modality == 'image' else ''} {ds.modality} source"
        )
    dev = resolve_device(cfg.device)
    prec = resolve_precision(cfg.precision, dev)
    model, params = _build(ds, src, strat, cfg.pretrained, cfg.seed, dev, strategy_params)
    run = _Run(model, src, ds, dev, prec, cfg, auto_augment(ds, cfg.augment))
    stages = strat.stages(params)
    out = _run_stages(run, stages)
    test = _test(run, out, stages) if cfg.evaluate_test else (None, {})
    return _result(run, out, strat, params, cfg, test, time.perf_counter() - start)


def _result(run: _Run, out: _StagesOut, strat: Strategy, params: dict[str, Any], cfg: TrainConfig,
            test: tuple[float | None, dict[str, float]], seconds: float) -> TrainResult:
    trainable, total = run.model.param_counts()
    names = [t.name for t in run.ds.tasks]
    src = run.src
    return TrainResult(
        val_curve=out.val_curve,
        val_score=out.val_curve[out.best_epoch],
        test_score=test[0],
        task_scores=dict(zip(names, out.task_curve[out.best_epoch], strict=False)),
        test_task_scores=test[1],
        seconds=seconds,
        trainable_params=trainable,
        total_params=total,
        epochs_run=len(out.val_curve),
        best_epoch=out.best_epoch,
        model=run.model,
        strategy=strat.name,
        source=getattr(src, "spec", "") or src.name,
        params={"lr": cfg.lr if cfg.lr is not None else strat.default_lr, "epochs": int(cfg.epochs),
                "weight_decay": cfg.weight_decay, "seed": cfg.seed, "batch_size": cfg.batch_size,
                "pretrained": cfg.pretrained, "augment": run.augment, "precision": run.prec, **params,
                **{f"{k}_l2": v for k, v in out.solved.items()}},
        batch_size=out.batch_size,
        oom_retries=out.retries,
        stopped_early=out.stopped,
        epoch_seconds=out.epoch_seconds,
        feature_seconds=run.features.seconds,
        features_from_cache=run.features.from_cache,
        task_curves={n: [row[i] for row in out.task_curve] for i, n in enumerate(names)},
        stage_curves=out.stage_curves,
    )


def _build(ds: Dataset, src: Source, strat: Strategy, pretrained: bool, seed: int, dev: torch.device,
           strategy_params: dict[str, Any]) -> tuple[TransferModel, dict[str, Any]]:
    """The model (backbone, one head per task, the strategy's structural change) and the strategy's
    resolved parameters. The heads' init depends on the seed only, not on how the backbone was built."""

    seed_everything(seed)
    backbone = src.build(pretrained=pretrained)
    info = SourceInfo.from_backbone(src, backbone)
    params = strat.resolve_params(info, strategy_params)
    torch.manual_seed(seed)
    model = TransferModel(backbone, src.feature_dim, ds.tasks, source=src, config={
        "strategy": strat.name, "strategy_params": params, "pretrained": pretrained,
    })
    torch.manual_seed(seed + 1)
    strat.prepare_model(model, params)
    model.to(dev)
    return model, params


class _Run:
    """One ``train`` call's model, data and settings, shared by its stages."""

    def __init__(self, model: TransferModel, src: Source, ds: Dataset, dev: torch.device, prec: str,
                 cfg: TrainConfig, augment: bool):
        self.model, self.src, self.ds, self.dev, self.prec, self.augment = model, src, ds, dev, prec, augment
        self.epochs, self.lr, self.weight_decay, self.seed = int(cfg.epochs), cfg.lr, cfg.weight_decay, cfg.seed
        self.batch_size, self.cache_dir, self.pretrained = cfg.batch_size, cfg.cache_dir, cfg.pretrained
        self.verbose, self.progress, self.monitor, self.report = cfg.verbose, cfg.progress, cfg.monitor, cfg.report
        self.keep = cfg.keep
        n = cfg.num_workers
        self.workers = (0 if dev.type == "cpu" else decode_cache.default_workers()) if n is None else int(n)
        self.splits = {"train": _split(ds, "train"), "val": _split(ds, "val")}
        if cfg.evaluate_test:
            self.splits["test"] = _split(ds, "test")
        self.features = _Features(model, src, ds, dev, cfg.cache_dir, cfg.pretrained, cfg.batch_size,
                                  cfg.progress, prec, cfg.monitor.check if cfg.monitor is not None else None)

    def decode_images(self) -> None:
        """Decode every split's images once (the decoded-image cache), for stages that read items."""

        spec = self.src.decode_spec() if self.ds.modality == "image" else None
        for name, data in self.splits.items():
            data.images = decoded(self.ds, name, spec, cache_dir=self.cache_dir, progress=self.progress)

    def data(self, split: str, cached: bool) -> _Split:
        return self.features.get(split, self.splits[split]) if cached else self.splits[split]


@dataclass
class _StagesOut:
    """The reported stage's curves, and what every stage left behind."""

    val_curve: list[float] = field(default_factory=list)
    task_curve: list[list[float]] = field(default_factory=list)
    best_epoch: int = 0
    stopped: bool = False
    epoch_seconds: list[float] = field(default_factory=list)
    stage_curves: dict[str, list[float]] = field(default_factory=dict)  # unreported stages' val curves
    solved: dict[str, float] = field(default_factory=dict)  # solver stage -> the L2 strength chosen on val
    retries: int = 0  # OOM halvings over all stages
    batch_size: int = 0  # the last stage's batch size at its end
    loop: _Loop | None = None  # the last stage's loop (the test evaluation reuses it)


def _run_stages(run: _Run, stages: Sequence[Any]) -> _StagesOut:
    """Run the strategy's stages in order; the reported one makes the val curve."""
    if not run.pretrained or not all(s.cached_features for s in stages):  # items will be read: decode them once
        run.decode_images()
    res = _StagesOut()
    for stage in stages:
        out, loop = _run_stage(run, stage, res)
        res.retries += loop.retries
        res.batch_size, res.loop = loop.batch_size, loop
        if stage.reported:
            res.val_curve, res.task_curve, res.best_epoch, res.stopped = (out.curve, out.task_curve, out.best_epoch,
                                                                          out.stopped)
            res.epoch_seconds = out.epoch_seconds
        else:
            res.stage_curves[stage.name] = out.curve
    if not res.val_curve:
        raise StopTraining("stopped before its first epoch ended")
    return res


def _run_stage(run: _Run, stage: Any, res: _StagesOut) -> tuple[_FitOut, _Loop]:
    """One stage: fit (or solve) the parameters it trains on items or on standardised cached features."""
    model, cached = run.model, stage.cached_features
    train_data, val_data = run.data("train", cached), run.data("val", cached)
    if cached:  # train the heads on standardised features; folded back into the heads below
        mean, std = standardizer(train_data.features, isotropic=stage.solver)
        train_data, val_data = (_Split(d.labels, features=(d.features - mean) / std) for d in (train_data, val_data))
    bs = int(run.batch_size) if run.batch_size else auto_batch_size(len(train_data), cached)
    loop = _Loop(model, run.src, run.dev, min(bs, len(train_data)), run.workers, run.augment, run.seed, stage.name,
                 run.prec)
    stage_lr = stage.lr if stage.lr is not None else (run.lr if run.lr is not None else stage.strategy.default_lr)
    groups = stage.strategy.param_groups(model, lr=stage_lr, weight_decay=run.weight_decay, **stage.params)
    stage_report = run.report if stage.reported else None
    if stage.solver and cached:
        out, res.solved[stage.name] = _solve_stage(model, train_data, val_data, run.epochs, stage_report,
                                                    run.monitor)
    else:
        out = fit(model, loop, groups, train_data, val_data, epochs=int(stage.epochs or run.epochs), cached=cached,
                  weight_decay=run.weight_decay, report=stage_report, verbose=run.verbose, monitor=run.monitor,
                  keep=run.keep)
    if cached:
        fold_standardizer(model.heads, mean, std)
    return out, loop


def _test(run: _Run, out: _StagesOut, stages: Sequence[Any]) -> tuple[float, dict[str, float]]:
    """Mean and per-task test accuracy of the trained model, on the last stage's inputs."""
    assert out.loop is not None
    last_cached = stages[-1].cached_features
    accs = _accuracies(out.loop, run.data("test", last_cached), last_cached)
    return float(np.mean(accs)), {t.name: a for t, a in zip(run.ds.tasks, accs, strict=False)}
