"""``load_model``: a saved model folder back into a ``TransferModel``, ready to predict.

Apart from ``model.py`` so that the model knows no strategy: loading re-applies the saved
strategy's structural change, so it needs the strategies; the strategies need the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from . import sources as sources_mod  # looked up at call time: a plugin or a test may replace resolve_source
from .data import Task
from .errors import AutotransferError
from .features import resolve_device
from .model import CONFIG, FORMAT, WEIGHTS, TransferModel
from .sources import SourceOptions, source_from_export
from .strategies import get_strategy

if TYPE_CHECKING:
    from .sources import Source


def load_model(path: str | Path, *, source: Source | None = None, device: str = "cpu") -> TransferModel:
    """Load a model saved by ``TrainResult.save``/``TransferModel.save``; ready for ``.predict(items)``.

    ``source`` overrides the saved source spec (e.g. a Source object that has no spec).
    """
    from safetensors.torch import load_model as _load

    folder = Path(path)
    cfg_path = folder / CONFIG
    if not cfg_path.is_file() or not (folder / WEIGHTS).is_file():
        raise AutotransferError(
            f"{str(path)!r} is not a saved autotransfer model; expected a folder with {CONFIG} and {WEIGHTS} "
            "(written by TrainResult.save)"
        )
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("format") != FORMAT:
        raise AutotransferError(f"{str(cfg_path)!r} is not an autotransfer model config (format={cfg.get('format')!r})")
    if source is None and cfg.get("source_export"):
        # self-contained: architecture and input pipeline from the folder, no source files needed
        source = source_from_export(cfg["source_export"], folder, cfg.get("source_name") or cfg.get("source", ""),
                                    cfg.get("source", ""), SourceOptions(offline=True))
    if source is None:
        if not cfg.get("source"):
            raise AutotransferError(f"model {str(path)!r} does not record its source; pass source= to load_model")
        source = sources_mod.resolve_source(cfg["source"], SourceOptions(offline=True))
    tasks = [Task(t["name"], list(t["classes"])) for t in cfg["tasks"]]
    backbone = source.build(pretrained=False)  # architecture only: every tensor comes from the file
    model = TransferModel(backbone, int(cfg["feature_dim"]), tasks, source=source, config=cfg)
    if cfg.get("strategy"):
        get_strategy(cfg["strategy"]).prepare_model(model, dict(cfg.get("strategy_params") or {}))
    missing, unexpected = _load(model, str(folder / WEIGHTS), strict=False)
    if missing or unexpected:
        raise AutotransferError(
            f"weights in {str(folder / WEIGHTS)!r} do not match the model built from source "
            f"{cfg.get('source')!r}: {len(missing)} missing (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}); was it saved by another version?"
        )
    model.eval()
    return model.to(resolve_device(device))
