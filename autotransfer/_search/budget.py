"""The search's time budget: ``--timeout`` bounds everything, and each trial is planned with measured costs.

One ``Budget`` per search process. The deadline counts from the start of the search (ranking
included); a reserve, re-estimated from measured forward costs, is kept for testing and exporting
the answer. Scratch baselines share ``BASELINE_SHARE`` of what is left when they start: each gets
an equal part of what the earlier ones left over, plans its epoch count from its measured epoch
cost (a complete, shorter schedule rather than a cut one), and runs at least
``MIN_BASELINE_EPOCHS`` when the rest of the share allows (the floor borrows from the later
baselines, never from the transfer trials). A baseline that starts with the share spent is
skipped, once another baseline has completed. Every trial is stopped mid-epoch at the
deadline, and plans its own epoch count so that its schedule ends before it.

Why a share and not full baselines: on real ImageNet models a from-scratch epoch costs as much as
a fine-tuning epoch (EfficientNet-Lite0 at 224 px, 100 training and 397 validation images: about
a minute and a half on a 2-core CPU), so three full 12-epoch baselines took 58 of 61 minutes and
left the transfer trials nothing. A scratch reference only has to show whether training from
random init can compete, and a short complete schedule shows that.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..monitor import StopTraining, TrainMonitor

BASELINE_SHARE = 0.35  # of the budget left when the first baseline starts, for all baselines together
MIN_BASELINE_EPOCHS = 2  # a baseline's floor when the whole budget allows it (one epoch is mostly warm-up)
MIN_USEFUL_EPOCHS = 2  # a sampled trial starts only when the budget left fits this many of the cheapest
# measured fine-tuning epochs (one epoch is mostly warm-up)
RESERVE_FLOOR = 2.0  # seconds always kept for writing the reports


class Budget:
    """Deadlines for one search process, on its ``clock`` (monotonic seconds; a test may drive it)."""

    def __init__(self, start: float, timeout: float, n_test: int, clock: Callable[[], float] = time.monotonic):
        self.now = clock  # seconds on the search's clock
        self.n_test = int(n_test)
        self.end = start + float(timeout)
        self.item_seconds = 0.0  # slowest measured forward pass per item through a backbone
        self.share: float | None = None  # seconds for all baselines, fixed when the first one starts
        self.share_used = 0.0

    @property
    def reserve(self) -> float:
        """Seconds kept after the trials: testing the answer and the best baseline, then the reports."""
        return RESERVE_FLOOR + 2 * self.n_test * self.item_seconds

    @property
    def hard_deadline(self) -> float:
        """When every trial must have stopped."""
        return self.end - self.reserve

    def remaining(self) -> float:
        return self.hard_deadline - self.now()

    def measured(self, n_items: int, seconds: float) -> None:
        """A forward pass of ``n_items`` through a backbone took ``seconds`` (sizes the reserve)."""
        if n_items > 0:
            self.item_seconds = max(self.item_seconds, seconds / n_items)

    def share_left(self) -> float:
        """Seconds left of the baselines' share (fixed when the first baseline asks)."""
        if self.share is None:
            self.share = BASELINE_SHARE * max(0.0, self.remaining())
        return max(0.0, self.share - self.share_used)


class TrialMonitor(TrainMonitor):
    """Plans one trial's epochs within its deadline, stops it at the hard deadline, and shows progress."""

    def __init__(self, budget: Budget, epochs: int, soft_deadline: float, min_epochs: int = 1,
                 bar: Any = None, floor_deadline: float | None = None):
        self.budget = budget
        self.soft_deadline, self.min_epochs = soft_deadline, int(min_epochs)
        self.floor_deadline = floor_deadline  # how far ``min_epochs`` may stretch the soft deadline
        self.bar = bar
        self.started = budget.now()
        self.planned = int(epochs)
        self.epoch_seconds: list[float] = []
        self.stopped = ""  # why the monitor ended the run ("timeout"), "" if it did not
        self.val: float | None = None
        self.best: Any = None  # the best epoch's ``metrics.Scored`` so far (its interval and standard error)
        self._drawn = 0.0

    # --- TrainMonitor ---

    def batch(self, stage: str, epoch: int, i: int, n_batches: int, epochs: int) -> None:
        t = self.budget.now()
        if self.bar is not None and t - self._drawn > 0.5:
            self._drawn = t
            self.bar.total = self.planned
            self.bar.n = round(min(self.planned, epoch + (i + 1) / n_batches), 2)
            self.bar.set_postfix_str(self._postfix(stage), refresh=False)
            self.bar.refresh()
        self.check(t)
        if self.floor_deadline is not None and t > self.floor_deadline:  # a baseline past its share
            self.stopped = "timeout"
            raise StopTraining("the baselines' share of the time budget ended")

    def check(self, t: float | None = None) -> None:
        if (self.budget.now() if t is None else t) > self.budget.hard_deadline:
            self.stopped = "timeout"
            raise StopTraining("the search's time budget ended")

    def evaluated(self, n_items: int, seconds: float, cached: bool) -> None:
        if not cached:
            self.budget.measured(n_items, seconds)

    def scored(self, epoch: int, band: Any) -> None:
        self.best = band

    def plan(self, epochs_done: int, epochs: int, epoch_seconds: list[float]) -> int:
        self.epoch_seconds = list(epoch_seconds)
        per_epoch = sum(epoch_seconds) / len(epoch_seconds)
        t = self.budget.now()
        deadline = self.soft_deadline
        if epochs_done < self.min_epochs:  # a floor, when what it may borrow allows it
            cap = self.budget.hard_deadline if self.floor_deadline is None else self.floor_deadline
            deadline = max(deadline, min(cap, t + (self.min_epochs - epochs_done) * per_epoch))
        deadline = min(deadline, self.budget.hard_deadline)
        affordable = epochs_done + int(max(0.0, deadline - t) // per_epoch)
        self.planned = max(epochs_done, min(epochs, affordable))
        if self.planned == epochs_done and epochs_done < epochs:
            self.stopped = "timeout"
        return self.planned

    # --- for the runner ---

    def per_epoch(self, epochs_done: int) -> float:
        """Mean seconds per epoch so far (before the first ``plan``: the time since the trial started)."""
        if self.epoch_seconds:
            return sum(self.epoch_seconds) / len(self.epoch_seconds)
        return (self.budget.now() - self.started) / max(1, epochs_done)

    def reported(self, epoch: int, val: float) -> None:
        self.val = val
        if self.bar is not None:
            self.bar.total = self.planned
            self.bar.n = min(self.planned, epoch + 1)
            self.bar.set_postfix_str(self._postfix(""), refresh=True)

    def _postfix(self, stage: str) -> str:
        val = f"val {self.val:.4f}" if self.val is not None else "val -"
        return f"{stage + ' ' if stage else ''}{val}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
