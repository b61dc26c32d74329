"""Hooks between the training loop and whoever drives it (the search's budget); imports no torch."""

from __future__ import annotations

from typing import Any


class StopTraining(Exception):
    """Raise from a ``report`` callback to end the run after this epoch (e.g. a pruned trial), or
    from ``TrainMonitor.batch`` to end it at once (the unfinished epoch is dropped)."""


class TrainMonitor:
    """Hooks a caller (the search) passes to ``train`` to bound and show a run; the base does nothing."""

    def batch(self, stage: str, epoch: int, i: int, n_batches: int, epochs: int) -> None:
        """After each training batch; raise ``StopTraining`` to end the run now (e.g. a deadline)."""

    def check(self) -> None:
        """Between units of work that are not training batches (a batch of feature extraction, a
        solver's gradient); raise ``StopTraining`` to end the run now."""

    def evaluated(self, n_items: int, seconds: float, cached: bool) -> None:
        """After each validation pass: ``n_items`` took ``seconds`` (through the backbone unless ``cached``)."""

    def scored(self, epoch: int, band: Any) -> None:
        """When ``epoch`` became the run's best on validation: its ``metrics.Scored`` (the score, a
        loss negated, with its 95% interval and the standard error the kept-epoch rule uses). Called
        before that epoch's ``report``."""

    def plan(self, epochs_done: int, epochs: int, epoch_seconds: list[float]) -> int:
        """After each reported epoch: how many epochs the run should have in all (its learning-rate
        schedule follows); ``epochs_done`` ends it now. The base keeps ``epochs``."""
        return epochs
