"""``export_model``: an autotransfer model folder as a plain timm, transformers or ONNX model.

Every format is written to a scratch folder next to ``out``, loaded back with the plain library
(``timm.create_model("local-dir:...")``, ``AutoModelForSequenceClassification.from_pretrained``,
``onnxruntime.InferenceSession``), run on a few items with the preprocessing the export
records, and compared with autotransfer's own probabilities. Only an export that agrees (max
absolute probability difference <= ``TOLERANCE`` and the same predicted class wherever
autotransfer's top two classes are further apart than that) is moved to ``out``; otherwise
nothing is written and the error says by how much it differed.

A format is a module with three functions: ``misfit(model) -> str`` (why the format cannot
hold this model, "" when it can), ``write(model, folder)`` and ``predict(folder, items) ->
[probabilities per task]`` (plain library only).
"""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AutotransferError
from ._check import compare, synthetic_items

FORMATS = ("timm", "transformers", "onnx")
TOLERANCE = 1e-4  # max abs difference of any class probability between the export and autotransfer


@dataclass(frozen=True)
class ExportResult:
    path: Path  # the folder written
    format: str  # timm | transformers | onnx
    items: int  # items the round-trip check compared
    real_items: bool  # True: the items came from the caller's data; False: synthetic inputs
    max_abs_diff: float  # largest probability difference between the export and autotransfer


def _format_module(fmt: str):
    return importlib.import_module(f"{__name__}._{fmt}")


def fitting_formats(model: Any) -> list[str]:
    """The formats that can hold ``model`` (a loaded ``TransferModel``)."""
    return [f for f in FORMATS if not _format_module(f).misfit(model)]


def export_model(model_dir: str | Path, fmt: str, out: str | Path, *,
                 items: Sequence[Any] | None = None) -> ExportResult:
    """Export the model saved in ``model_dir`` (e.g. a search's ``RUN/best``) as ``fmt`` into the new folder ``out``.

    ``items`` (image paths or texts) are what the round-trip check predicts; without them it uses
    a few synthetic inputs (random images, or sentences from the tokenizer's vocabulary).
    Raises ``AutotransferError`` (one line) when the format does not fit the model or the check fails.
    """
    from ..loading import load_model
    from ..model import EnsembleModel

    if fmt not in FORMATS:
        raise AutotransferError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AutotransferError(f"--out {str(out)!r} already exists and is not an empty folder; "
                                "choose a new folder or delete it")
    model = load_model(model_dir)
    if isinstance(model, EnsembleModel):  # timm, transformers and our ONNX graph each hold one network
        raise AutotransferError(f"{str(model_dir)!r} is an ensemble of {len(model.members)} models, and --format "
                                f"{fmt} holds one; export a member instead (e.g. {str(Path(model_dir) / 'members' / '0')!r})"
                                ", or use the folder itself with autotransfer predict")
    module = _format_module(fmt)
    why = module.misfit(model)
    if why:
        raise AutotransferError(f"--format {fmt} does not fit model {str(model_dir)!r}: {why}; "
                                f"formats that fit: {', '.join(fitting_formats(model)) or 'none'}")
    check = list(items) if items else synthetic_items(model)
    _, reference = model.predict(check)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.export")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        module.write(model, tmp)
        diff = compare(reference, module.predict(tmp, check), TOLERANCE,
                       f"the {fmt} export of {str(model_dir)!r}", real=bool(items),
                       hint="" if fmt == "onnx" else "; --format onnx runs autotransfer's own graph")
        out.mkdir(parents=True, exist_ok=True)
        for item in tmp.iterdir():
            os.replace(item, out / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(out, fmt, len(check), bool(items), diff)


__all__ = ["FORMATS", "TOLERANCE", "ExportResult", "export_model", "fitting_formats"]
