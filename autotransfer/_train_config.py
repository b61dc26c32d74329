"""``TrainConfig``: every option of ``autotransfer.train`` and its default, written once.

Light (no torch): the CLI's ``train`` command reads its option defaults from here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checks import COUNT, COUNT0, NONNEGATIVE, SEED, check_fields, split_options
from .errors import AutotransferError
from .metrics import check_metric
from .precision import check_precision

# lr 0 is allowed here (it freezes a stage: a test's probe); the CLI's --lr must be above 0
KEEP_RULES = ("within_se", "best", "last")  # which epoch a run keeps (``kept_epoch``)
_RULES = {"lr": NONNEGATIVE, "epochs": COUNT, "weight_decay": NONNEGATIVE, "seed": SEED, "batch_size": COUNT,
          "num_workers": COUNT0, "stop_after": COUNT}


@dataclass(frozen=True)
class TrainConfig:
    """How one ``train`` call runs (the strategy's own parameters are passed beside it)."""

    lr: float | None = None  # peak learning rate [None: the strategy's default_lr]
    epochs: int = 10  # reported epochs; ``report`` is called after each
    weight_decay: float = 0.01  # AdamW weight decay
    seed: int = 0  # backbone init, heads, shuffles, augmentation
    device: str = "auto"  # auto, cpu or cuda
    # ``report(epoch, val_score)`` after each epoch; return True or raise ``StopTraining`` to stop
    # (the run still returns its kept epoch so far)
    report: Callable[[int, float], bool | None] | None = None
    batch_size: int | None = None  # None: ``auto_batch_size``; halved on CUDA out-of-memory
    # cache folder of features (cached-feature stages) and decoded images; False turns both off
    cache_dir: str | Path | None = None
    pretrained: bool = True  # False: the same architecture from random init (the scratch baseline)
    augment: bool | None = None  # None: ``auto_augment``'s rule; True/False forces it
    evaluate_test: bool = True  # compute ``test_score`` on the test split once, at the end
    num_workers: int | None = None  # loader processes [None: 0 on CPU, one per core on CUDA]
    source_options: Any = None  # ``SourceOptions`` for a source given as a spec string
    verbose: bool = False  # a note per epoch on stderr
    progress: bool = False  # feature-extraction progress bars
    monitor: Any = None  # a ``TrainMonitor`` that may shorten the run or stop it mid-epoch (the search's budget)
    precision: str = "auto"  # auto, bf16, fp16 or fp32 (``autotransfer.precision``); recorded in ``params``
    # which epoch's weights the run keeps: "within_se", the latest epoch whose validation score is
    # within one standard error of the best (``kept_epoch``), "best", the first maximum, or "last", the
    # last epoch run (a refit: validation chooses nothing)
    keep: str = "within_se"
    # a refit's replay of a finished run: the reported stage stops after this many epochs while its
    # learning-rate schedule still spans ``epochs`` (the run it replays kept that epoch) [None: all epochs]
    stop_after: int | None = None
    # solver stage name -> the L2 strength to solve at, instead of choosing one on validation (a refit)
    l2: dict[str, float] | None = None
    # what each epoch's validation score is, and so which epoch is kept and which L2 a probe solves at:
    # accuracy, balanced_accuracy, macro_f1, log_loss (negated: every score is higher-is-better) or
    # auto (``metrics.resolve_metric``: balanced accuracy when the training classes are imbalanced)
    metric: str = "accuracy"

    def __post_init__(self) -> None:
        """A number an option cannot mean is one line naming it, before any work."""
        check_fields(self, _RULES, optional=("lr", "batch_size", "num_workers", "stop_after"))
        if self.keep not in KEEP_RULES:
            raise AutotransferError(f"keep must be one of {', '.join(KEEP_RULES)}, got keep={self.keep!r}")
        check_metric(self.metric)
        check_precision(self.precision)

    @classmethod
    def split_options(cls, config: TrainConfig | None, options: dict[str, Any]) -> tuple[TrainConfig, dict[str, Any]]:
        """``config`` with the options that name its fields, and the rest: the strategy's parameters."""
        base, mine, strategy_params = split_options(cls, config, options)
        return dataclasses.replace(base, **mine), strategy_params


DEFAULTS = TrainConfig()  # the defaults the CLI shows
