"""``load_model``: a saved model folder back into a ``TransferModel``, ready to predict.

Apart from ``model.py`` so that the model knows no strategy: loading re-applies the saved
strategy's structural change, so it needs the strategies; the strategies need the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import sources as sources_mod  # looked up at call time: a plugin or a test may replace resolve_source
from .data import Task
from .errors import AutotransferError
from .features import resolve_device
from .model import CONFIG, ENSEMBLE_FORMAT, FORMAT, WEIGHTS, EnsembleModel, TransferModel, non_finite
from .sources import SourceOptions, source_from_export
from .strategies import get_strategy

if TYPE_CHECKING:
    from .sources import Source


def load_model(path: str | Path, *, source: Source | None = None,
               device: str = "cpu") -> TransferModel | EnsembleModel:
    """Load a model saved by ``TrainResult.save``/``TransferModel.save``; ready for ``.predict(items)``.

    A folder written by ``ensemble.save_ensemble`` loads as an ``EnsembleModel``, which predicts the same
    way. ``source`` overrides the saved source spec (e.g. a Source object that has no spec).
    """
    folder = Path(path)
    cfg_path = folder / CONFIG
    cfg = _read_json(cfg_path) if cfg_path.is_file() else None
    if isinstance(cfg, dict) and cfg.get("format") == ENSEMBLE_FORMAT:
        if source is not None:
            raise AutotransferError(f"{str(path)!r} is an ensemble: its members bring their own sources, so "
                                    "load it without source=")
        return _load_ensemble(folder, cfg, device)
    if cfg is None or not (folder / WEIGHTS).is_file():
        raise AutotransferError(
            f"{str(path)!r} is not a saved autotransfer model; expected a folder with {CONFIG} and {WEIGHTS} "
            "(written by TrainResult.save)"
        )
    cfg = _check_config(cfg_path, cfg)
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
    _load_weights(model, folder / WEIGHTS, cfg)
    model.eval()
    return model.to(resolve_device(device))


def _damaged(path: Path, what: str) -> AutotransferError:
    return AutotransferError(f"{str(path)!r} {what}; the model folder is damaged or was edited — export it again "
                             "(a search's DIR/best, or TrainResult.save) or restore it from a copy")


def _read_json(cfg_path: Path) -> Any:
    try:
        return json.loads(cfg_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _damaged(cfg_path, f"is not valid JSON ({str(exc).splitlines()[0]})") from None


def _check_config(cfg_path: Path, cfg: Any) -> dict:
    """config.json, checked as far as loading relies on it: format, tasks with their classes, feature size."""
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        found = cfg.get("format") if isinstance(cfg, dict) else type(cfg).__name__
        raise AutotransferError(f"{str(cfg_path)!r} is not an autotransfer model config (format={found!r})")
    if not _valid_tasks(cfg.get("tasks")):
        raise _damaged(cfg_path, "has no valid 'tasks' (each a name and at least two distinct class names)")
    if not isinstance(cfg.get("feature_dim"), int) or cfg["feature_dim"] < 1:
        raise _damaged(cfg_path, f"has no valid 'feature_dim' (got {cfg.get('feature_dim')!r})")
    return cfg


def _valid_tasks(tasks: Any) -> bool:
    return isinstance(tasks, list) and bool(tasks) and all(
        isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("classes"), list)
        and len(t["classes"]) >= 2 and all(isinstance(c, str) and c for c in t["classes"])
        and len(set(t["classes"])) == len(t["classes"]) for t in tasks)


def _load_ensemble(folder: Path, cfg: dict, device: str) -> EnsembleModel:
    """The members under ``folder`` (paths relative to it, never outside) with their weights."""
    cfg_path = folder / CONFIG
    entries = cfg.get("members")
    ok = isinstance(entries, list) and entries and all(
        isinstance(e, dict) and isinstance(e.get("path"), str) and isinstance(e.get("weight"), (int, float))
        and not isinstance(e.get("weight"), bool) for e in entries)
    if not ok or not _valid_tasks(cfg.get("tasks")):
        raise _damaged(cfg_path, "has no valid 'members' (each a path inside the folder and a weight) or 'tasks'")
    members = []
    for e in entries:
        rel = Path(e["path"])
        if rel.is_absolute() or ".." in rel.parts:
            raise _damaged(cfg_path, f"names member {e['path']!r} outside the ensemble's folder")
        if not (folder / rel / CONFIG).is_file():
            raise _damaged(cfg_path, f"names member {e['path']!r}, which is missing or holds no {CONFIG}")
        sub = _read_json(folder / rel / CONFIG)
        if isinstance(sub, dict) and sub.get("format") == ENSEMBLE_FORMAT:
            raise _damaged(cfg_path, f"names member {e['path']!r}, itself an ensemble")
        members.append(load_model(folder / rel, device=device))
    model = EnsembleModel(members, [e["weight"] for e in entries], cfg, where=str(folder))
    if [{"name": t.name, "classes": list(t.classes)} for t in model.tasks] != cfg["tasks"]:
        raise _damaged(cfg_path, f"lists other tasks or classes than its members predict ({_classes(cfg['tasks'])})")
    return model


def _classes(tasks: list[dict]) -> str:
    return "; ".join(f"{t['name']}: {', '.join(map(str, t['classes']))}" for t in tasks)


def _load_weights(model: TransferModel, weights: Path, cfg: dict) -> None:
    """The saved tensors into ``model``; a cut file, or one whose heads do not fit the class lists in
    config.json (an edited class list), is one line."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_model as _load

    try:
        with safe_open(str(weights), "pt") as f:
            saved = (f.metadata() or {}).get("tasks")  # None: saved before the class lists rode along
        if saved is not None and json.loads(saved) != cfg["tasks"]:
            raise _damaged(weights.parent / CONFIG, f"lists other tasks or classes than the weights were trained "
                                                    f"with ({_classes(json.loads(saved))})")
        missing, unexpected = _load(model, str(weights), strict=False)
    except (SafetensorError, OSError) as exc:
        raise _damaged(weights, f"cannot be read ({str(exc).splitlines()[0]}: cut short or not a weights file)") from None
    except RuntimeError as exc:
        if "size mismatch" not in str(exc):
            raise
        counts = ", ".join(f"{t.name}: {len(t.classes)}" for t in model.tasks)
        raise _damaged(weights, f"holds heads of another size than the class lists in config.json ({counts} "
                                "classes)") from None
    bad = non_finite(model.state_dict().items())
    if bad:
        raise _damaged(weights, f"holds nan or inf in {len(bad)} tensor(s) (e.g. {bad[0]}): the model diverged "
                                "while training; retrain it with a lower --lr")
    if missing or unexpected:
        raise AutotransferError(
            f"weights in {str(weights)!r} do not match the model built from source "
            f"{cfg.get('source')!r}: {len(missing)} missing (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}); was it saved by another version?"
        )
