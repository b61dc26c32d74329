"""What the search's answer becomes once the search has chosen it: refit on train + val (``--refit``),
or an ensemble of the completed trials chosen on validation (``--ensemble N``), or both: the
ensemble's members each refit, combined with the weights validation chose.

``improve`` runs after ``_finish`` has tested the chosen trial and copied it to ``best/``; it may
replace ``best/`` and returns the summary's columns about it (``report.FINAL_COLUMNS``). The
ensemble is chosen on validation only; each model it considers exporting is tested once. A refit
ensemble costs as many trainings as it has members (``refit_seconds`` says how long they took).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..console import note
from ..ensemble import average_models, greedy_ensemble, save_ensemble
from ..errors import AutotransferError
from ..features import seconds_per_item
from ..loading import load_model
from ..metrics import Scored, confusion_matrix, scorable, score, scored
from .answer import load_val_probs
from .record import TrialRecord
from .refit import complete, on_subsample, predicted_seconds, reads_cached_features, refit, refit_source, resolve_refit

_TIE = 1e-12  # an ensemble must beat the single answer by more than rounding to replace it


def selection_metric(ctx: Any) -> str:
    """The metric the search chooses with (the trials' validation score): the plan's, resolved."""
    return ctx.plan.metric


def test_score(model: Any, dataset: Any, split: str, metric: str) -> tuple[Scored, dict[str, Any]] | None:
    """``metric`` on ``split`` (the mean over tasks, a loss negated) with its interval, and each task's
    confusion matrix there ({task: {"classes", "confusion"}}); None for an empty split
    (``--split 0.8,0.2,0``): no score, not nan."""
    if not len(dataset.split_items(split)):
        return None
    preds, probs = model.predict(dataset.split_items(split))
    y = dataset.split_labels(split)
    confusion = {task.name: {"classes": list(task.classes),
                             "confusion": confusion_matrix(y[:, t], preds[:, t], task.num_classes).tolist()}
                 for t, task in enumerate(dataset.tasks)}
    return scored(metric, y, scorable(metric, preds, probs)), confusion


CONFUSION = "test_confusion"  # improve's columns carry best/'s confusion on test under this key, then hand it back


def test_columns(model: Any, ctx: Any, split: str = "test", prefix: str = "test") -> dict[str, Any]:
    """``model``'s score on ``split`` in the search's metric, higher is better (a loss negated, as every
    score of the summary), with its 95% interval: ``{prefix}_score``, ``{prefix}_low``, ``{prefix}_high``;
    on test, its confusion matrices too (``CONFUSION``)."""
    tested = test_score(model, ctx.plan.dataset, split, selection_metric(ctx))
    if tested is None:
        cols: dict[str, Any] = {f"{prefix}_score": None, f"{prefix}_low": None, f"{prefix}_high": None}
    else:
        band = tested[0]
        cols = {f"{prefix}_score": band.value, f"{prefix}_low": band.low, f"{prefix}_high": band.high}
    return {**cols, CONFUSION: tested[1] if tested else {}} if split == "test" else cols


def _probs(model: Any, ctx: Any, split: str) -> list[np.ndarray]:
    return model.predict(ctx.plan.dataset.split_items(split))[1]


@dataclass
class _Pick:
    """The ensemble (or soup) chosen on validation, before it is exported."""

    kind: str  # "ensemble" or "soup"
    trials: list[int]  # the members' trial numbers, first pick first
    weights: list[float]  # their weights (sum 1)
    val: float  # its validation score
    models: list[Any]  # the loaded members


def _candidates(study_trials: list[Any], ctx: Any) -> list[tuple[int, Path]]:
    """Every completed trial whose model is saved here (scratch baselines included)."""
    out = []
    for t in study_trials:
        mdir = ctx.plan.models_dir / f"trial_{t.number}"
        if (mdir / "config.json").is_file():
            out.append((t.number, mdir))
    return out


def choose_ensemble(ctx: Any, complete: list[Any], answer: Any, size: int) -> tuple[_Pick | None, float]:
    """Greedy ensemble selection over the completed trials' validation probabilities (at most ``size``
    picks), and the soup of its members where they share an architecture; returns the better of the
    two when it beats the single answer on validation (else None), and the single answer's validation score."""
    metric = selection_metric(ctx)
    cands = dict(_candidates(complete, ctx))
    models, probs = {}, {}
    for n, d in cands.items():  # the probabilities each trial kept; predicted only for a trial without them
        kept = load_val_probs(d)
        if kept is None:  # one candidate on the device at a time: the others wait on the CPU
            model = load_model(d, device=str(ctx.plan.device))
            kept, models[n] = _probs(model, ctx, "val"), model.to("cpu")
        probs[n] = kept
    labels = ctx.plan.dataset.split_labels("val")
    single = score(metric, labels, probs[answer.number]) if answer.number in probs else float("-inf")
    numbers = list(probs)
    if len(numbers) < 2:
        return None, single
    sel = greedy_ensemble([probs[n] for n in numbers], labels, metric, max_members=size)
    members = sel.members()
    picked = [numbers[i] for i, _ in members]
    pick = _Pick("ensemble", picked, [w for _, w in members], float(sel.score),
                 [models.get(n) or load_model(cands[n], device="cpu") for n in picked])
    soup = _soup(ctx, pick, metric, labels)
    if soup is not None and soup.val >= pick.val:
        pick = soup  # as good on validation at one model's inference cost
    if len(pick.trials) < 2 or pick.val <= single + _TIE * max(1.0, abs(single)):
        return None, single
    return pick, single


def _soup(ctx: Any, pick: _Pick, metric: str, labels: np.ndarray) -> _Pick | None:
    """The members' weight-space average with the ensemble's weights, scored on validation; None when
    they are not one architecture (their tensors differ) or there is one member."""
    if len(pick.models) < 2:
        return None
    try:
        soup = average_models(pick.models, pick.weights)
    except AutotransferError:
        return None
    return _Pick("soup", pick.trials, pick.weights, float(score(metric, labels, _probs(soup, ctx, "val"))), [soup])


def _export(pick: _Pick, ctx: Any, single_parameters: int, out: Path, **more: Any) -> None:
    """The pick written as ``out`` (replacing it), self-contained."""
    partial = out.with_name(f".{out.name}.ensemble")
    shutil.rmtree(partial, ignore_errors=True)
    extra = {"metric": selection_metric(ctx), "val_score": pick.val, "trials": pick.trials, "kind": pick.kind, **more}
    if pick.kind == "soup":
        model = pick.models[0]
        model.config = {**model.config, "soup": {**model.config.get("soup", {}), **extra}}
        model.save(partial)
    else:
        save_ensemble(pick.models, pick.weights, partial, single_parameters=single_parameters, extra=extra)
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)


def _cost(pick: _Pick, single_parameters: int) -> float:
    return 1.0 if pick.kind == "soup" else sum(m.param_counts()[1] for m in pick.models) / single_parameters


def _ensemble_columns(ctx: Any, complete: list[Any], answer: Any, best_dir: Path) -> tuple[dict[str, Any], _Pick | None]:
    """``--ensemble``: choose, and export and test the pick when it beats the single answer on validation."""
    size, t0 = int(ctx.plan.config.ensemble), time.perf_counter()
    pick, single = choose_ensemble(ctx, complete, answer, size)
    if pick is None:
        note(f"--ensemble {size}: no ensemble of the completed trials beats the chosen trial on validation "
             f"({single:.4f}); best/ is the chosen trial")
        return {"ensemble_members": f"none beat trial {answer.number} on validation",
                "ensemble_seconds": round(time.perf_counter() - t0, 1)}, None
    params = _parameters(ctx, answer)
    cost = _cost(pick, params)
    _export(pick, ctx, params, best_dir)
    exported = load_model(best_dir, device=str(ctx.plan.device))
    tested = test_columns(exported, ctx)
    validated = test_columns(exported, ctx, "val", "ensemble_val")  # pick.val, with its interval
    members = "; ".join(f"trial {n} x{w:.3g}" for n, w in zip(pick.trials, pick.weights, strict=True))
    note(f"best/ is the {pick.kind} of {members}: validation {pick.val:.4f} against the chosen trial's {single:.4f}")
    return {"exported": pick.kind, **tested, "ensemble_members": members, **validated,
            "ensemble_test_score": tested["test_score"], "ensemble_test_low": tested["test_low"],
            "ensemble_test_high": tested["test_high"], "inference_cost": cost,
            "ensemble_seconds": round(time.perf_counter() - t0, 1)}, pick


def _parameters(ctx: Any, answer: Any) -> int:
    """The single answer's parameter count: the unit of an ensemble's inference cost."""
    return load_model(ctx.plan.models_dir / f"trial_{answer.number}").param_counts()[1]


def _refit_columns(ctx: Any, answer: Any, best_dir: Path, dirs: dict[int, Path]) -> dict[str, Any]:
    """``--refit``: retrain the single answer (its model in ``dirs``) on train + val, test it, export it."""
    t0 = time.perf_counter()
    result = refit(ctx, answer, dirs[answer.number])
    seconds = time.perf_counter() - t0
    target = ctx.plan.models_dir / f"refit_{answer.number}"
    shutil.rmtree(target, ignore_errors=True)
    result.save(target)
    tested = test_columns(load_model(target, device=str(ctx.plan.device)), ctx)
    shutil.rmtree(best_dir, ignore_errors=True)
    shutil.copytree(target, best_dir)
    note(f"best/ is trial {answer.number} refit on train + val ({result.train_items} items, "
         f"{len(result.val_curve)} epoch(s), {seconds:.0f} s)")
    return _refit_summary("refit", tested, seconds, result.train_items)


def _refit_ensemble_columns(ctx: Any, complete: list[Any], answer: Any, pick: _Pick,
                            best_dir: Path) -> dict[str, Any]:
    """``--refit`` with an ensemble (or soup) that won: every member retrained on train + val, combined
    with the weights chosen on validation, tested, exported."""
    t0 = time.perf_counter()
    by_number = {t.number: t for t in complete}
    results = [refit(ctx, by_number[n], ctx.plan.models_dir / f"trial_{n}") for n in pick.trials]
    seconds = time.perf_counter() - t0
    models = [r.model.to("cpu") for r in results]
    if pick.kind == "soup":  # the refit members averaged with the soup's weights
        models = [average_models(models, pick.weights)]
    _export(_Pick(pick.kind, pick.trials, pick.weights, pick.val, models), ctx, _parameters(ctx, answer), best_dir,
            refit=True)
    tested = test_columns(load_model(best_dir, device=str(ctx.plan.device)), ctx)
    items = int(results[0].train_items or 0)
    note(f"best/ is the {pick.kind} of trials {', '.join(map(str, pick.trials))}, each refit on train + val "
         f"({items} items, {seconds:.0f} s)")
    return _refit_summary(f"refit {pick.kind}", tested, seconds, items)


def _complete(ctx: Any, answer: Any, best_dir: Path, dirs: dict[int, Path]) -> dict[str, Any]:
    """The answer, a probe that ranking solved on its stratified subsample (what ranking's share of the
    budget could extract), re-solved on every training item with its L2 strength chosen on validation
    again, when that is predicted to fit --timeout: tested, exported, and the model a refit starts from
    (``dirs`` points to it)."""
    record = TrialRecord.from_frozen(answer)
    n_train, items = len(ctx.plan.dataset.splits["train"]), int(record.train_items or 0)
    folder = dirs[answer.number]
    need = predicted_seconds(ctx.plan.dataset, [folder], _extraction(ctx, [answer], [folder]))
    left = ctx.budget.end - ctx.budget.now()
    if need > left:
        why = (f"not applied: re-solving on all {n_train} training items should take {need:.0f} s and "
               f"{max(0.0, left):.0f} s of --timeout are left")
        note(f"best/ is a probe solved on ranking's subsample of {items} of the {n_train} training items; "
             f"{why}; raise --timeout")
        return {"completed": why}
    t0 = time.perf_counter()
    result = complete(ctx, answer, folder)
    seconds = time.perf_counter() - t0
    target = ctx.plan.models_dir / f"completed_{answer.number}"
    shutil.rmtree(target, ignore_errors=True)
    result.save(target)
    dirs[answer.number] = target
    tested = test_columns(load_model(target, device=str(ctx.plan.device)), ctx)
    shutil.rmtree(best_dir, ignore_errors=True)
    shutil.copytree(target, best_dir)
    what = (f"re-solved on all {n_train} training items (ranking's subsample: {items}) in {seconds:.0f} s: "
            f"validation {result.val_score:.4f} ({answer.value:.4f} on the subsample)")
    note(f"best/ is trial {answer.number}'s probe {what}")
    return {"exported": "completed", **tested, "completed": what}


def _refit_summary(exported: str, tested: dict[str, Any], seconds: float, items: Any) -> dict[str, Any]:
    """The summary's columns of a refit best/ (single or ensemble): its test score twice, as best/'s and
    as the refit's, with the refit's cost."""
    return {"exported": exported, **tested, "test_score_refit": tested["test_score"],
            "test_refit_low": tested["test_low"], "test_refit_high": tested["test_high"],
            "refit_seconds": round(seconds, 1), "refit_train_items": items}


def improve(ctx: Any, complete: list[Any], answer: Any, single_test: Any,
            best_dir: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The ensemble (``--ensemble``), then the refit (``--refit``) of the answer, single or ensemble: the
    summary's columns, and best/'s confusion matrices on test when best/ is no longer the chosen trial
    (None: it is). ``single_test``: the chosen trial's test ``metrics.Scored`` (None: not tested)."""
    cols: dict[str, Any] = {"exported": "single", **_single_columns(single_test)}
    pick = None
    if ctx.plan.config.ensemble:
        more, pick = _ensemble_columns(ctx, complete, answer, best_dir)
        cols.update(more)
    dirs = {t.number: ctx.plan.models_dir / f"trial_{t.number}" for t in complete}
    if pick is None and on_subsample(ctx, answer):  # a probe ranking solved on its subsample
        cols.update(_complete(ctx, answer, best_dir, dirs))
    by_number = {t.number: t for t in complete}
    chosen = [answer] if pick is None else [by_number[n] for n in pick.trials]
    on, why = resolve_refit(ctx.plan.config.refit, ctx.plan.dataset)
    cols["refit"] = why
    if on and _refit_fits(ctx, chosen, cols, dirs):
        cols.update(_refit_columns(ctx, answer, best_dir, dirs) if pick is None
                    else _refit_ensemble_columns(ctx, complete, answer, pick, best_dir))
    return cols, cols.pop(CONFUSION, None)


def _single_columns(tested: Any) -> dict[str, Any]:
    """The chosen trial's test score as searched, with its interval."""
    if tested is None:
        return {"test_score_single": None, "test_single_low": None, "test_single_high": None}
    return {"test_score_single": tested.value, "test_single_low": tested.low, "test_single_high": tested.high}


def _refit_fits(ctx: Any, trials: list[Any], cols: dict[str, Any], dirs: dict[int, Path]) -> bool:
    """Whether refitting these trials (their models in ``dirs``) is predicted to end within --timeout; when
    not, the summary's ``refit`` column and a note say so, and best/ stays as it is."""
    folders = [dirs[t.number] for t in trials]
    need = predicted_seconds(ctx.plan.dataset, folders, _extraction(ctx, trials, folders))
    left = ctx.budget.end - ctx.budget.now()
    if need <= left:
        return True
    cols["refit"] += (f"; not applied: refitting should take {need:.0f} s and {max(0.0, left):.0f} s of "
                      "--timeout are left")
    note(f"--refit: not applied: refitting should take {need:.0f} s and {max(0.0, left):.0f} s of --timeout are "
         "left; raise --timeout to refit")
    return False


def _extraction(ctx: Any, trials: list[Any], dirs: list[Path]) -> dict[Path, float]:
    """Seconds per item of extracting the features a refit of these trials must extract anew (those whose
    strategy reads cached features), timed on a few items of each trial's source."""
    return {model_dir: seconds_per_item(refit_source(ctx, TrialRecord.from_frozen(trial)), ctx.plan.dataset,
                                        device=ctx.plan.device, precision=ctx.plan.precision)
            for trial, model_dir in zip(trials, dirs, strict=True) if reads_cached_features(model_dir)}


def keep_every_trial(ctx: Any) -> bool:
    """Whether every completed trial's model is kept (the ensemble chooses among them), not only the best."""
    return bool(ctx.plan.config.ensemble)
