"""The probe's solver stage: the heads solved on cached features (``autotransfer.probe``), the L2
strength chosen on validation."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..model import TransferModel
from ..monitor import StopTraining, TrainMonitor
from ..probe import L2_PATH, PathResult, solve_dtype, solve_path
from .fit import Report, _FitOut, score_band
from .loop import _Split

if TYPE_CHECKING:
    pass

def solve_probe(heads: torch.nn.ModuleList, train: _Split, val: _Split, path: Sequence[float] = L2_PATH,
                check: Callable[[], None] | None = None, metric: str = "accuracy") -> tuple[list[float], float]:
    """Solve the heads on (standardised) cached features; the L2 strength is chosen on val by ``metric``.

    ``autotransfer.probe.solve_path`` on the heads' device (``solve_dtype``): a logistic regression per
    task along ``path`` (strongest first, warm-started, cut ``PATIENCE`` points after its best;
    ties on the mean val score go to the lower val cross-entropy). ``check`` is called before
    every gradient and may raise to stop. Returns the winner's per-task val scores (a loss negated)
    and its L2 strength; the heads hold its weights.
    """
    res = _solve(heads, train, val, path, check, metric)
    return res.scores, res.l2


def _solve(heads: torch.nn.ModuleList, train: _Split, val: _Split, path: Sequence[float],
           check: Callable[[], None] | None, metric: str) -> PathResult:
    """``solve_probe``'s solve, whole: its ``PathResult`` holds the winner's validation predictions too."""
    dev = heads[0].weight.device
    dtype = solve_dtype(dev)
    res = solve_path(train.features.to(dev, dtype), train.labels.to(dev),
                     val.features.to(dev, dtype), val.labels.to(dev), path,
                     classes=[h.out_features for h in heads], check=check, metric=metric)
    with torch.no_grad():
        for head, (w, b) in zip(heads, res.weights, strict=True):
            head.weight.copy_(w.to(head.weight.dtype))
            head.bias.copy_(b.to(head.bias.dtype))
    return res


def _solve_stage(model: TransferModel, train: _Split, val: _Split, epochs: int, report: Report | None,
                 monitor: TrainMonitor | None, path: Sequence[float] = L2_PATH,
                 metric: str = "accuracy") -> tuple[_FitOut, float]:
    """A solver stage: one solve, reported once as the run's last epoch (nothing is left to run).

    The monitor checks before every gradient, so a deadline stops the solve as it stops an epoch.
    ``path`` of one strength solves at it (a refit re-solves at the strength its run chose).
    """
    t0 = time.perf_counter()
    res = _solve(model.heads, train, val, path, monitor.check if monitor is not None else None, metric)
    accs = res.scores
    score = float(np.mean(accs))
    band = score_band(metric, val.labels.numpy(), res.val_preds, res.val_probs)
    if monitor is not None:
        monitor.scored(epochs - 1, band)
    model.eval()
    stopped = False
    if report is not None:
        try:
            stopped = bool(report(epochs - 1, score))
        except StopTraining:
            stopped = True
    return (_FitOut([score], [accs], 0, stopped, [time.perf_counter() - t0], band,
                    [np.asarray(p, np.float32) for p in res.val_probs]), res.l2)
