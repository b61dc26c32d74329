"""``fit``: the epochs of one stage (AdamW, warm-up then cosine, clipping), evaluated and reported
after each, and the kept epoch's weights restored at the end."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..console import note
from ..errors import Diverged
from ..model import TransferModel, non_finite
from ..monitor import StopTraining, TrainMonitor
from .loop import _accuracies, _Loop, _Split
from .oom import is_oom, oom_message
from .seeding import _stage_seed

if TYPE_CHECKING:
    pass

GRAD_CLIP = 1.0  # max global grad norm


WARMUP = 0.1  # fraction of training spent in linear warm-up


Report = Callable[[int, float], "bool | None"]


def lr_factor(progress: float, warmup: float = WARMUP) -> float:
    """Linear warm-up over the first ``warmup`` of training, then cosine decay to 0."""
    if progress < warmup:
        return progress / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (progress - warmup) / (1.0 - warmup))))


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
    0.917). ``best``: the first epoch at the maximum. ``last``: the last epoch (a refit, which has no
    validation to choose with).
    """
    if keep == "last":
        return len(curve) - 1
    best = max(range(len(curve)), key=lambda e: (curve[e], -e))
    if keep == "best":
        return best
    floor = curve[best] - standard_error(curve[best], n_val)
    return max(e for e in range(len(curve)) if curve[e] >= floor)


def fit(model: TransferModel, loop: _Loop, groups: list[dict[str, Any]], train: _Split, val: _Split, *,
        epochs: int, cached: bool, weight_decay: float, report: Report | None, verbose: bool = False,
        monitor: TrainMonitor | None = None, keep: str = "within_se", stop_after: int | None = None) -> _FitOut:
    """Train ``groups`` for ``epochs`` epochs; evaluate and report after each; restore the kept epoch.

    The kept epoch is ``kept_epoch(curve, len(val), keep)``. ``monitor.plan`` may shorten the run
    after each reported epoch (the schedule follows the new length); ``monitor.batch`` may end it
    mid-epoch. ``stop_after`` ends the run after that many epochs, the schedule still spanning ``epochs``.
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
    while epoch < min(epochs, stop_after or epochs):
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
