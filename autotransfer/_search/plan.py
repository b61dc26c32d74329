"""``SearchPlan``: what a ``SearchConfig`` comes to for one search, resolved once.

The device and precision, the data, the run folder, the study's storage and name, and the budget's
numbers (trials, epochs, timeout: decided from the data's size where the config leaves them None).
Frozen: every part of the search reads the same plan, and ``config`` holds the options that need
no resolving (seed, cache_dir, top_k ...).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._train_config import TrainConfig
from ..data import Dataset
from ..datasets import load
from ..errors import AutotransferError
from ..features import resolve_device
from ..metrics import get_metric, resolve_metric
from ..precision import resolve_precision
from ..runs import RUNS, refuse_inside_data, run_dir
from ..sources import SourceOptions
from . import rundir
from . import storage as st
from .config import SearchConfig
from .record import StudyRecord


@dataclass(frozen=True)
class SearchPlan:
    """One search's resolved settings."""

    config: SearchConfig  # the options as given (checked in its __post_init__)
    data: Any  # the data as given (recorded in the study and the summary)
    dataset: Dataset
    out_dir: Path  # the run folder
    device: Any  # the resolved ``torch.device`` every trial trains on
    precision: str  # resolved: bf16 / fp16 / fp32; every trial trains at it, trials.csv and summary say it
    trials: int  # trials of the study in all
    epochs: int  # epochs per trial (a resumed study's own)
    timeout: float  # seconds for the whole search
    url: str  # the Optuna storage
    name: str  # the study name
    t0: float  # when the search began (the budget's clock)
    metric: str = "accuracy"  # resolved (never "auto"): what every trial's validation score is
    metric_reason: str = ""  # why: one sentence for the summary and the report

    @property
    def models_dir(self) -> Path:
        """Where the best trials' models are kept (``trials/trial_N``)."""
        return self.out_dir / "trials"

    @property
    def source_options(self) -> SourceOptions:
        """How the sources are resolved (a resized scratch baseline is resolved alike)."""
        return SourceOptions(offline=self.config.offline, trust_remote_code=self.config.trust_remote_code)

    @property
    def train_config(self) -> TrainConfig:
        """What every trial's ``TrainConfig`` starts from (a trial adds its lr, weight decay, report,
        monitor, and whether its backbone is pretrained): the validation split chooses, the test split
        is evaluated once, after the search."""
        return TrainConfig(epochs=self.epochs, seed=self.config.seed, device=str(self.device),
                           cache_dir=self.config.cache_dir, evaluate_test=False, progress=False,
                           precision=self.precision, metric=self.metric)

    def resumed(self, record: StudyRecord) -> SearchPlan:
        """The plan with what a resumed study fixed for every worker: its epochs per trial and its metric
        (a study from before the metric chose by accuracy). A metric asked for by name that is not the
        study's is one line: the trials' values could not be compared."""
        plan = self if record.epochs is None else dataclasses.replace(self, epochs=int(record.epochs))
        metric = record.selection_metric
        if metric == plan.metric:
            return plan
        if plan.config.metric != "auto":
            raise AutotransferError(
                f"study {plan.name!r} chooses by {metric} but this search asks --metric {plan.config.metric}; "
                f"pass --metric {metric} (or auto) to resume it, or a new --out / --study-name for a new search")
        return dataclasses.replace(plan, metric=metric,
                                   metric_reason=record.metric_reason or f"{get_metric(metric).title}, the study's")


def default_budget(n_train: int, top_k: int) -> tuple[int, int, float]:
    """(trials, epochs, timeout seconds) when not given: small data affords more of each."""
    epochs = 12 if n_train < 1000 else 8 if n_train < 10000 else 5
    trials = 4 + 4 * top_k if n_train < 10000 else 2 + 3 * top_k
    timeout = 3600.0 if n_train < 10000 else 4 * 3600.0
    return trials, epochs, timeout


def resolve_plan(data: Any, cfg: SearchConfig) -> SearchPlan:
    """Resolve the device and precision, load the data, check the run folder, and fill in the budget's
    defaults from the data's size (in this order: a refused search reads and writes nothing it need not)."""
    t0 = cfg.clock()
    device = resolve_device(cfg.device)  # the search's one resolution of its device
    precision = resolve_precision(cfg.precision, device)
    refuse_inside_data(Path(cfg.out or RUNS), data, default=not cfg.out)  # before reading it
    ds = load(data, text_col=cfg.text_col, label_col=cfg.label_col, split=cfg.split, seed=cfg.seed)
    out_dir = run_dir(cfg.out, ds.name)
    rundir.prepare(out_dir, ds, data, cfg.storage, cfg.study_name)  # before ranking: other data, unwritable, unreachable
    d_trials, d_epochs, d_timeout = default_budget(len(ds.splits["train"]), cfg.top_k)
    metric, why = resolve_metric(cfg.metric, ds.split_labels("train"), [t.num_classes for t in ds.tasks],
                                 ds.split_labels("val"))
    return SearchPlan(cfg, data, ds, out_dir, device, precision, cfg.trials or d_trials, cfg.epochs or d_epochs,
                      cfg.timeout or d_timeout, cfg.storage or st.default_storage(out_dir),
                      cfg.study_name or f"autotransfer-{ds.name}", t0, metric, why)
