"""Stratified seeded splits and the shared assembly step every loader ends with."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..console import warn
from ..errors import DataError
from .dataset import SPLITS, Dataset, Task

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "dev": "val", "test": "test", "testing": "test"}


@dataclass
class Record:
    """One example as a loader found it, before encoding and splitting."""

    item: Any  # file path (images) or text
    labels: tuple[str, ...]  # raw label per task
    digest: str  # content hash (file bytes or text), for fingerprints and duplicate checks
    split: str | None = None  # "train"/"val"/"test" when the data is pre-split
    where: str = ""  # human-readable origin (relative path or row number) for messages


def parse_split(value: Any) -> tuple[float, float, float]:
    """``"0.7,0.15,0.15"`` or a 3-sequence -> normalised fractions; errors name the value."""
    try:
        parts = [float(p) for p in (value.split(",") if isinstance(value, str) else value)]
    except (TypeError, ValueError):
        parts = []
    if len(parts) != 3 or not all(math.isfinite(p) and p >= 0 for p in parts) or parts[0] <= 0:
        raise DataError(
            f"--split {value!r} is not three finite, non-negative fractions with train > 0; "
            "expected e.g. --split 0.7,0.15,0.15, or leave --split out for the default (0.7,0.15,0.15)"
        )
    total = sum(parts)
    return parts[0] / total, parts[1] / total, parts[2] / total


def stratified_split(y: np.ndarray, fractions: Sequence[float], seed: int) -> dict[str, np.ndarray]:
    """Split indices per class with a seeded shuffle: each class keeps the fractions."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    f_train, f_val, f_test = fractions
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        n = len(idx)
        n_val = int(round(n * f_val))
        n_test = int(round(n * f_test))
        if n - n_val - n_test < min(2, n):  # keep two training examples per class when possible
            while n - n_val - n_test < min(2, n) and (n_val or n_test):
                if n_test >= n_val and n_test:
                    n_test -= 1
                else:
                    n_val -= 1
        out["val"] += idx[:n_val].tolist()
        out["test"] += idx[n_val:n_val + n_test].tolist()
        out["train"] += idx[n_val + n_test:].tolist()
    return {s: np.array(sorted(v), dtype=np.int64) for s, v in out.items()}


def _encode(values: list[str]) -> tuple[list[str], np.ndarray]:
    uniq = sorted(set(values), key=lambda v: (0, float(v), v) if _is_number(v) else (1, 0.0, v))
    index = {v: i for i, v in enumerate(uniq)}
    return uniq, np.array([index[v] for v in values], dtype=np.int64)


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def assemble(
    *,
    name: str,
    path: str,
    modality: str,
    records: list[Record],
    task_names: list[str],
    options: dict,
    warnings: list[str],
    meta: dict | None = None,
) -> Dataset:
    """Encode labels, split (or keep the given splits), validate, fingerprint."""

    if not records:
        raise DataError(f"{path!r} holds no usable examples; expected one of the supported layouts with data in it")
    tasks, y = _encode_tasks(records, task_names, path)
    seed = int(options.get("seed", 0) or 0)
    fractions = parse_split(options.get("split") or (0.7, 0.15, 0.15))
    presplit = any(r.split for r in records)
    splits = (_given_splits(records, y, fractions, seed, path, warnings) if presplit
              else stratified_split(y[:, 0], fractions, seed))
    _check_classes(tasks, y, splits, path, warnings)
    split_of = np.empty(len(records), dtype=object)
    for s, idx in splits.items():
        split_of[idx] = s
    _warn_duplicates(records, split_of, warnings)
    h = hashlib.sha256()
    h.update(f"{modality}|{task_names}|".encode())
    for i, r in enumerate(records):
        h.update(f"{r.digest}|{y[i].tolist()}|{split_of[i]}\n".encode())

    for w in warnings:
        warn(w)
    return Dataset(
        name=name,
        path=path,
        modality=modality,
        items=[r.item for r in records],
        labels=y,
        tasks=tasks,
        splits=splits,
        fingerprint=h.hexdigest(),
        presplit=presplit,
        warnings=warnings,
        meta=meta or {},
    )


def _encode_tasks(records: list[Record], task_names: list[str], path: str) -> tuple[list[Task], np.ndarray]:
    """The tasks (classes in sorted order) and the (n, n_tasks) label codes; a single class is an error."""
    labels_by_task = list(zip(*[r.labels for r in records], strict=False))
    tasks, cols = [], []
    for t, tname in enumerate(task_names):
        classes, codes = _encode([str(v) for v in labels_by_task[t]])
        if len(classes) < 2:
            raise DataError(
                f"{path!r} has a single class {classes[0]!r} in {tname!r}; "
                "expected at least 2 classes — add a folder/label value per class"
            )
        tasks.append(Task(tname, classes))
        cols.append(codes)
    return tasks, np.stack(cols, axis=1)


def _given_splits(records: list[Record], y: np.ndarray, fractions: Any, seed: int, path: str,
                  warnings: list[str]) -> dict[str, np.ndarray]:
    """The data's own splits; a missing val or test split is carved from train, in the requested proportions."""
    given = {s: np.array([i for i, r in enumerate(records) if r.split == s], dtype=np.int64) for s in SPLITS}
    splits = dict(given)
    missing = [s for s in ("val", "test") if len(given[s]) == 0]
    if len(given["train"]) == 0:
        raise DataError(
            f"{path!r} is pre-split but has no train split; expected a train/ folder or train table"
        )
    if missing:
        f_train = fractions[0]
        sub = [f_train] + [fractions[1] if "val" in missing else 0.0] + [fractions[2] if "test" in missing else 0.0]
        tot = sum(sub)
        inner = stratified_split(y[given["train"], 0], [s / tot for s in sub], seed)
        splits["train"] = given["train"][inner["train"]]
        for s in missing:
            splits[s] = given["train"][inner[s]]
        warnings.append(f"no {' or '.join(missing)} split in {path!r}; carved from train (seed {seed})")
    return splits


def _check_classes(tasks: list[Task], y: np.ndarray, splits: dict[str, np.ndarray], path: str,
                   warnings: list[str]) -> None:
    """Every class needs 2 training examples (an error); a class absent from val or test is a warning."""
    for t, task in enumerate(tasks):
        counts = np.bincount(y[splits["train"], t], minlength=task.num_classes)
        for k, n in enumerate(counts):
            if n < 2:
                raise DataError(
                    f"class {task.classes[k]!r} of {task.name!r} in {path!r} has {int(n)} training example(s) "
                    "after splitting; expected at least 2 — add examples or remove the class"
                )
        for s in ("val", "test"):
            present = np.bincount(y[splits[s], t], minlength=task.num_classes)
            absent = [task.classes[k] for k in range(task.num_classes) if present[k] == 0]
            if absent and len(splits[s]):
                warnings.append(f"{s} split has no examples of class(es) {', '.join(absent[:5])} in {task.name!r}")


def _warn_duplicates(records: list[Record], split_of: np.ndarray, warnings: list[str]) -> None:
    """Exact duplicates across splits leak information into evaluation: say so."""
    where: dict[str, str] = {}
    dup_pairs = []
    for i, r in enumerate(records):
        prev = where.get(r.digest)
        if prev is not None and prev != split_of[i]:
            dup_pairs.append(r.where)
        where.setdefault(r.digest, split_of[i])
    if dup_pairs:
        warnings.append(
            f"{len(dup_pairs)} exact duplicate item(s) appear in two splits (e.g. {', '.join(dup_pairs[:3])}); "
            "they leak between train and evaluation — remove duplicates for honest scores"
        )
