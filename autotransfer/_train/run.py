"""``train``: build the model, run the strategy's stages, test once, and return a ``TrainResult``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .. import decode_cache
from .. import sources as sources_mod  # looked up at call time: a plugin or a test may replace resolve_source
from .._train_config import TrainConfig
from ..datasets import load
from ..decode_cache import decoded
from ..errors import AutotransferError, DataError
from ..features import resolve_device
from ..memory import keep_freed_memory
from ..metrics import resolve_metric, task_values
from ..model import TransferModel
from ..monitor import StopTraining
from ..precision import resolve_precision
from ..probe import L2_PATH
from ..sources import Source, SourceOptions
from ..strategies import SourceInfo, get_strategy
from .cached_features import _Features
from .fit import _FitOut, fit
from .loop import _Loop, _predictions, _Split, auto_batch_size
from .result import TrainResult
from .seeding import seed_everything
from .solve import _solve_stage
from .standardize import fold_standardizer, standardizer

if TYPE_CHECKING:
    from ..data import Dataset
    from ..sources import Source
    from ..strategies import Strategy

MIN_AUGMENT_SIDE = 64  # images smaller than this (e.g. 8x8 digits) train without augmentation


def auto_augment(dataset: Dataset, augment: bool | None) -> bool:
    """The augmentation rule: images whose smaller side is >= 64 px get the source's train transforms.

    Random crops of tiny images (8x8 digits, 32x32 icons) destroy what little there is, so
    they train on the eval transform; text is never augmented. ``augment`` True/False overrides.
    """
    if augment is not None:
        return bool(augment)
    if dataset.modality != "image":
        return False
    try:
        from PIL import Image

        with Image.open(dataset.items[int(dataset.splits["train"][0])]) as im:
            return min(im.size) >= MIN_AUGMENT_SIDE
    except Exception:
        return False


def _resolve_source(source: Any, source_options: Any) -> Source:
    if isinstance(source, Source):
        return source
    if not isinstance(source, str):
        raise AutotransferError(f"source must be a spec string or a Source, got {type(source).__name__}")
    return sources_mod.resolve_source(source, source_options or SourceOptions())


def _split(dataset: Dataset, name: str) -> _Split:
    idx = dataset.splits.get(name)
    if idx is None or len(idx) == 0:
        raise DataError(
            f"dataset {dataset.name!r} has an empty {name!r} split; training needs train and val examples "
            "— add data or change --split"
        )
    return _Split(torch.as_tensor(dataset.labels[idx], dtype=torch.long), items=[dataset.items[i] for i in idx])


def train(dataset: Any, source: Any, strategy: str | Strategy, config: TrainConfig | None = None,
          **options: Any) -> TrainResult:
    """Fine-tune ``source`` on ``dataset`` with ``strategy``; the one training loop.

    Args:
        dataset: a path (loaded with ``autotransfer.data.load``) or a loaded ``Dataset``.
        source: a spec string (``timm:test_resnet@/w.safetensors``), a registered name, or a ``Source``.
        strategy: a registered strategy name (``autotransfer strategies``) or a ``Strategy``.
        config: a ``TrainConfig`` (lr, epochs, seed, device, report, monitor ...: every option and
            its default); keyword arguments that name its fields override them.
        **options: ``TrainConfig`` fields, and the strategy's own parameters (``depth`` for
            ``partial``, ``lr_decay``, ``lora_rank`` ...; a strategy rejects one it does not take).

    Returns:
        A ``TrainResult``; ``val_score`` is the kept epoch's (``kept_epoch``), whose weights the model keeps.
    """

    start = time.perf_counter()
    cfg, strategy_params = TrainConfig.split_options(config, options)  # checked in its __post_init__
    ds = load(dataset)
    src = _resolve_source(source, cfg.source_options)
    strat = get_strategy(strategy)
    if getattr(src, "modality", ds.modality) != ds.modality:
        raise AutotransferError(
            f"source {src.name!r} takes {src.modality} input but dataset {ds.name!r} is {ds.modality}; "
            f"pick a{'n' if ds.modality == 'image' else ''} {ds.modality} source"
        )
    dev = resolve_device(cfg.device)
    keep_freed_memory(dev)
    prec = resolve_precision(cfg.precision, dev)
    metric = resolve_metric(cfg.metric, ds.split_labels("train"), [t.num_classes for t in ds.tasks],
                           ds.split_labels("val"))[0]
    model, params = _build(ds, src, strat, cfg.pretrained, cfg.seed, dev, strategy_params)
    run = _Run(model, src, ds, dev, prec, cfg, auto_augment(ds, cfg.augment), metric)
    stages = strat.stages(params)
    out = _run_stages(run, stages)
    test = _test(run, out, stages) if cfg.evaluate_test else (None, {})
    return _result(run, out, strat, params, cfg, test, time.perf_counter() - start)


def _result(run: _Run, out: _StagesOut, strat: Strategy, params: dict[str, Any], cfg: TrainConfig,
            test: tuple[float | None, dict[str, float]], seconds: float) -> TrainResult:
    trainable, total = run.model.param_counts()
    names = [t.name for t in run.ds.tasks]
    src = run.src
    return TrainResult(
        val_curve=out.val_curve,
        val_score=out.val_curve[out.best_epoch],
        metric=run.metric,
        val_band=out.band,
        val_probs=out.val_probs or [],
        test_score=test[0],
        task_scores=dict(zip(names, out.task_curve[out.best_epoch], strict=False)),
        test_task_scores=test[1],
        seconds=seconds,
        trainable_params=trainable,
        total_params=total,
        epochs_run=len(out.val_curve),
        best_epoch=out.best_epoch,
        model=run.model,
        strategy=strat.name,
        source=getattr(src, "spec", "") or src.name,
        params={"lr": cfg.lr if cfg.lr is not None else strat.default_lr, "epochs": int(cfg.epochs),
                "weight_decay": cfg.weight_decay, "seed": cfg.seed, "batch_size": cfg.batch_size,
                "pretrained": cfg.pretrained, "augment": run.augment, "precision": run.prec, **params,
                **{f"{k}_l2": v for k, v in out.solved.items()}},
        batch_size=out.batch_size,
        oom_retries=out.retries,
        stopped_early=out.stopped,
        epoch_seconds=out.epoch_seconds,
        feature_seconds=run.features.seconds,
        features_from_cache=run.features.from_cache,
        task_curves={n: [row[i] for row in out.task_curve] for i, n in enumerate(names)},
        stage_curves=out.stage_curves,
        train_items=len(run.splits["train"]),
    )


def _build(ds: Dataset, src: Source, strat: Strategy, pretrained: bool, seed: int, dev: torch.device,
           strategy_params: dict[str, Any]) -> tuple[TransferModel, dict[str, Any]]:
    """The model (backbone, one head per task, the strategy's structural change) and the strategy's
    resolved parameters. The heads' init depends on the seed only, not on how the backbone was built."""

    seed_everything(seed)
    backbone = src.build(pretrained=pretrained)
    info = SourceInfo.from_backbone(src, backbone)
    params = strat.resolve_params(info, strategy_params)
    torch.manual_seed(seed)
    model = TransferModel(backbone, src.feature_dim, ds.tasks, source=src, config={
        "strategy": strat.name, "strategy_params": params, "pretrained": pretrained,
    })
    torch.manual_seed(seed + 1)
    strat.prepare_model(model, params)
    model.to(dev)
    return model, params


class _Run:
    """One ``train`` call's model, data and settings, shared by its stages."""

    def __init__(self, model: TransferModel, src: Source, ds: Dataset, dev: torch.device, prec: str,
                 cfg: TrainConfig, augment: bool, metric: str = "accuracy"):
        self.model, self.src, self.ds, self.dev, self.prec, self.augment = model, src, ds, dev, prec, augment
        self.metric = metric  # resolved: what every epoch's validation score is
        self.epochs, self.lr, self.weight_decay, self.seed = int(cfg.epochs), cfg.lr, cfg.weight_decay, cfg.seed
        self.batch_size, self.cache_dir, self.pretrained = cfg.batch_size, cfg.cache_dir, cfg.pretrained
        self.verbose, self.progress, self.monitor, self.report = cfg.verbose, cfg.progress, cfg.monitor, cfg.report
        self.keep, self.stop_after, self.l2 = cfg.keep, cfg.stop_after, dict(cfg.l2 or {})
        n = cfg.num_workers
        self.workers = (0 if dev.type == "cpu" else decode_cache.default_workers()) if n is None else int(n)
        self.splits = {"train": _split(ds, "train"), "val": _split(ds, "val")}
        if cfg.evaluate_test:
            self.splits["test"] = _split(ds, "test")
        self.features = _Features(model, src, ds, dev, cfg.cache_dir, cfg.pretrained, cfg.batch_size,
                                  cfg.progress, prec, cfg.monitor.check if cfg.monitor is not None else None)

    def decode_images(self) -> None:
        """Decode every split's images once (the decoded-image cache), for stages that read items."""

        spec = self.src.decode_spec() if self.ds.modality == "image" else None
        for name, data in self.splits.items():
            data.images = decoded(self.ds, name, spec, cache_dir=self.cache_dir, progress=self.progress)

    def data(self, split: str, cached: bool) -> _Split:
        return self.features.get(split, self.splits[split]) if cached else self.splits[split]


@dataclass
class _StagesOut:
    """The reported stage's curves, and what every stage left behind."""

    val_curve: list[float] = field(default_factory=list)
    task_curve: list[list[float]] = field(default_factory=list)
    best_epoch: int = 0
    stopped: bool = False
    band: Any = None  # the kept epoch's ``metrics.Scored``
    val_probs: list[np.ndarray] | None = None  # the kept epoch's per-task validation probabilities
    epoch_seconds: list[float] = field(default_factory=list)
    stage_curves: dict[str, list[float]] = field(default_factory=dict)  # unreported stages' val curves
    solved: dict[str, float] = field(default_factory=dict)  # solver stage -> the L2 strength chosen on val
    retries: int = 0  # OOM halvings over all stages
    batch_size: int = 0  # the last stage's batch size at its end
    loop: _Loop | None = None  # the last stage's loop (the test evaluation reuses it)


def _run_stages(run: _Run, stages: Sequence[Any]) -> _StagesOut:
    """Run the strategy's stages in order; the reported one makes the val curve."""
    if not run.pretrained or not all(s.cached_features for s in stages):  # items will be read: decode them once
        run.decode_images()
    res = _StagesOut()
    for stage in stages:
        out, loop = _run_stage(run, stage, res)
        res.retries += loop.retries
        res.batch_size, res.loop = loop.batch_size, loop
        if stage.reported:
            res.val_curve, res.task_curve, res.best_epoch, res.stopped = (out.curve, out.task_curve, out.best_epoch,
                                                                          out.stopped)
            res.band, res.val_probs = out.band, out.val_probs
            res.epoch_seconds = out.epoch_seconds
        else:
            res.stage_curves[stage.name] = out.curve
    if not res.val_curve:
        raise StopTraining("stopped before its first epoch ended")
    return res


def _run_stage(run: _Run, stage: Any, res: _StagesOut) -> tuple[_FitOut, _Loop]:
    """One stage: fit (or solve) the parameters it trains on items or on standardised cached features."""
    model, cached = run.model, stage.cached_features
    train_data, val_data = run.data("train", cached), run.data("val", cached)
    if cached:  # train the heads on standardised features; folded back into the heads below
        mean, std = standardizer(train_data.features, isotropic=stage.solver)
        train_data, val_data = (_Split(d.labels, features=(d.features - mean) / std) for d in (train_data, val_data))
    bs = int(run.batch_size) if run.batch_size else auto_batch_size(len(train_data), cached)
    loop = _Loop(model, run.src, run.dev, min(bs, len(train_data)), run.workers, run.augment, run.seed, stage.name,
                 run.prec)
    stage_lr = stage.lr if stage.lr is not None else (run.lr if run.lr is not None else stage.strategy.default_lr)
    groups = stage.strategy.param_groups(model, lr=stage_lr, weight_decay=run.weight_decay, **stage.params)
    stage_report = run.report if stage.reported else None
    if stage.solver and cached:
        path = [run.l2[stage.name]] if stage.name in run.l2 else L2_PATH
        out, res.solved[stage.name] = _solve_stage(model, train_data, val_data, run.epochs, stage_report,
                                                    run.monitor, path, run.metric)
    else:
        out = fit(model, loop, groups, train_data, val_data, epochs=int(stage.epochs or run.epochs), cached=cached,
                  weight_decay=run.weight_decay, report=stage_report, verbose=run.verbose, monitor=run.monitor,
                  keep=run.keep, stop_after=run.stop_after if stage.reported else None, metric=run.metric)
    if cached:
        fold_standardizer(model.heads, mean, std)
    return out, loop


def _test(run: _Run, out: _StagesOut, stages: Sequence[Any]) -> tuple[float, dict[str, float]]:
    """Mean and per-task test score (the run's metric) of the trained model, on the last stage's inputs."""
    assert out.loop is not None
    last_cached = stages[-1].cached_features
    test = run.data("test", last_cached)
    accs = task_values(run.metric, test.labels.numpy(), *_predictions(out.loop, test, last_cached))
    return float(np.mean(accs)), {t.name: a for t, a in zip(run.ds.tasks, accs, strict=False)}
