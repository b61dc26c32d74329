"""The trained model: one shared backbone, one linear head per task; save (``loading`` loads).

On disk a model is a folder with ``model.safetensors`` (every tensor: backbone, adapters,
heads) and ``config.json`` (source spec, strategy and its parameters, tasks with their class
names, modality, and ``source_export``: the source's ``export()`` — architecture and resolved
input pipeline — plus any files it wrote, such as a tokenizer under ``source/``).
``autotransfer.loading.load_model`` rebuilds the source from ``source_export`` (or, for a
source that does not implement ``export``, from its spec), builds the architecture without pretrained weights
(``build(pretrained=False)``), re-applies the strategy's structural change (LoRA adapters),
and loads the saved tensors: predictions reproduce exactly, with nothing but the folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .errors import AutotransferError, Diverged

if TYPE_CHECKING:
    from .data import Task
    from .sources import Source

FORMAT = "autotransfer-model"
ENSEMBLE_FORMAT = "autotransfer-ensemble"  # config.json of a folder of members (``ensemble.save_ensemble``)
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


NON_FINITE_OUTPUT = ("the model's output is not finite (nan or inf) for this item: its weights diverged in training; "
                     "retrain it with a lower --lr")


def non_finite(named: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the floating-point tensors in ``named`` that hold a nan or an inf."""
    return [n for n, t in named if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def to_device(batch: Any, device: torch.device) -> Any:
    """Move tensors in a (nested) batch to ``device``; anything else passes through."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    if hasattr(batch, "to"):  # e.g. transformers BatchEncoding
        return batch.to(device)
    return batch


def batch_len(batch: Any) -> int:
    """Number of examples in a batch (dim 0 of its first tensor)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, dict) or hasattr(batch, "values"):
        return batch_len(next(iter(batch.values())))
    if isinstance(batch, (list, tuple)):
        return batch_len(batch[0]) if batch and not isinstance(batch[0], str) else len(batch)
    raise TypeError(f"cannot tell the batch size of {type(batch).__name__}")


class TransferModel(nn.Module):
    """A backbone (``forward(batch) -> (B, D)``) and one ``nn.Linear(D, n_classes)`` head per task."""

    def __init__(self, backbone: nn.Module, feature_dim: int, tasks: Sequence[Task],
                 source: Source | None = None, config: dict[str, Any] | None = None):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleList(nn.Linear(feature_dim, t.num_classes) for t in tasks)
        self.tasks = list(tasks)
        self.source = source
        self.feature_dim = int(feature_dim)
        # parameter names per layer group, recorded before any adapter renames them
        self.backbone_groups: list[list[str]] = [list(g) for g in backbone.layer_groups()]
        self.config: dict[str, Any] = dict(config or {})
        # every norm layer keeps its running statistics while training (a strategy may set this, e.g.
        # LP-FT: the probe was solved on the pretrained statistics' features)
        self.freeze_norm_stats = False

    def forward(self, batch: Any) -> list[torch.Tensor]:
        return self.forward_features(self.backbone(batch))

    def forward_features(self, features: torch.Tensor) -> list[torch.Tensor]:
        """Per-task logits from pooled backbone features."""
        return [head(features) for head in self.heads]

    def train(self, mode: bool = True) -> TransferModel:
        """Like ``nn.Module.train``, but norm layers whose parameters are all frozen stay in eval mode
        (every norm layer, when ``freeze_norm_stats``).

        A frozen layer group must be bit-for-bit unchanged after training, and BatchNorm updates
        its running statistics in train mode even when its weights are frozen.
        """
        super().train(mode)
        if mode:
            norms = ([m for m in self.backbone.modules() if isinstance(m, _NORMS)] if self.freeze_norm_stats
                     else frozen_norms(self.backbone))
            for mod in norms:
                mod.eval()
        return self

    @property
    def modality(self) -> str:
        """"image" or "text": what ``predict`` takes."""
        return getattr(self.source, "modality", "") or self.config.get("modality", "")

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def param_counts(self) -> tuple[int, int]:
        """(trainable, total) parameter counts."""
        total = sum(p.numel() for p in self.parameters())
        return sum(p.numel() for p in self.parameters() if p.requires_grad), total

    # --- inference ---

    def predict(self, items: Sequence[Any], batch_size: int = 64) -> tuple[np.ndarray, list[np.ndarray]]:
        """Predicted class indices (n, n_tasks) int64 and per-task probabilities [(n, C_t) float32].

        Class names: ``self.tasks[t].classes[pred[i, t]]`` (or ``predict_names``). An item that
        cannot be read raises; ``predict_rows`` reports it instead.
        """
        pred, probs, _ = self._predict(items, batch_size, tolerant=False)
        return pred, probs

    def predict_rows(self, items: Sequence[Any],
                     batch_size: int = 64) -> tuple[np.ndarray, list[np.ndarray], list[str | None]]:
        """Like ``predict``, but an unreadable item does not stop the others: its row has class
        index -1 and NaN probabilities, and the third list holds why (None for every good item)."""
        return self._predict(items, batch_size, tolerant=True)

    @torch.no_grad()
    def _predict(self, items: Sequence[Any], batch_size: int,
                 tolerant: bool) -> tuple[np.ndarray, list[np.ndarray], list[str | None]]:
        if self.source is None:
            raise AutotransferError("this model has no source attached, so it cannot read items")
        was_training = self.training
        self.eval()
        device = self.device
        errors: list[str | None] = [None] * len(items)
        out = [np.full((len(items), h.out_features), np.nan, np.float32) for h in self.heads]
        try:
            for start in range(0, len(items), batch_size):
                inputs, rows = [], []
                for i in range(start, min(start + batch_size, len(items))):
                    try:
                        inputs.append(self.source.load_item(items[i], train=False))
                    except Exception as exc:
                        if not tolerant:
                            raise
                        errors[i] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                        continue
                    rows.append(i)
                if not rows:
                    continue
                for t, logits in enumerate(self(to_device(self.source.collate(inputs), device))):
                    out[t][rows] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        finally:
            self.train(was_training)
        ok = np.all([np.isfinite(p).all(axis=1) for p in out], axis=0) if out else np.ones(len(items), bool)
        for i in np.flatnonzero(~ok):
            if errors[i] is None:  # read, but the weights turned it into nan: never a class
                if not tolerant:
                    raise Diverged(f"{NON_FINITE_OUTPUT} (item {items[i]!r})")
                errors[i] = NON_FINITE_OUTPUT
        pred = np.zeros((len(items), len(self.heads)), np.int64)
        for t, p in enumerate(out):
            pred[:, t] = np.where(ok, np.nan_to_num(p, nan=-1.0, posinf=-1.0, neginf=-1.0).argmax(axis=1), -1)
        return pred, out, errors

    def predict_names(self, items: Sequence[Any], batch_size: int = 64) -> list[list[str]]:
        """Predicted class names, one list per item with one name per task."""
        pred, _ = self.predict(items, batch_size)
        return [[self.tasks[t].classes[k] for t, k in enumerate(row)] for row in pred]

    # --- persistence ---

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``model.safetensors`` + ``config.json`` to the folder ``path``; returns it."""
        from safetensors.torch import save_model

        out = Path(path)
        bad = non_finite(self.state_dict().items())
        if bad:
            raise Diverged(f"not saving the model to {str(out)!r}: {len(bad)} weight tensor(s) hold nan or inf "
                           f"(e.g. {bad[0]}), so its training diverged; retrain it with a lower --lr")
        out.mkdir(parents=True, exist_ok=True)
        src = self.source
        cfg = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **self.config,
            "source": getattr(src, "spec", "") or getattr(src, "name", ""),
            "source_name": getattr(src, "name", ""),
            "architecture": getattr(src, "architecture", ""),
            "modality": getattr(src, "modality", ""),
            "feature_dim": self.feature_dim,
            "tasks": [{"name": t.name, "classes": list(t.classes)} for t in self.tasks],
            **(extra or {}),
        }
        export = src.export(out) if src is not None and hasattr(src, "export") else None
        if export is not None:
            cfg["source_export"] = export
        was = self.device
        self.to("cpu")
        try:
            # the class lists ride along with the heads: an edited config.json is caught at load
            save_model(self, str(out / WEIGHTS), metadata={"tasks": json.dumps(cfg["tasks"])})
        finally:
            self.to(was)
        os.chmod(out / WEIGHTS, 0o644)  # safetensors writes 0600; a shared model must be readable like the rest
        (out / CONFIG).write_text(json.dumps(cfg, indent=2, default=_jsonable) + "\n")
        return out


def check_members(members: Sequence[TransferModel], where: str) -> None:
    """Members of one ensemble must predict the same tasks, classes in the same order, from the same kind of item."""
    first = members[0]
    want = [(t.name, list(t.classes)) for t in first.tasks]
    for i, m in enumerate(members[1:], 1):
        got = [(t.name, list(t.classes)) for t in m.tasks]
        if got != want or m.modality != first.modality:
            raise AutotransferError(
                f"ensemble member {i} in {where!r} predicts {got} from {m.modality} items, member 0 {want} from "
                f"{first.modality} items: only models of the same tasks and classes can be ensembled")


class EnsembleModel:
    """Members whose probabilities are averaged with fixed weights; predicts like a ``TransferModel``.

    ``autotransfer.loading.load_model`` returns one for a folder written by ``ensemble.save_ensemble``.
    Each member reads the items with its own input pipeline, so members of different sources mix.
    """

    def __init__(self, members: Sequence[TransferModel], weights: Sequence[float],
                 config: dict[str, Any] | None = None, where: str = "the ensemble"):
        w = np.asarray(weights, np.float64)
        if not members or w.shape != (len(members),) or not np.isfinite(w).all() or (w <= 0).any():
            raise AutotransferError(f"{where}: {len(members)} member(s) with weights {w.tolist()}; expected at "
                                    "least one member and one positive weight per member")
        check_members(members, where)
        self.members = list(members)
        self.weights = w / w.sum()
        self.tasks = list(members[0].tasks)
        self.config: dict[str, Any] = dict(config or {})

    @property
    def modality(self) -> str:
        return self.members[0].modality

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    def param_counts(self) -> tuple[int, int]:
        """(trainable, total) parameter counts over every member: the ensemble's inference cost."""
        counts = [m.param_counts() for m in self.members]
        return sum(c[0] for c in counts), sum(c[1] for c in counts)

    def to(self, device: str | torch.device) -> EnsembleModel:
        for m in self.members:
            m.to(device)
        return self

    def eval(self) -> EnsembleModel:
        for m in self.members:
            m.eval()
        return self

    def _average(self, per_member: list[list[np.ndarray]]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Weighted mean of the members' per-task probabilities (float64 sums, float32 out) and its argmax
        (-1 on a row that is not finite: an item some member could not read)."""
        probs = [sum(w * p[t].astype(np.float64) for w, p in zip(self.weights, per_member, strict=True))
                 .astype(np.float32) for t in range(len(self.tasks))]
        pred = np.zeros((len(probs[0]), len(probs)), np.int64)
        for t, p in enumerate(probs):
            ok = np.isfinite(p).all(axis=1)
            pred[:, t] = np.where(ok, np.nan_to_num(p, nan=-1.0).argmax(axis=1), -1)
        return pred, probs

    def predict(self, items: Sequence[Any], batch_size: int = 64) -> tuple[np.ndarray, list[np.ndarray]]:
        """Predicted class indices (n, n_tasks) and per-task probabilities, the members' weighted average;
        see ``TransferModel.predict``."""
        return self._average([m.predict(items, batch_size)[1] for m in self.members])

    def predict_rows(self, items: Sequence[Any],
                     batch_size: int = 64) -> tuple[np.ndarray, list[np.ndarray], list[str | None]]:
        """Like ``predict``, but an item some member cannot read has class -1, NaN probabilities and the
        first member's reason; see ``TransferModel.predict_rows``."""
        rows = [m.predict_rows(items, batch_size) for m in self.members]
        errors = [next((r[2][i] for r in rows if r[2][i] is not None), None) for i in range(len(items))]
        pred, probs = self._average([r[1] for r in rows])
        bad = np.array([e is not None for e in errors], dtype=bool)
        for p in probs:
            p[bad] = np.nan
        pred[bad] = -1
        return pred, probs, errors

    def predict_names(self, items: Sequence[Any], batch_size: int = 64) -> list[list[str]]:
        """Predicted class names, one list per item with one name per task."""
        pred, _ = self.predict(items, batch_size)
        return [[self.tasks[t].classes[k] for t, k in enumerate(row)] for row in pred]


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    return str(v)


def frozen_norms(module: nn.Module) -> list[nn.Module]:
    """Norm layers whose parameters are all frozen (paramless ones follow their parent's parameters)."""
    mods = dict(module.named_modules())
    out = []
    for name, mod in mods.items():
        if not isinstance(mod, _NORMS):
            continue
        owner, owner_name = mod, name
        while not any(True for _ in owner.parameters()) and owner_name:
            owner_name = owner_name.rpartition(".")[0]
            owner = mods[owner_name]
        params = list(owner.parameters())
        if params and not any(p.requires_grad for p in params):
            out.append(mod)
    return out
