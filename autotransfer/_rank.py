"""Rank sources by transferability: extract (cached) features once, score with each estimator."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .console import warn
from .csvsafe import write_csv
from .data import Dataset
from .datasets import load
from .errors import AutotransferError, NotApplicable
from .estimators import DEFAULT_ESTIMATORS, default_estimators, estimate, get_estimator
from .features import extract, resolve_device
from .precision import resolve_precision
from .probe import stratified_rows
from .rank_plan import RankDeadline, RankPlan, plan_ranking
from .runs import refuse_other_data
from .sources import SourceOptions, default_source_specs, resolve_sources

BASE_COLUMNS = ["source", "provider", "modality", "feature_dim", "n_samples"]


def subsample(dataset: Dataset, max_samples: int | None, seed: int = 0, split: str = "train") -> Dataset:
    """A dataset whose ``split`` is a stratified subsample of at most ``max_samples`` items."""
    idx = dataset.splits[split]
    if not max_samples or len(idx) <= max_samples:
        return dataset
    if max_samples < 2 * dataset.tasks[0].num_classes:
        raise AutotransferError(
            f"--max-samples {max_samples} leaves fewer than 2 examples per class "
            f"({dataset.tasks[0].num_classes} classes); use at least {2 * dataset.tasks[0].num_classes}"
        )
    keep_arr = np.sort(idx[stratified_rows(dataset.labels[idx, 0], max_samples, seed)]).astype(np.int64)
    fp = hashlib.sha256(f"{dataset.fingerprint}|{split}|{keep_arr.tobytes().hex()}".encode()).hexdigest()
    return dataclasses.replace(dataset, splits={**dataset.splits, split: keep_arr}, fingerprint=fp)


def _ranks(values: list[float | None], higher_is_better: bool) -> list[int | None]:
    scored = [(v if higher_is_better else -v, i) for i, v in enumerate(values) if v is not None and not math.isnan(v)]
    order = sorted(scored, key=lambda t: -t[0])
    out: list[int | None] = [None] * len(values)
    for r, (_, i) in enumerate(order, start=1):
        out[i] = r
    return out


def rank_sources(
    dataset: Dataset,
    sources: Sequence[Any],
    estimators: Sequence[str] = DEFAULT_ESTIMATORS,
    *,
    primary: str = "logme",
    max_samples: int | None = None,
    device: str = "auto",
    cache_dir: str | None = None,
    seed: int = 0,
    progress: bool = True,
    precision: str = "auto",
    check: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per source (best first by ``primary``) with every estimator's score and rank.

    ``precision`` (auto / bf16 / fp16 / fp32) is the extraction's; features are cached per precision.
    ``check()`` runs before every extraction batch and every estimator; a ``RankDeadline`` it raises
    leaves the source out (its row says why) or the source's remaining estimators empty.
    """
    ests = {name: get_estimator(name) for name in estimators}
    if primary not in ests:
        raise AutotransferError(f"--primary {primary!r} is not among --estimators {', '.join(estimators)}; add it")
    ds = subsample(dataset, max_samples, seed)
    tasks = dataset.tasks
    rows: list[dict[str, Any]] = []
    for src in sources:
        try:
            feats = extract(src, ds, "train", device=device, cache_dir=cache_dir, progress=progress,
                            precision=precision, check=check)
        except RankDeadline as exc:
            rows.append(left_out_row(src, f"left out: {exc}"))
            continue
        rows.append(_score_source(src, feats, list(ests), tasks, "cpu" if device == "auto" else device, check))
    for name, est in ests.items():
        for row, r in zip(rows, _ranks([row.get(name) for row in rows], est.higher_is_better), strict=False):
            row[f"rank_{name}"] = r
    for row in rows:
        row["rank"] = row[f"rank_{primary}"]
    if rows and all(str(row.get("notes") or "").startswith("left out") for row in rows):
        raise AutotransferError(f"no source was ranked: {rows[0]['notes'][len('left out: '):]}; raise --timeout or "
                                "pass fewer --sources")
    if all(row["rank"] is None for row in rows):
        raise AutotransferError(f"primary estimator {primary!r} is not applicable to any source; choose another --primary")
    rows.sort(key=lambda r: (r["rank"] is None, r["rank"] or 0))
    return rows


def left_out_row(src: Any, why: str) -> dict[str, Any]:
    """The row of a source that was not ranked: no scores, no rank, the reason in its notes."""
    return {"source": src.name, "provider": str(getattr(src, "provider", "")), "modality": src.modality,
            "feature_dim": getattr(src, "feature_dim", None), "n_samples": 0, "rank": None, "notes": why}


def _score_source(src: Any, feats: Any, estimators: list[str], tasks: list[Any], device: str,
                  check: Callable[[], None] | None = None) -> dict[str, Any]:
    """One source's row: every estimator's score on its features (mean over tasks), timings, notes."""
    row: dict[str, Any] = {
        "source": src.name, "provider": str(getattr(src, "provider", "")), "modality": src.modality,
        "feature_dim": int(feats.features.shape[1]), "n_samples": int(feats.features.shape[0]),
    }
    notes: list[str] = []
    start = time.perf_counter()
    for name in estimators:
        per_task = []
        try:
            if check is not None:
                check()
        except RankDeadline as exc:
            notes.append(f"{name}: not computed ({exc})")
            row[name] = None
            continue
        for t, task in enumerate(tasks):
            try:
                v = estimate(name, feats.features, feats.labels[:, t], source_probs=feats.source_probs,
                             device=device, source=src.name)
            except NotApplicable as exc:
                notes.append(f"{name}: not applicable ({exc})")
                per_task = []
                break
            per_task.append(v)
            if len(tasks) > 1:
                row[f"{name}[{task.name}]"] = v
        row[name] = float(np.mean(per_task)) if per_task else None
    row["extract_seconds"] = round(feats.seconds, 3)
    row["score_seconds"] = round(time.perf_counter() - start, 3)
    row["notes"] = "; ".join(dict.fromkeys(n.split(" (")[0] for n in notes))
    if any("not computed" in n for n in notes):
        row["notes"] += " (ranking's share of the time budget ended)"
    return row


def rank_columns(rows: list[dict[str, Any]], estimators: Sequence[str]) -> list[str]:
    """The CSV column order: base, scores (per task, then mean), ranks, rank, timings, notes."""
    extra = [k for k in rows[0] if "[" in k] if rows else []
    return (BASE_COLUMNS + list(extra) + list(estimators) + [f"rank_{e}" for e in estimators]
            + ["rank", "extract_seconds", "score_seconds", "notes"])


def write_transferability(rows: list[dict[str, Any]], estimators: Sequence[str], out_dir: str | Path) -> Path:
    """Write ``out_dir/leaderboards/transferability.csv`` and return its path."""
    import pandas as pd

    path = Path(out_dir) / "leaderboards" / "transferability.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(pd.DataFrame(rows, columns=rank_columns(rows, estimators)), path)
    return path


def warn_not_applicable(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        if str(row.get("notes") or "").startswith("left out"):
            warn(f"source {row['source']!r}: {row['notes']}")
        elif row.get("notes"):
            warn(f"source {row['source']!r}: {row['notes']} (cell left empty)")


def _names(value: str | Sequence[str] | None) -> list[str] | None:
    """A list from ``"a,b"`` or ``["a", "b"]``; None (the default) for nothing given."""
    if isinstance(value, str):
        value = value.split(",")
    names = [v.strip() for v in value or () if v.strip()]
    return names or None


def resolve_and_rank(
    dataset: Dataset,
    sources: str | Sequence[str] | None = None,
    estimators: str | Sequence[str] | None = None,
    *,
    offline: bool = False,
    trust_remote_code: bool = False,
    **options: Any,
) -> tuple[list[Any], list[str], list[dict[str, Any]]]:
    """Resolve the source specs (default: the modality's zoo) and the estimators (default: the
    registered ones of ``DEFAULT_ESTIMATORS``), rank, and warn for every cell left empty.

    ``options`` go to ``rank_sources``. Returns the sources, the estimator names and the rows.
    """
    srcs, est, rows, _ = plan_and_rank(dataset, sources, estimators, offline=offline,
                                       trust_remote_code=trust_remote_code, **options)
    return srcs, est, rows


def plan_and_rank(
    dataset: Dataset,
    sources: str | Sequence[str] | None = None,
    estimators: str | Sequence[str] | None = None,
    *,
    share: float | None = None,
    offline: bool = False,
    trust_remote_code: bool = False,
    **options: Any,
) -> tuple[list[Any], list[str], list[dict[str, Any]], RankPlan | None]:
    """``resolve_and_rank`` within ``share`` seconds (None: no limit): ``rank_plan.plan_ranking`` times
    each source first and sizes the work (a stratified subsample of the training split, or sources
    left out, each with its reason in its row). Returns the sources, estimators, rows and the plan."""

    opts = SourceOptions(offline=offline, trust_remote_code=trust_remote_code)
    specs = _names(sources) or default_source_specs(dataset.modality, opts)
    srcs = resolve_sources(specs, opts, modality=dataset.modality)
    est = _names(estimators) or default_estimators()
    plan = None
    ranked = srcs
    if share is not None:
        plan = plan_ranking(dataset, srcs, share, device=options.get("device", "auto"),
                            precision=options.get("precision", "auto"), cache_dir=options.get("cache_dir"),
                            check=options.get("check"))
        ranked = plan.sources
        if plan.items is not None:
            cap = options.get("max_samples")
            options["max_samples"] = plan.items if cap is None else min(cap, plan.items)
    rows = rank_sources(dataset, ranked, est, **options)
    if plan is not None:
        rows += [left_out_row(s, f"left out: {plan.left_out[s.name]}") for s in srcs if s.name in plan.left_out]
    warn_not_applicable(rows)
    return srcs, est, rows, plan


def rank_into(out_dir: str | Path | None, dataset: Dataset, data: Any, sources: Any, estimators: Any,
              **options: Any) -> tuple[list[dict[str, Any]], list[str], Path | None]:
    """``resolve_and_rank``, and with ``out_dir`` write its ``leaderboards/transferability.csv``
    (a folder holding the search of other data is refused first, before any work).

    Returns the rows, the estimator names and the CSV's path (None without ``out_dir``).
    """

    if out_dir is not None:
        refuse_other_data(Path(out_dir), dataset, data)  # a search folder of other data keeps its own ranking
    _, est, rows = resolve_and_rank(dataset, sources, estimators, **options)
    path = write_transferability(rows, est, out_dir) if out_dir is not None else None
    return rows, est, path


def rank(
    data: Any,
    sources: str | Sequence[str] | None = None,
    estimators: str | Sequence[str] | None = None,
    *,
    primary: str = "logme",
    out: str | Path | None = None,
    text_col: str | None = None,
    label_col: str | None = None,
    split: Any = None,
    seed: int = 0,
    max_samples: int | None = None,
    device: str = "auto",
    cache_dir: str | None = None,
    precision: str = "auto",
    offline: bool = False,
    trust_remote_code: bool = False,
    progress: bool = True,
) -> Any:
    """Score source models for ``data`` with transferability estimators (``autotransfer rank``).

    ``data`` is a dataset folder, a table file or a loaded ``Dataset``; ``sources`` are specs
    (registered names, ``timm:<model>[@weights]``, ``hf:<id-or-folder>``; default: the modality's
    zoo) and ``estimators`` names (default: every registered default), as lists or ``"a,b"``.
    Returns a pandas DataFrame, one row per source, best first by ``primary``, with the columns of
    ``transferability.csv``. With ``out``, that file is also written in ``out/leaderboards/``.
    """
    import pandas as pd

    precision = resolve_precision(precision, resolve_device(device))  # a bad value fails before any loading
    ds = load(data, text_col=text_col, label_col=label_col, split=split, seed=seed)
    rows, est, _ = rank_into(out, ds, data, sources, estimators, primary=primary, max_samples=max_samples,
                             device=device, cache_dir=cache_dir, seed=seed, progress=progress, precision=precision,
                             offline=offline, trust_remote_code=trust_remote_code)
    return pd.DataFrame(rows, columns=rank_columns(rows, est))
