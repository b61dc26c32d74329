"""``SearchConfig``: every option of ``autotransfer.search`` and its default, written once.

The CLI's ``search`` command takes its option defaults from here; ``search(data, config,
**overrides)`` takes a ``SearchConfig``, keyword arguments, or both. Light: no torch, no optuna.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checks import COUNT, COUNT0, NONNEGATIVE, POSITIVE, SEED, check_fields, split_options
from ..errors import AutotransferError
from ..metrics import check_metric
from ..precision import check_precision

# the numeric options and what each accepts; None (decided from the data) is accepted where listed
_RULES = {"trials": COUNT, "timeout": POSITIVE, "top_k": COUNT, "epochs": COUNT, "seed": SEED, "max_samples": COUNT,
          "warmup_epochs": COUNT0, "patience": COUNT, "margin": NONNEGATIVE, "scratch_baselines": COUNT,
          "stall_trials": COUNT0, "ensemble": COUNT0}
_OPTIONAL = ("trials", "timeout", "epochs", "max_samples", "scratch_baselines")
EFFICIENCY_PRUNERS = ("median", "halving", "none")
REFIT_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class SearchConfig:
    """How one search runs. ``None`` means "decided from the data" where the comment says so."""

    out: str | Path | None = None  # run directory [None: ./autotransfer-runs/<data-name>]
    trials: int | None = None  # total trials of the study, a rerun tops it up [None: by data size]
    timeout: float | None = None  # seconds for the whole search [None: 1 h; 4 h for >= 10k training items]
    sources: Sequence[str] | None = None  # source specs [None: the modality's zoo]
    top_k: int = 3  # sources fine-tuned: the top-k by solved probe on validation
    strategies: Sequence[str] | None = None  # strategies searched [None: every registered one]
    estimators: Sequence[str] | None = None  # transferability estimators [None: the registered defaults]
    primary: str = "logme"  # the estimator that orders the ranking
    epochs: int | None = None  # epochs per trial [None: 12 / 8 / 5 by data size]
    storage: str | None = None  # Optuna storage URL shared by workers [None: sqlite in the run directory]
    study_name: str | None = None  # [None: autotransfer-<data-name>]
    seed: int = 0  # seed for splits, sampler and training
    device: str = "auto"  # auto, cpu or cuda
    offline: bool = False  # never touch the network; local weights only
    trust_remote_code: bool = False  # allow Hugging Face models with custom code
    label_col: str | None = None  # label column(s) of a table; "a,b" = multi-task
    text_col: str | None = None  # text column of a table [None: auto-detected]
    split: Any = None  # train,val,test fractions when the data is not pre-split [None: 0.7,0.15,0.15]
    max_samples: int | None = None  # rank on a stratified subsample of this size [None: every training item]
    cache_dir: str | None = None  # features and decoded images [None: ~/.cache/autotransfer]
    warmup_epochs: int = 1  # epochs before scratch pruning
    patience: int = 2  # consecutive epochs behind scratch before a trial is pruned
    margin: float = 0.02  # how far behind scratch (or the best finished trial, extrapolated) counts as behind
    efficiency_pruner: str = "median"  # median, halving or none: chained after the scratch check
    scratch_baselines: int | None = None  # at most this many scratch baselines [None: one per family in the top-k]
    # end the search early when this many sampled trials in a row have finished without raising the
    # best validation score of any trial (baselines and probes included); 0: always run --trials
    stall_trials: int = 6
    # after the search, retrain the chosen trial on train + val and export that: on, off, or auto
    # (``refit.resolve_refit``'s rule: on when the smallest class has fewer than 50 training items)
    refit: str = "auto"
    ensemble: int = 0  # greedy ensemble selection over the completed trials, at most this many picks; 0: off
    # what chooses: each trial's validation score (so pruning, the kept epoch and a probe's L2), the
    # scratch comparison and the answer: accuracy, balanced_accuracy, macro_f1, log_loss (negated:
    # every score is higher-is-better) or auto (balanced accuracy when the training classes are
    # imbalanced and every class has 20 validation items, ``metrics.resolve_metric``; accuracy otherwise)
    metric: str = "auto"
    progress: bool = True  # progress bars
    precision: str = "auto"  # auto, bf16, fp16 or fp32
    # Optuna-style ``callback(study, frozen_trial)`` after each finished trial (complete, pruned or
    # failed), e.g. optuna_integration's MLflowCallback or WeightsAndBiasesCallback; one that raises
    # is warned about once and the search goes on
    callbacks: Sequence[Callable[[Any, Any], None]] = ()
    clock: Callable[[], float] = time.monotonic  # the search's clock (monotonic seconds); a test may drive it

    def __post_init__(self) -> None:
        """A number an option cannot mean is one line naming it, before any work."""
        check_fields(self, _RULES, _OPTIONAL)
        if self.efficiency_pruner not in EFFICIENCY_PRUNERS:
            raise AutotransferError(f"--efficiency-pruner {self.efficiency_pruner!r} is not one of "
                                    f"{', '.join(EFFICIENCY_PRUNERS)}")
        check_precision(self.precision)
        if self.refit not in REFIT_MODES:
            raise AutotransferError(f"--refit {self.refit!r} is not one of {', '.join(REFIT_MODES)}; pass auto, on "
                                    "or off")
        check_metric(self.metric)
        if self.split is not None:
            from ..data.splits import parse_split

            parse_split(self.split)

    @classmethod
    def from_options(cls, config: SearchConfig | None = None, **overrides: Any) -> SearchConfig:
        """``config`` (or the defaults) with ``overrides``; an unknown name is a one-line error."""
        base, known, unknown = split_options(cls, config, overrides)
        if unknown:
            raise AutotransferError(f"search() got unknown option(s) {', '.join(sorted(unknown))}; "
                                    f"valid options: {', '.join(f.name for f in dataclasses.fields(cls))}")
        return dataclasses.replace(base, **known)


DEFAULTS = SearchConfig()  # the defaults the CLI shows
