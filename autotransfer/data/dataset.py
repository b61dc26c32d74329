"""The in-memory dataset: items, labels per task, splits, fingerprint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")

# What `load_dataset` understands out of the box; named in the "not a dataset" error.
LAYOUTS = (
    "image folder DATA/<class>/*.png|jpg|jpeg|bmp|gif|webp|tif|tiff",
    "pre-split image folder DATA/{train,val,test}/<class>/...",
    "text folder DATA/<class>/*.txt (and pre-split DATA/{train,val,test}/<class>/*.txt)",
    "table file *.csv|*.tsv|*.jsonl|*.parquet, or a folder with train/val/test tables",
)


@dataclass
class Task:
    """One labelling of the items (a multi-task dataset has several)."""

    name: str  # label column or "label" for folder layouts
    classes: list[str]  # class names; label k means classes[k]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass
class Dataset:
    """A validated, split, fingerprinted dataset."""

    name: str  # short name (folder or file stem), used for default output dirs
    path: str  # what --data pointed at
    modality: str  # "image" or "text"
    items: list[Any]  # image file paths (str) or texts (str), one per example
    labels: np.ndarray  # (n_items, n_tasks) int64 class indices
    tasks: list[Task]  # one per label column
    splits: dict[str, np.ndarray]  # "train"/"val"/"test" -> sorted indices into items
    fingerprint: str  # sha256 over contents, labels and split assignment
    presplit: bool = False  # splits came from the data's own folders/files
    warnings: list[str] = field(default_factory=list)  # recoverable problems found while loading
    meta: dict[str, Any] = field(default_factory=dict)  # loader extras (columns used, ...)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def multitask(self) -> bool:
        return len(self.tasks) > 1

    def split_items(self, split: str) -> list[Any]:
        return [self.items[i] for i in self.splits[split]]

    def split_labels(self, split: str, task: int | None = None) -> np.ndarray:
        """Labels of ``split``: (n, n_tasks), or (n,) for one ``task`` index."""
        y = self.labels[self.splits[split]]
        return y if task is None else y[:, task]

    def class_counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """``{split: {task: {class: count}}}``."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for split, idx in self.splits.items():
            out[split] = {}
            for t, task in enumerate(self.tasks):
                counts = np.bincount(self.labels[idx, t], minlength=task.num_classes)
                out[split][task.name] = {c: int(n) for c, n in zip(task.classes, counts, strict=False)}
        return out

    def summary(self) -> dict[str, Any]:
        """Plain-data description (``autotransfer inspect --json``)."""
        return {
            "name": self.name,
            "path": self.path,
            "modality": self.modality,
            "n_items": len(self.items),
            "presplit": self.presplit,
            "splits": {s: int(len(i)) for s, i in self.splits.items()},
            "tasks": [{"name": t.name, "classes": t.classes} for t in self.tasks],
            "counts": self.class_counts(),
            "fingerprint": self.fingerprint,
            "warnings": list(self.warnings),
            **({"meta": self.meta} if self.meta else {}),
        }

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(i)}" for s, i in self.splits.items())
        return f"Dataset({self.name!r}, {self.modality}, tasks={self.task_names}, {sizes})"
