"""Scores of an exported model on labelled data: accuracy, balanced accuracy, macro-F1, per class.

Every item of the data counts (its own train/val/test split is ignored): pass a held-out
folder or table. Class names are matched by name, so the data may hold a subset of the
model's classes; a class the model never saw is an error, because its items could only be
wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .checks import COUNT, check_number
from .errors import DataError
from .metrics import METRICS, confusion_matrix, per_class, score_with_interval


@dataclass
class TaskScores:
    """Scores of one task (one head of the model)."""

    name: str  # task (label column) name
    classes: list[str]  # the model's classes, the order of ``confusion``'s rows and columns
    n: int  # items scored (unreadable ones excluded)
    accuracy: float
    balanced_accuracy: float  # mean recall over the classes present in the data
    macro_f1: float  # mean F1 over the classes present in the data or predicted
    per_class: dict[str, dict[str, float]]  # class -> precision, recall, f1, support
    confusion: list[list[int]]  # [true class][predicted class] counts, over ``classes``
    # metric -> (low, high) 95% interval: Wilson's for accuracy, the stratified bootstrap's for the others
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "n": self.n, "accuracy": self.accuracy,
                "balanced_accuracy": self.balanced_accuracy, "macro_f1": self.macro_f1,
                "intervals": {k: list(v) for k, v in self.intervals.items()},
                "per_class": self.per_class, "classes": self.classes, "confusion": self.confusion}

    @classmethod
    def from_confusion(cls, name: str, classes: Sequence[str], conf: Any,
                       intervals: dict[str, tuple[float, float]] | None = None) -> TaskScores:
        """The scores a ``[true][predicted]`` count matrix over ``classes`` holds."""
        conf = np.asarray(conf, np.int64)
        stats = per_class(conf)
        return cls(
            name=name, classes=list(classes), n=int(conf.sum()),
            accuracy=float(METRICS["accuracy"].from_confusion(conf)),
            balanced_accuracy=float(METRICS["balanced_accuracy"].from_confusion(conf)),
            macro_f1=float(METRICS["macro_f1"].from_confusion(conf)),
            per_class={c: {"precision": float(stats["precision"][k]), "recall": float(stats["recall"][k]),
                           "f1": float(stats["f1"][k]), "support": int(stats["support"][k])}
                       for k, c in enumerate(classes)},
            confusion=conf.tolist(), intervals=dict(intervals or {}))


def confusion_rows(tasks: Sequence[TaskScores]) -> list[dict[str, Any]]:
    """One row per (task, true class); a ``pred[<class>]`` column per predicted class."""
    return [{"task": t.name, "true": true, **{f"pred[{c}]": t.confusion[i][j] for j, c in enumerate(t.classes)}}
            for t in tasks for i, true in enumerate(t.classes)]


def per_class_rows(tasks: Sequence[TaskScores]) -> list[dict[str, Any]]:
    """One row per (task, class): precision, recall, F1 and support."""
    return [{"task": t.name, "class": c, **v} for t in tasks for c, v in t.per_class.items()]


@dataclass
class Evaluation:
    """What ``evaluate`` returns."""

    model: str  # the model folder
    data: str  # the data path
    n_items: int  # items in the data
    unreadable: dict[str, str]  # item -> why it could not be read (not scored)
    tasks: list[TaskScores] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "data": self.data, "n_items": self.n_items,
                "unreadable": self.unreadable, "tasks": [t.as_dict() for t in self.tasks]}

    def confusion_frame(self):
        """One row per (task, true class); a ``pred[<class>]`` column per predicted class."""
        import pandas as pd

        return pd.DataFrame(confusion_rows(self.tasks))

    def per_class_frame(self):
        """One row per (task, class): precision, recall, F1 and support."""
        import pandas as pd

        return pd.DataFrame(per_class_rows(self.tasks))


def evaluate(model_dir: str | Path, data: Any, *, text_col: str | None = None, label_col: str | None = None,
             device: str = "cpu", batch_size: int = 64) -> Evaluation:
    """Score the model saved in ``model_dir`` on the labelled data at ``data`` (any supported layout)."""

    from .datasets import load
    from .loading import load_model

    check_number("batch_size", batch_size, COUNT, 64)
    model = load_model(model_dir, device=device)
    labels = label_col or ",".join(t.name for t in model.tasks)
    ds = load(data, text_col=text_col, label_col=labels, split="1,0,0")
    if ds.modality != model.modality:
        raise DataError(f"--data {str(data)!r} holds {ds.modality} items but the model in {str(model_dir)!r} "
                        f"takes {model.modality}; pass {model.modality} data")
    by_name = {t.name: t for t in ds.tasks}
    if len(model.tasks) == 1 and len(ds.tasks) == 1:
        by_name = {model.tasks[0].name: ds.tasks[0]}  # folder layouts name their one task "label"
    missing = [t.name for t in model.tasks if t.name not in by_name]
    if missing:
        raise DataError(f"--data {str(data)!r} has no labels for task(s) {', '.join(missing)} of the model "
                        f"(data has {', '.join(by_name)}); pass --label-col with the model's task names")
    for t in model.tasks:
        unknown = sorted(set(by_name[t.name].classes) - set(t.classes))
        if unknown:
            raise DataError(
                f"--data {str(data)!r} has class(es) {', '.join(unknown)} in {t.name!r} that the model does not "
                f"know; the data's classes: {', '.join(by_name[t.name].classes)}; the model's: "
                f"{', '.join(t.classes)} — remove those folders or rename them to the model's class names"
            )
    pred, _, errors = model.predict_rows(ds.items, batch_size=batch_size)
    ok = np.array([e is None for e in errors], dtype=bool)
    names = [str(it) for it in ds.items]
    result = Evaluation(str(model_dir), str(data), len(ds.items),
                        {names[i]: e for i, e in enumerate(errors) if e is not None})
    for m, t in enumerate(model.tasks):
        d = next(k for k, dt in enumerate(ds.tasks) if dt is by_name[t.name])
        to_model = np.array([t.classes.index(c) for c in ds.tasks[d].classes], dtype=np.int64)
        y_true = to_model[ds.labels[ok, d]]
        result.tasks.append(_scores(t.name, t.classes, y_true, pred[ok, m]))
    return result


def _scores(name: str, classes: list[str], y_true: np.ndarray, y_pred: np.ndarray) -> TaskScores:
    return TaskScores.from_confusion(
        name, classes, confusion_matrix(y_true, y_pred, len(classes)),
        intervals={k: score_with_interval(k, y_true, y_pred)[1:] for k in ("accuracy", "balanced_accuracy", "macro_f1")})
