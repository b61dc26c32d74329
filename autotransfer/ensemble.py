"""Ensembles of models a search already trained: chosen on validation, saved as one model.

- ``greedy_ensemble``: Caruana et al. (2004) ensemble selection, as AutoGluon's ``WeightedEnsemble``
  runs it: forward selection with replacement over the candidates' validation probabilities;
  the weights are how often each was picked.
- ``weight_space_average`` and ``greedy_soup``: for members of one architecture, one model whose
  weights are the members' average (Wortsman et al. 2022, "model soups"): one model's inference cost.
- ``save_ensemble``: the chosen members as one exported folder (``members/<i>/``, each a normal
  model folder, and ``config.json`` with the weights) that ``autotransfer.loading.load_model``,
  ``predict`` and ``evaluate`` read like any other model.

The selection sees validation probabilities and labels only: nothing here takes test data.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import AutotransferError
from .metrics import Metric, get_metric, score

if TYPE_CHECKING:
    from .model import TransferModel

DEFAULT_MAX_MEMBERS = 25  # AutoGluon's ensemble_size default: more rounds rarely move the validation score
_TIE = 1e-12  # scores closer than this are equal: (a + b) / 2 and (2a + 2b) / 4 differ only in rounding


@dataclass(frozen=True)
class EnsembleSelection:
    """What ``greedy_ensemble`` chose."""

    counts: np.ndarray  # how many times each candidate was picked (int64, one per candidate)
    score: float  # the ensemble's validation score under ``metric``
    metric: str  # the metric it optimised
    order: list[int] = field(default_factory=list)  # the kept picks in order; order[0] is the best single candidate
    trajectory: list[float] = field(default_factory=list)  # validation score after each round, kept or not

    @property
    def weights(self) -> np.ndarray:
        """Each candidate's weight: its count over the total (sums to 1)."""
        return self.counts / self.counts.sum()

    def members(self) -> list[tuple[int, float]]:
        """(candidate index, weight) of every picked candidate, the first pick first: what ``save_ensemble`` takes."""
        seen = list(dict.fromkeys(self.order))
        return [(i, float(self.weights[i])) for i in seen]


def _clearly_better(m: Metric, a: float, b: float) -> bool:
    return m.better(a, b) and abs(a - b) > _TIE * max(1.0, abs(b))


def _per_task(candidate: Any) -> list[np.ndarray]:
    return [np.asarray(p, np.float64) for p in (candidate if isinstance(candidate, (list, tuple)) else [candidate])]


def _check_candidates(val_probs: Sequence[Any]) -> list[list[np.ndarray]]:
    cands = [_per_task(c) for c in val_probs]
    if not cands:
        raise AutotransferError("greedy_ensemble got no candidates: pass the validation probabilities of at least "
                                "one finished trial")
    shapes = [p.shape for p in cands[0]]
    for i, c in enumerate(cands):
        if [p.shape for p in c] != shapes:
            raise AutotransferError(f"candidate {i}'s validation probabilities have shape(s) {[p.shape for p in c]}, "
                                    f"candidate 0's {shapes}: every candidate must be scored on the same "
                                    "validation items and classes")
    return cands


def greedy_ensemble(val_probs: Sequence[Any], val_labels: Any, metric: str = "accuracy",
                    max_members: int = DEFAULT_MAX_MEMBERS) -> EnsembleSelection:
    """Caruana's ensemble selection over candidates' validation probabilities.

    ``val_probs``: one entry per candidate, an ``(n_val, C)`` array or, for several tasks, a list of
    one per task; ``val_labels``: ``(n_val,)`` or ``(n_val, tasks)``. Each of ``max_members`` rounds
    adds (with replacement) the candidate whose addition scores best on validation; the ensemble
    averages its picks' probabilities. The kept ensemble is the best prefix of the picks. Ties go to
    fewer picks, then to the earlier candidate, so the answer is deterministic. The weights are the
    counts over their total; the first pick is the best single candidate.
    """
    m = get_metric(metric)
    if not isinstance(max_members, int) or max_members < 1:
        raise AutotransferError(f"max_members={max_members!r}: expected a whole number of at least 1 "
                                "(the most picks an ensemble may hold)")
    cands = _check_candidates(val_probs)
    total = [np.zeros_like(p) for p in cands[0]]
    picks: list[int] = []
    trajectory: list[float] = []
    for k in range(1, max_members + 1):
        best_i, best_s = -1, math.nan
        for i, c in enumerate(cands):
            s = score(m, val_labels, [(t + p) / k for t, p in zip(total, c, strict=True)])
            if best_i < 0 or _clearly_better(m, s, best_s):
                best_i, best_s = i, s
        picks.append(best_i)
        trajectory.append(best_s)
        total = [t + p for t, p in zip(total, cands[best_i], strict=True)]
    keep = 0
    for k, s in enumerate(trajectory):
        if _clearly_better(m, s, trajectory[keep]):
            keep = k
    order = picks[:keep + 1]
    counts = np.bincount(order, minlength=len(cands)).astype(np.int64)
    return EnsembleSelection(counts, trajectory[keep], m.name, order, trajectory)


def weight_space_average(state_dicts: Sequence[dict[str, Any]], weights: Sequence[float]) -> dict[str, Any]:
    """The weighted average of state dicts of one architecture ("model soup").

    Floating-point tensors are averaged with ``weights`` (normalised to sum 1); every other tensor
    (e.g. BatchNorm's ``num_batches_tracked``) is the first state dict's. State dicts whose keys,
    shapes or dtypes differ are refused: their members are not one architecture.
    """
    import torch

    if not state_dicts or len(weights) != len(state_dicts):
        raise AutotransferError(f"weight_space_average got {len(state_dicts)} state dict(s) and {len(weights)} "
                                "weight(s): pass one weight per state dict, at least one of each")
    w = np.asarray(weights, np.float64)
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise AutotransferError(f"weight_space_average weights {w.tolist()}: expected non-negative numbers with a "
                                "positive sum")
    w = w / w.sum()
    first = state_dicts[0]
    for i, sd in enumerate(state_dicts[1:], 1):
        if list(sd) != list(first):
            diff = sorted(set(sd) ^ set(first))[:2] or ["(their order)"]
            raise AutotransferError(f"state dict {i} has other keys than state dict 0 (e.g. {diff}): only members "
                                    "of one architecture can be averaged; ensemble their probabilities instead")
        for key, t in sd.items():
            if t.shape != first[key].shape or t.dtype != first[key].dtype:
                raise AutotransferError(
                    f"state dict {i}'s {key!r} is {tuple(t.shape)} {t.dtype}, state dict 0's is "
                    f"{tuple(first[key].shape)} {first[key].dtype}: only members of one architecture can be "
                    "averaged; ensemble their probabilities instead")
    out = {}
    for key, t in first.items():
        if not t.is_floating_point():
            out[key] = t.clone()
            continue
        acc = sum(float(wi) * sd[key].detach().to(torch.float64) for wi, sd in zip(w, state_dicts, strict=True))
        out[key] = acc.to(t.dtype)
    return out


def greedy_soup(state_dicts: Sequence[dict[str, Any]], val_scores: Sequence[float],
                evaluate: Callable[[dict[str, Any]], float], metric: str = "accuracy") -> tuple[list[int], float]:
    """Wortsman et al.'s greedy soup: (the averaged members' indices, the soup's validation score).

    Members are tried in order of their own validation score (``val_scores``, best first; ties to the
    earlier one); each joins when the uniform average with it scores on validation at least as well
    as without it. ``evaluate(state_dict)`` loads an averaged state dict and returns its validation
    score under ``metric``: the caller owns the model and the validation data.
    """
    m = get_metric(metric)
    if len(val_scores) != len(state_dicts) or not state_dicts:
        raise AutotransferError(f"greedy_soup got {len(state_dicts)} state dict(s) and {len(val_scores)} "
                                "validation score(s): pass one score per state dict, at least one of each")
    sign = -1.0 if m.higher_is_better else 1.0
    order = sorted(range(len(state_dicts)), key=lambda i: (sign * float(val_scores[i]), i))
    soup, best = [order[0]], float(val_scores[order[0]])
    for i in order[1:]:
        trial = soup + [i]
        s = float(evaluate(weight_space_average([state_dicts[j] for j in trial], [1.0] * len(trial))))
        if not m.better(best, s):
            soup, best = trial, s
    return soup, best


def average_models(models: Sequence[TransferModel], weights: Sequence[float]) -> TransferModel:
    """One model whose tensors are the weighted average of ``models``' (a soup): same architecture, tasks
    and classes, one model's inference cost. It keeps the first model's source and config (plus a
    ``soup`` entry with the weights) and saves and loads like any model."""
    import copy

    from .model import check_members

    check_members(models, "the soup")
    averaged = weight_space_average([m.state_dict() for m in models], weights)
    first = models[0]
    source, first.source = first.source, None  # shared, not copied: a source may hold a tokenizer or a file handle
    try:
        soup = copy.deepcopy(first)
    finally:
        first.source = source
    soup.source = source
    soup.load_state_dict(averaged)
    w = np.asarray(weights, np.float64)
    soup.config = {**soup.config, "soup": {"members": len(models), "weights": (w / w.sum()).tolist()}}
    return soup.eval()


def _member_folder(member: Any, dest: Path) -> None:
    """``member`` (a TransferModel or a saved model folder) written as a model folder at ``dest``."""
    from .model import CONFIG, FORMAT

    if hasattr(member, "save") and hasattr(member, "heads"):
        member.save(dest)
        return
    src = Path(member)
    try:
        fmt = json.loads((src / CONFIG).read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, AttributeError):
        fmt = None
    if fmt != FORMAT:
        raise AutotransferError(f"ensemble member {str(member)!r} is not a saved autotransfer model (format "
                                f"{fmt!r}); pass model folders (a trial's model, DIR/best) or TransferModels — "
                                "an ensemble cannot hold another ensemble")
    shutil.copytree(src, dest)


def _check_weights(members: Sequence[Any], weights: Sequence[float]) -> np.ndarray:
    w = np.asarray(weights, np.float64)
    if not members or w.shape != (len(members),):
        raise AutotransferError(f"save_ensemble got {len(members)} member(s) and {w.size} weight(s): pass one "
                                "weight per member, at least one member")
    if not np.isfinite(w).all() or (w <= 0).any():
        raise AutotransferError(f"save_ensemble weights {w.tolist()}: expected positive numbers; leave out the "
                                "members the selection did not pick (EnsembleSelection.members())")
    return w / w.sum()


def save_ensemble(members: Sequence[str | Path | TransferModel], weights: Sequence[float], out: str | Path, *,
                  single_parameters: int | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write the ensemble of ``members`` (model folders or TransferModels) with ``weights`` to the new folder ``out``.

    ``out/members/<i>/`` holds each member as a normal model folder, ``out/config.json`` the weights
    (normalised to sum 1), the tasks, and the inference cost: the members' total parameter count over
    ``single_parameters``, the single model the ensemble replaces (default: the first member's, which
    is the best single candidate when the members come from ``EnsembleSelection.members()``).
    ``extra`` is stored in the config as well (e.g. the metric and the validation score). Nothing
    outside ``out`` is referred to, so the folder can move. Returns ``out``.
    """
    from .model import ENSEMBLE_FORMAT, FORMAT_VERSION

    w = _check_weights(members, weights)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AutotransferError(f"ensemble folder {str(out)!r} already exists and is not empty: pass a new folder "
                                "or remove it first")
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        for i, member in enumerate(members):
            _member_folder(member, partial / "members" / str(i))
        loaded = _load_members(partial, len(members))
        counts = [m.param_counts()[1] for m in loaded]
        single = int(single_parameters) if single_parameters is not None else counts[0]
        cfg = {"format": ENSEMBLE_FORMAT, "format_version": FORMAT_VERSION,
               "members": [{"path": f"members/{i}", "weight": float(wi)} for i, wi in enumerate(w)],
               "tasks": [{"name": t.name, "classes": list(t.classes)} for t in loaded[0].tasks],
               "modality": loaded[0].modality, "parameters": int(sum(counts)), "single_parameters": single,
               "inference_cost": float(sum(counts)) / single, **(extra or {})}
        (partial / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        if out.exists():
            out.rmdir()
        partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out


def _load_members(folder: Path, n: int) -> list[TransferModel]:
    """The members saved under ``folder/members``, loaded (which checks they load from there alone and
    agree on tasks and modality)."""
    from .loading import load_model
    from .model import check_members

    loaded = [load_model(folder / "members" / str(i)) for i in range(n)]
    check_members(loaded, str(folder))
    return loaded
