"""A tiny exported image model, trained the way a search's answer is, for the predict/evaluate tests."""

from __future__ import annotations

from pathlib import Path

from helpers_training import timm_spec, write_digits

import autotransfer
from autotransfer.datasets import load


def tiny_image_model(work: Path, per_class: int, epochs: int) -> tuple[Path, Path]:
    """(exported model folder, its image-folder data): test_resnet linear probe on digits 0-2 at 16 px."""
    data = write_digits(work / "digits", classes=range(3), per_class=per_class, size=16)
    r = autotransfer.train(load(data), timm_spec(work, "test_resnet", size=16), "linear_probe", epochs=epochs,
                           device="cpu")
    return r.save(work / "best"), data
