"""``TrainResult``: what one ``train`` call produced."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..model import TransferModel
from ..sources import display_source

if TYPE_CHECKING:
    pass

@dataclass
class TrainResult:
    """What one ``train`` call produced. Scores are ``metric``'s (accuracy by default), the mean over
    tasks, higher is better (a loss is negated)."""

    val_curve: list[float]  # mean val score after each reported epoch (0-based epochs)
    val_score: float  # val_curve at best_epoch; ``model`` holds that epoch's weights
    test_score: float | None  # mean test score of the returned model (None: evaluate_test=False)
    task_scores: dict[str, float]  # val score per task at the kept epoch
    test_task_scores: dict[str, float]  # test score per task ({} without a test evaluation)
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
    task_curves: dict[str, list[float]] = field(default_factory=dict)  # val score per task per epoch
    stage_curves: dict[str, list[float]] = field(default_factory=dict)  # val curves of unreported stages
    train_items: int | None = None  # items of the training split it trained on (a refit's: train + val)
    metric: str = "accuracy"  # the metric every score here is (resolved: never "auto")
    val_band: Any = None  # val_score's ``metrics.Scored``: its 95% interval and the kept-epoch rule's standard error
    val_probs: list[np.ndarray] = field(default_factory=list)  # per task (n_val, C) probabilities at the kept epoch

    def predict(self, items: Sequence[Any], batch_size: int = 64) -> tuple[np.ndarray, list[np.ndarray]]:
        """Predicted class indices (n, n_tasks) and per-task probabilities; see ``TransferModel.predict``."""
        return self.model.predict(items, batch_size)

    def summary(self) -> dict[str, Any]:
        """Plain data for leaderboards (no model); a local source by its file name, not this machine's path."""

        return {
            "source": display_source(self.source), "strategy": self.strategy, "metric": self.metric,
            "val_score": self.val_score,
            "test_score": self.test_score, "task_scores": self.task_scores,
            "test_task_scores": self.test_task_scores, "val_curve": self.val_curve,
            "best_epoch": self.best_epoch, "epochs_run": self.epochs_run, "seconds": self.seconds,
            "trainable_params": self.trainable_params, "total_params": self.total_params,
            "batch_size": self.batch_size, "oom_retries": self.oom_retries,
            "stopped_early": self.stopped_early, "params": self.params, "train_items": self.train_items,
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
