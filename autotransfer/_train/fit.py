"""``fit``: the epochs of one stage (AdamW, warm-up then cosine, clipping), evaluated and reported
after each, and the kept epoch's weights restored at the end."""

from __future__ import annotations

import dataclasses
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
from ..metrics import Scored, scorable, scored, task_values
from ..model import TransferModel, non_finite
from ..monitor import StopTraining, TrainMonitor
from .loop import _Loop, _predictions, _Split
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
    band: Scored | None = None  # the kept epoch's score with its interval and standard error
    val_probs: list[np.ndarray] | None = None  # the kept epoch's per-task validation probabilities


def standard_error(score: float, n: int) -> float:
    """The standard error of an accuracy ``score`` measured on ``n`` items: sqrt(p(1 - p) / n)."""
    p = min(1.0, max(0.0, float(score)))
    return math.sqrt(p * (1.0 - p) / max(1, int(n)))


def kept_epoch(curve: Sequence[float], n_val: int, keep: str = "within_se", error: float | None = None) -> int:
    """The epoch whose weights a run keeps, given its validation ``curve`` on ``n_val`` items.

    ``within_se`` (the default): the latest epoch whose score is within one standard error of the
    curve's best (the one-standard-error rule). A validation split of 150 images measures 0.93 to
    within +-0.021, so an early maximum reached at a high learning rate is no evidence against a
    later, converged epoch a point below it. Measured on the imagenet benchmark task: lite0's LP-FT
    (lr 2.7e-4) peaked at epoch 3 (val 0.933, test 0.884) and ended at epoch 8 (val 0.920, test
    0.917). ``best``: the first epoch at the maximum. ``last``: the last epoch (a refit, which has no
    validation to choose with). ``error`` is the best score's standard error (``score_band``); None: an
    accuracy's, ``standard_error(best, n_val)``.
    """
    if keep == "last":
        return len(curve) - 1
    best = max(range(len(curve)), key=lambda e: (curve[e], -e))
    if keep == "best":
        return best
    floor = curve[best] - (standard_error(curve[best], n_val) if error is None else error)
    return max(e for e in range(len(curve)) if curve[e] >= floor)


def score_band(metric: str, labels: np.ndarray, preds: np.ndarray, probs: list[np.ndarray]) -> Scored:
    """A validation score with its interval and the standard error the kept-epoch rule uses: accuracy's
    binomial one, sqrt(p(1 - p) / n) of the mean over tasks, as the rule always had; the stratified
    bootstrap's for every other metric (``metrics.scored``)."""
    band = scored(metric, labels, scorable(metric, preds, probs))
    if metric == "accuracy":
        band = dataclasses.replace(band, se=standard_error(band.value, len(labels)))
    return band


def fit(model: TransferModel, loop: _Loop, groups: list[dict[str, Any]], train: _Split, val: _Split, *,
        epochs: int, cached: bool, weight_decay: float, report: Report | None, verbose: bool = False,
        monitor: TrainMonitor | None = None, keep: str = "within_se", stop_after: int | None = None,
        metric: str = "accuracy") -> _FitOut:
    """Train ``groups`` for ``epochs`` epochs; evaluate and report after each; restore the kept epoch.

    Each epoch's validation score is ``metric``'s (a loss negated: higher is better), the mean over
    tasks. The kept epoch is ``kept_epoch(curve, len(val), keep, error)``, ``error`` being the best
    epoch's standard error (``score_band``, computed when an epoch becomes the best and handed to
    ``monitor.scored``). ``monitor.plan`` may shorten the run after each reported epoch (the schedule
    follows the new length); ``monitor.batch`` may end it mid-epoch. ``stop_after`` ends the run after
    that many epochs, the schedule still spanning ``epochs``.
    """
    monitor = monitor or TrainMonitor()
    module: torch.nn.Module = model.heads if cached else model
    trainable = [p for g in groups for p in g["params"]]
    opt = torch.optim.AdamW(groups, weight_decay=weight_decay)
    base_lrs = [g["lr"] for g in opt.param_groups]
    state_names = {n for n, p in module.named_parameters() if p.requires_grad} | {n for n, _ in module.named_buffers()}
    best_state: dict[str, torch.Tensor] | None = None
    scores = _ValScores(val.labels.numpy(), metric, monitor)
    seconds: list[float] = []
    stopped = False
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
        predicted = _predictions(loop, val, cached)
        monitor.evaluated(len(val), time.perf_counter() - t_eval, cached)
        score = scores.add(epoch, *predicted)
        seconds.append(time.perf_counter() - t0)
        if scores.keeps(epoch, keep, *predicted):
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
    return _FitOut(scores.curve, scores.task_curve, scores.kept_epoch, stopped, seconds, scores.kept_band(),
                   scores.kept[1] if scores.kept is not None else None)


class _ValScores:
    """One fit's validation scores: each epoch's (``metric``'s, the mean over tasks), the band of every
    epoch that was the best when it ended (handed to ``monitor.scored``), and the kept epoch's outputs."""

    def __init__(self, labels: np.ndarray, metric: str, monitor: TrainMonitor):
        self.labels, self.metric, self.monitor = labels, metric, monitor
        self.curve: list[float] = []
        self.task_curve: list[list[float]] = []
        self.bands: dict[int, Scored] = {}
        self.kept_epoch = -1
        self.kept: tuple[np.ndarray, list[np.ndarray]] | None = None  # its predictions and probabilities

    def add(self, epoch: int, preds: np.ndarray, probs: list[np.ndarray]) -> float:
        """Score ``epoch``; a new best gets its band (interval, and the standard error the kept-epoch rule needs)."""
        accs = task_values(self.metric, self.labels, preds, probs)
        self.curve.append(float(np.mean(accs)))
        self.task_curve.append(accs)
        if self._best() == epoch:
            self.bands[epoch] = score_band(self.metric, self.labels, preds, probs)
            self.monitor.scored(epoch, self.bands[epoch])
        return self.curve[-1]

    def keeps(self, epoch: int, keep: str, preds: np.ndarray, probs: list[np.ndarray]) -> bool:
        """Whether ``epoch`` is now the kept one (only a new epoch can become it)."""
        if kept_epoch(self.curve, len(self.labels), keep, self.bands[self._best()].se) != epoch:
            return False
        self.kept_epoch, self.kept = epoch, (preds, probs)
        return True

    def kept_band(self) -> Scored | None:
        if self.kept is None:
            return None
        return self.bands.get(self.kept_epoch) or score_band(self.metric, self.labels, *self.kept)

    def _best(self) -> int:
        return max(range(len(self.curve)), key=lambda e: (self.curve[e], -e))


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
