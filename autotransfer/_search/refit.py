"""Refit: the chosen trial's configuration retrained on train + val once the search has chosen it.

The refit replays the trial with the validation items added to its training split: the same source
(a scratch baseline's architecture at the size it trained at), strategy, parameters, seed, batch size
and learning-rate schedule, stopped after the trial's kept epoch. Nothing is chosen on validation
(the validation items are training items now): the last epoch is kept, and a solver stage (the probe)
re-solves at the L2 strength its trial chose. The test split is never trained on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from .. import sources as sources_mod
from .._train import train
from ..data import Dataset
from ..errors import AutotransferError
from ..strategies import get_strategy
from .record import TrialRecord
from .scratch_size import resized_spec

# ``auto`` refits when the smallest class has fewer training items than this: there every validation
# label is a large share of what the class has. Measured (benchmarks/bench_final.py, 7 suite tasks x 3
# search seeds): refit raised mean test accuracy on every task whose smallest class has 3 to 20 items
# (+0.0 to +5.9 pp a task) and not on digits50, at 50 a class (-0.07 pp). The rule and its evidence are in
# docs/concepts.md and docs/benchmarks.md. None: ``auto`` never refits.
AUTO_REFIT_BELOW: int | None = 50


def resolve_refit(mode: str, dataset: Dataset, below: int | None = None) -> tuple[bool, str]:
    """Whether to refit, and why (the summary's ``refit`` column)."""
    if mode != "auto":
        return mode == "on", mode
    below = AUTO_REFIT_BELOW if below is None else below
    if below is None:
        return False, "off (auto)"
    counts = dataset.class_counts().get("train", {})
    fewest = min((n for task in counts.values() for n in task.values()), default=0)
    if fewest < below:
        return True, f"on (auto: the smallest class has {fewest} training items, fewer than {below})"
    return False, f"off (auto: every class has at least {below} training items)"


def train_and_val(dataset: Dataset) -> Dataset:
    """``dataset`` whose training split is its train and val items together (val and test unchanged:
    the refit's validation curve is not used to choose anything, and test is tested once, afterwards)."""
    both = np.sort(np.concatenate([dataset.splits["train"], dataset.splits["val"]])).astype(np.int64)
    fp = hashlib.sha256(f"{dataset.fingerprint}|refit|{both.tobytes().hex()}".encode()).hexdigest()
    return dataclasses.replace(dataset, splits={**dataset.splits, "train": both}, fingerprint=fp)


def _trial_result(model_dir: Path) -> dict[str, Any]:
    """The trial's ``result.json`` (its batch size, kept epoch and solved L2 strengths)."""
    try:
        return json.loads((model_dir / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise AutotransferError(f"cannot refit: {str(model_dir / 'result.json')!r} is missing or damaged; "
                                "pass --refit off, or rerun the search in a new --out") from None


def predicted_seconds(dataset: Dataset, model_dirs: list[Path],
                      extraction: dict[Path, float] | None = None) -> float:
    """Seconds refitting the trials saved in ``model_dirs`` should take: each trial's own seconds, for the
    epochs up to its kept one, times how many more items train + val holds than the trial trained on (a
    probe solved on ranking's subsample trained on fewer than the training split).

    ``extraction``: seconds per item of extracting the features of the trials (by model folder) whose
    strategy trains on cached features (a probe, LP-FT's first stage): their trials read the features
    ranking had extracted, the refit extracts train + val anew (a new split, not in the cache).
    """
    n_train = len(dataset.splits["train"])
    both = n_train + len(dataset.splits.get("val", []))
    total = 0.0
    for model_dir in model_dirs:
        done = _trial_result(model_dir)
        epochs = max(1, int(done.get("epochs_run") or 1))
        kept = int(done.get("best_epoch") or 0) + 1
        scale = both / max(1, int(done.get("train_items") or n_train))
        total += float(done.get("seconds") or 0.0) * min(1.0, kept / epochs) * scale
        total += (extraction or {}).get(model_dir, 0.0) * both
    return total


def reads_cached_features(model_dir: Path) -> bool:
    """Whether the trial saved in ``model_dir`` trained a stage on cached features (its refit extracts them)."""
    done = _trial_result(model_dir)
    try:
        strategy = get_strategy(done.get("strategy") or "")
        return any(stage.cached_features for stage in strategy.stages(dict(done.get("params") or {})))
    except AutotransferError:  # a strategy no longer registered: nothing to add to the prediction
        return False


def on_subsample(ctx: Any, trial: Any) -> bool:
    """Whether ``trial`` trained on fewer items than the training split (a probe solved on ranking's subsample)."""
    items = TrialRecord.from_frozen(trial).train_items
    return items is not None and int(items) < len(ctx.plan.dataset.splits["train"])


def refit_source(ctx: Any, record: TrialRecord) -> Any:
    """The trial's source object; a scratch baseline at the input size it trained at."""
    config = record.config or {}
    name = config.get("source") or record.baseline_source
    source = ctx.screen.sources[name]
    if record.is_scratch and record.input_size:
        return sources_mod.resolve_source(resized_spec(source.spec, record.input_size), ctx.plan.source_options)
    return source


def _replay(ctx: Any, record: TrialRecord, done: dict[str, Any], data: Dataset, **overrides: Any) -> Any:
    """Train the trial's configuration (source, strategy and parameters, lr, weight decay, batch size) on
    ``data``, the search's training config changed by ``overrides``; returns the ``TrainResult``."""
    config = record.config or {}
    base = ctx.plan.train_config
    cfg = dataclasses.replace(base, lr=config.get("lr"), weight_decay=config.get("weight_decay", base.weight_decay),
                              batch_size=done.get("batch_size") or None, **overrides)
    return train(data, refit_source(ctx, record), config.get("strategy") or done["strategy"], cfg,
                 **dict(config.get("params") or {}))


def complete(ctx: Any, trial: Any, model_dir: Path) -> Any:
    """Re-solve ``trial``, a probe solved on ranking's training subsample (its model in ``model_dir``), on
    every training item, choosing its L2 strength on validation as the trial did; returns the ``TrainResult``."""
    record = TrialRecord.from_frozen(trial)
    result = _replay(ctx, record, _trial_result(model_dir), ctx.plan.dataset)
    result.model.config = {**result.model.config, "completed": {
        "trial": trial.number, "train_items": int(result.train_items or 0),
        "subsample_items": int(record.train_items or 0)}}
    return result


def refit(ctx: Any, trial: Any, model_dir: Path) -> Any:
    """Retrain ``trial`` (a finished trial whose model is saved in ``model_dir``) on train + val;
    returns the ``TrainResult``, its model's config recording what it trained on."""
    record = TrialRecord.from_frozen(trial)
    done = _trial_result(model_dir)
    params = dict(done.get("params") or {})
    l2 = {k[:-len("_l2")]: float(v) for k, v in params.items() if k.endswith("_l2") and v is not None}
    kept = int(done.get("best_epoch", record.best_epoch or 0)) + 1
    schedule = int(record.planned_epochs or ctx.plan.epochs)
    result = _replay(ctx, record, done, train_and_val(ctx.plan.dataset), epochs=max(schedule, kept),
                     stop_after=kept, keep="last", l2=l2 or None, pretrained=not record.is_scratch)
    result.model.config = {**result.model.config, "refit": {
        "trial": trial.number, "train_items": int(result.train_items or 0), "epochs": len(result.val_curve),
        "schedule_epochs": max(schedule, kept), "l2": l2}}
    return result
