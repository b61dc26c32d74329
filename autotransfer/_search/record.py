"""What the search records in Optuna: each trial's user attributes (``TrialRecord``) and the study's
(``StudyRecord``). Every key is written once, as a field name.

The keys are the ones the first studies stored, so a run folder or a shared study written by an
earlier version reads the same. A field left None is not stored, and a key that is absent reads as
None: the search never stores a null. Writes stay incremental (``save`` stores the fields that are
set), because other workers and the pruner read a running trial's attributes while it trains.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

SCRATCH = "scratch"  # role: a scratch baseline (a top source's architecture from random init)
DEFAULT = "default"  # role: a trial the search enqueued (a probe, a source's default fine-tuning)
SEARCH = "search"  # role: a trial the sampler chose


class _Record:
    """What both records share: build from stored attributes, store the fields that are set."""

    @classmethod
    def _read(cls, attrs: dict[str, Any]) -> Any:
        """The stored attributes that are fields (a key some other tool added is left alone)."""
        return cls(**{f.name: attrs[f.name] for f in dataclasses.fields(cls) if f.name in attrs})

    def to_user_attrs(self) -> dict[str, Any]:
        """The fields that are set, by their stored keys."""
        return {f.name: v for f in dataclasses.fields(self) if (v := getattr(self, f.name)) is not None}

    def save(self, owner: Any) -> None:
        """Store the fields that are set on ``owner`` (an ``optuna.Trial`` or ``optuna.Study``); the
        others are left as they are."""
        for key, value in self.to_user_attrs().items():
            owner.set_user_attr(key, value)


@dataclass
class TrialRecord(_Record):
    """One trial's user attributes."""

    role: str | None = None  # SCRATCH, DEFAULT or SEARCH; None: not started yet (``kind`` reads it as SEARCH)
    fixed: dict[str, str] | None = None  # a probe: {"source", "strategy"}, run once per ranked source
    baseline_source: str | None = None  # a scratch baseline: the source whose architecture it trains
    config: dict[str, Any] | None = None  # what it trained: source, strategy, lr, weight_decay, params
    source: str | None = None  # the source's display name ("scratch:<architecture>" for a baseline)
    strategy: str | None = None  # the strategy's name (probes and baselines have no sampled params)
    provider: str | None = None  # the plugin that provided the source
    precision: str | None = None  # resolved: bf16, fp16 or fp32
    input_size: int | None = None  # a baseline trained below its source's input size: that size (px)
    scratch_note: str | None = None  # ... and why
    train_items: int | None = None  # a probe that trained on ranking's subsample: its size
    epoch_seconds: float | None = None  # mean seconds per epoch so far (the pruner's cost estimate)
    planned_epochs: int | None = None  # the epochs it is planned to run in all
    cut_reason: str | None = None  # why a trial that completed stopped before its planned epochs
    prune_reason: str | None = None  # why it was pruned
    fail_reason: str | None = None  # why it failed
    skipped: str | None = None  # why it was never trained (it does not count toward --trials)
    seconds: float | None = None  # wall time, from start to the study's tell
    epochs_run: int | None = None  # epochs it trained
    best_epoch: int | None = None  # the epoch whose weights it kept
    trainable_params: int | None = None  # parameters trained in its main stage, heads included
    total_params: int | None = None  # all parameters of its model
    task_scores: dict[str, float] | None = None  # validation score per task at the kept epoch (the study's metric)
    # [low, high, standard error] of the validation score trials.csv shows: the best epoch's while it
    # trains (and when pruned), the kept epoch's once complete (the standard error: the kept-epoch rule's)
    val_interval: list[float] | None = None
    # each task's validation score at the kept epoch with its 95% interval: {task: [low, high]} (multi-task data)
    task_intervals: dict[str, list[float]] | None = None

    @classmethod
    def from_frozen(cls, trial: Any) -> TrialRecord:
        """The record of ``trial`` (a ``FrozenTrial``, or an ``optuna.Trial`` while it runs)."""
        return cls._read(trial.user_attrs)

    @property
    def kind(self) -> str:
        """The role, a trial that has none yet being a sampled one."""
        return self.role or SEARCH

    @property
    def is_scratch(self) -> bool:
        return self.role == SCRATCH


@dataclass
class StudyRecord(_Record):
    """The study's user attributes: what it searches, for which data, and what it found."""

    ranked: list[str] | None = None  # every ranked source, best first: the probes run over them
    top_k: int | None = None  # how many of them are fine-tuned
    fingerprint: str | None = None  # the data's fingerprint: a resumed study must be of the same data
    epochs: int | None = None  # epochs per trial, shared by every worker
    data: str | None = None  # the data as given
    primary: str | None = None  # the estimator that ordered the ranking
    estimators: list[str] | None = None  # every estimator ranked with
    scores: dict[str, dict[str, Any]] | None = None  # source -> estimator -> score
    searched: dict[str, Any] | None = None  # source -> the strategies searched and those skipped (why)
    pruner: dict[str, Any] | None = None  # margin, warmup_epochs, patience: the report draws the margin
    architectures: dict[str, str] | None = None  # source -> its architecture
    dataset: dict[str, Any] | None = None  # name, modality, tasks, n_<split>, counts (the model card's)
    sources: list[str] | None = None  # the top-k chosen by their probes (alone in studies made before probes)
    probe_scores: dict[str, float] | None = None  # source -> its solved probe's validation score
    summary: dict[str, Any] | None = None  # the summary.csv row
    answer: int | None = None  # the chosen trial's number
    metric: str | None = None  # what every trial's value is (None: a study from before the metric, accuracy)
    metric_reason: str | None = None  # why that metric (the summary's and the report's sentence)
    # the answer on test, per task: {"classes": [...], "confusion": [[true][predicted] counts]}
    test_confusion: dict[str, dict[str, Any]] | None = None

    @classmethod
    def from_study(cls, study: Any) -> StudyRecord:
        """The record of ``study`` (one read of its attributes)."""
        return cls._read(study.user_attrs)

    @property
    def selection_metric(self) -> str:
        """The metric every trial's value is: ``metric``, or accuracy for a study from before the metric."""
        return self.metric or "accuracy"

    @property
    def made(self) -> bool:
        """Whether a search has recorded its ranking here (``sources`` alone: a study from before the probes)."""
        return self.ranked is not None or self.sources is not None
