"""The data layer: layouts, validation, splits, fingerprints.

It knows no plugin manager: ``autotransfer.datasets.load`` finds a dataset's layout through the
plugins' ``load_dataset`` hook, and the dataset-format plugins build a ``Dataset`` from these modules.
"""

from __future__ import annotations

from .dataset import LAYOUTS, SPLITS, Dataset, Task

__all__ = ["Dataset", "LAYOUTS", "SPLITS", "Task"]
