"""Leaderboards of a study: trials.csv, summary.csv, report.md and two plots.

Everything is rebuilt from the study itself (trials plus study attributes), so any worker,
or ``autotransfer leaderboard --storage URL --study-name NAME``, writes the same files.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..csvsafe import read_csv, write_csv
from ..sources import display_source
from ..strategies import SCRATCH_RECIPE
from . import plots
from .card import write_card
from .curves import curves_figure
from .pruner import BEHIND_SCRATCH, ScratchBaselinePruner
from .record import SCRATCH, StudyRecord, TrialRecord
from .rundir import replace_file

CURVES = "curves.png"  # every trial's validation curve, first in the report
TRIAL_COLUMNS = ["trial", "state", "role", "source", "provider", "strategy", "depth", "lr", "weight_decay",
                 "epochs_run", "val_score", "best_epoch", "baseline_val_same_epoch", "delta_vs_scratch",
                 "prune_reason", "stop_reason", "fail_reason", "seconds", "trainable_params", "precision"]
# what best/ is once the search has chosen (``final.improve``): the chosen trial, its refit, an ensemble
# or a soup; the summary's test_score is best/'s, test_score_single the chosen trial's as searched
FINAL_COLUMNS = ["exported", "test_score_single", "refit", "test_score_refit", "refit_seconds", "refit_train_items",
                 "ensemble_members", "ensemble_val_score", "ensemble_test_score", "inference_cost"]
SUMMARY_COLUMNS = ["data", "modality", "tasks", "n_train", "n_val", "n_test", "best_source", "strategy", "depth",
                   "lr", "val_score", "test_score", "scratch_val_score", "scratch_test_score", "delta_vs_scratch",
                   "negative_transfer", "negative_transfer_pruned", "n_trials", "n_pruned", "n_failed",
                   "total_seconds", "precision", "note", *FINAL_COLUMNS]
# a failed trial whose worker could not say why (Optuna's own heartbeat check fails it without a word)
NO_REASON = "no reason recorded: the worker running it stopped before the trial ended (killed, crashed or hung)"


def _config(t: FrozenTrial, record: TrialRecord) -> dict[str, Any]:
    if record.config is not None:  # what the trial actually trained (the baseline has no sampled params)
        c = record.config
        return {**c, "params": dict(c.get("params") or {})}
    # asked but not started yet (another worker may write reports meanwhile): what it was enqueued with
    fixed = record.fixed
    if fixed:  # a probe
        return {"source": fixed["source"], "strategy": fixed["strategy"], "lr": None, "weight_decay": None,
                "params": {}}
    if record.baseline_source:  # a scratch baseline
        return {"source": record.baseline_source, "strategy": SCRATCH_RECIPE.name, "lr": None,
                "weight_decay": None, "params": {}}
    p = t.params or t.system_attrs.get("fixed_params") or {}
    source = p.get("source")
    strategy = p.get(f"strategy@{source}", p.get("strategy"))
    out: dict[str, Any] = {"source": source, "strategy": strategy, "lr": p.get(f"{strategy}.lr"),
                           "weight_decay": p.get("weight_decay"), "params": {}}
    prefix = f"{strategy}."
    for k, v in p.items():
        if k.startswith(prefix) and k != f"{strategy}.lr":
            out["params"][k[len(prefix):].split("@")[0]] = v
    return out


def _reference(curves: list[dict[int, float]], last: int) -> float | None:
    """The best validation any scratch baseline had reached by epoch ``last`` (None: none had one)."""
    best = [max(v for e, v in c.items() if e <= last) for c in curves if min(c) <= last]
    return max(best) if best else None


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial (complete, pruned, failed, running), in trial order."""
    attrs = StudyRecord.from_study(study)
    scores: dict[str, dict[str, Any]] = attrs.scores if attrs.scores is not None else {}
    arch: dict[str, str] = attrs.architectures if attrs.architectures is not None else {}
    base_curves = ScratchBaselinePruner.baseline_curves(study)
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING:
            continue
        record = TrialRecord.from_frozen(t)
        cfg = _config(t, record)
        role = record.kind
        curve = t.intermediate_values
        val = t.value if t.state == TrialState.COMPLETE else (max(curve.values()) if curve else None)
        last = max(curve) if curve else None
        ref = _reference(base_curves, last) if last is not None else None
        params = dict(cfg["params"])
        row = {
            "trial": t.number,
            "state": t.state.name,
            "role": role,
            "source": "" if cfg["source"] is None else display_source(
                f"scratch:{arch.get(cfg['source'], cfg['source'])}" if role == SCRATCH else cfg["source"]),
            "provider": _or(record.provider, ""),
            "strategy": cfg["strategy"],
            "depth": params.pop("depth", None),
            "lr": cfg["lr"],
            "weight_decay": cfg["weight_decay"],
            "epochs_run": _or(record.epochs_run, len(curve)),
            "val_score": val,
            "best_epoch": _or(record.best_epoch, max(curve, key=curve.get) if curve else None),
            "baseline_val_same_epoch": None if role == SCRATCH else ref,
            "delta_vs_scratch": (val - ref) if (val is not None and ref is not None and role != SCRATCH) else None,
            "prune_reason": _or(record.prune_reason, "") if t.state == TrialState.PRUNED else "",
            "stop_reason": _or(record.cut_reason, "") if t.state == TrialState.COMPLETE else "",
            "fail_reason": (record.fail_reason or NO_REASON) if t.state == TrialState.FAIL else "",
            "seconds": record.seconds,
            "trainable_params": record.trainable_params,
            "precision": record.precision,  # resolved: bf16, fp16 or fp32
        }
        if role != SCRATCH:
            for k, v in scores.get(cfg["source"], {}).items():
                row[k] = v
        for k, v in params.items():
            row[k] = v
        for k, v in (record.task_scores or {}).items():
            row[f"val[{k}]"] = v
        rows.append(row)
    return rows


def _or(value: Any, default: Any) -> Any:
    """``value``, or ``default`` where the trial did not record it."""
    return default if value is None else value


def _columns(rows: list[dict[str, Any]], study: optuna.Study) -> list[str]:
    ests = list(StudyRecord.from_study(study).estimators or [])
    extra = sorted({k for r in rows for k in r} - set(TRIAL_COLUMNS) - set(ests))
    return TRIAL_COLUMNS + ests + extra


def summary_row(study: optuna.Study, rows: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    attrs = StudyRecord.from_study(study)
    ds = _or(attrs.dataset, {})
    by_num = {r["trial"]: r for r in rows}
    ans = by_num.get(extra["answer"], {})
    base = by_num.get(extra.get("baseline"), {}) if extra.get("baseline") is not None else {}
    tests = extra.get("tests", {})
    negative = bool(extra.get("negative"))
    n_behind = sum(1 for r in rows if r["prune_reason"] == BEHIND_SCRATCH)
    val, base_val = ans.get("val_score"), base.get("val_score")
    if negative:
        note = ("negative transfer detected for every source: no transfer trial beat the best scratch baseline "
                f"on validation, so the answer is the scratch model ({ans.get('source')})")
    elif not base:
        note = (f"{ans.get('source')} with {ans.get('strategy')} is the best transfer trial, but no scratch baseline "
                "completed (time budget or failures), so it was not checked against training from scratch")
    else:
        note = f"{ans.get('source')} with {ans.get('strategy')} beats scratch on validation"
    epochs = attrs.epochs
    if base and epochs and base.get("epochs_run") and int(base["epochs_run"]) < int(epochs):
        baseline = study.get_trials(deepcopy=False)[int(extra["baseline"])]
        cut = TrialRecord.from_frozen(baseline).cut_reason or "its share of the time budget"
        note += f" (the scratch baseline trained {int(base['epochs_run'])} of {int(epochs)} epochs: {cut})"
    return {
        "data": extra.get("data", _or(attrs.data, "")),
        "modality": ds.get("modality"),
        "tasks": ",".join(ds.get("tasks", [])),
        "n_train": ds.get("n_train"), "n_val": ds.get("n_val"), "n_test": ds.get("n_test"),
        "best_source": ans.get("source"), "strategy": ans.get("strategy"), "depth": ans.get("depth"),
        "lr": ans.get("lr"), "val_score": val, "test_score": tests.get(extra["answer"]),
        "scratch_val_score": base_val,
        "scratch_test_score": tests.get(extra.get("baseline")) if extra.get("baseline") is not None else None,
        "delta_vs_scratch": (val - base_val) if (val is not None and base_val is not None) else None,
        "negative_transfer": negative,
        "negative_transfer_pruned": n_behind,
        "n_trials": len(rows),
        "n_pruned": sum(r["state"] == "PRUNED" for r in rows),
        "n_failed": sum(r["state"] == "FAIL" for r in rows),
        "total_seconds": round(float(extra.get("seconds", 0.0)), 1),
        "precision": ans.get("precision"),
        "note": note,
        **(extra.get("final") or {}),  # may replace test_score with best/'s
    }


def write_reports(study: optuna.Study, ctx: Any, final: bool, extra: dict[str, Any] | None = None,
                  out_dir: Path | None = None) -> list[dict[str, Any]]:
    """Write trials.csv (always) and, when ``final``, summary.csv, report.md and the plots."""
    import pandas as pd

    out = Path(out_dir or ctx.plan.out_dir)
    lb = out / "leaderboards"
    lb.mkdir(parents=True, exist_ok=True)
    rows = trial_rows(study)
    table = pd.DataFrame(rows, columns=_columns(rows, study))
    replace_file(lb / "trials.csv", lambda tmp: write_csv(table, tmp))
    if final:
        if extra is not None:
            summary = summary_row(study, rows, extra)
            StudyRecord(summary=summary, answer=extra["answer"]).save(study)  # the plots star the answer
        else:
            summary = StudyRecord.from_study(study).summary
        if summary:
            replace_file(lb / "summary.csv",
                         lambda tmp: write_csv(pd.DataFrame([summary], columns=SUMMARY_COLUMNS), tmp))
            _plots(study, rows, out, ctx.pruner.margin if getattr(ctx, "pruner", None) else None)
            _markdown(out, summary, rows, study)
            write_card(out, study, summary, rows, read_transferability(out))  # best/README.md, with the export
    return rows


def read_summary(out_dir: Path) -> dict[str, Any]:
    row = read_csv(Path(out_dir) / "leaderboards" / "summary.csv").iloc[0].to_dict()
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


def read_transferability(out_dir: Path) -> list[dict[str, Any]]:
    path = Path(out_dir) / "leaderboards" / "transferability.csv"
    return read_csv(path).to_dict("records") if path.exists() else []


def _plots(study: optuna.Study, rows: list[dict[str, Any]], out: Path, margin: float | None) -> None:
    attrs = StudyRecord.from_study(study)
    primary = _or(attrs.primary, "logme")
    scores = {display_source(k): v for k, v in _or(attrs.scores, {}).items()}  # rows show names
    answer = attrs.answer
    plots.save(plots.transferability_figure(scores, primary, rows), out / "transferability_vs_val.png")
    plots.save(plots.history_figure(rows, answer), out / "history.png")
    if margin is None:  # a rebuilt report: the margin the study was searched with (older studies: the default)
        margin = (attrs.pruner or {}).get("margin", ScratchBaselinePruner().margin)
    plots.save(curves_figure(study.get_trials(deepcopy=False), rows, margin, answer), out / CURVES)


def _md_table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    def f(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(f(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _searched_md(study: optuna.Study) -> list[str]:
    """What the search covered: per group of sources alike, the strategies searched and those that
    could not apply (with why), so a default strategy skipped without a warning is still on record."""
    attrs = StudyRecord.from_study(study)
    searched: dict[str, dict[str, Any]] = attrs.searched or {}
    if not searched:
        return []
    tuned = set(attrs.sources or [])
    groups: dict[str, list[str]] = {}
    for source, entry in searched.items():
        line = ", ".join(f"`{t}`" for t in entry.get("strategies", [])) or "none"
        for strat, why in sorted((entry.get("skipped") or {}).items()):
            why = why.removeprefix(f"strategy {strat!r} ").replace(f"{source!r} has", "it has")
            line += f"; `{strat}` not applicable: {why}"
        groups.setdefault(line, []).append(f"`{source}`" + (" (fine-tuned)" if source in tuned else " (probe only)"))
    lines = ["## What was searched", "",
             f"{len(searched)} ranked source(s) probed, the top {len(tuned)} fine-tuned.", ""]
    lines += [f"- {', '.join(names)}: {line}" for line, names in groups.items()]
    return [*lines, ""]


def _final_md(summary: dict[str, Any]) -> list[str]:
    """What best/ is (the chosen trial, its refit, an ensemble or a soup) and the test scores of each."""
    exported = summary.get("exported")
    if not exported:  # a summary written before --refit and --ensemble
        return []

    def num(key: str) -> str:
        v = summary.get(key)
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"

    lines = [f"**Exported as best/:** {exported}; the chosen trial as searched: test {num('test_score_single')}."]
    if num("test_score_refit"):
        lines.append(f"Refit on train + val ({summary.get('refit_train_items')} items, "
                     f"{summary.get('refit_seconds')} s): test {num('test_score_refit')}.")
    if summary.get("refit"):
        lines.append(f"Refit: {summary['refit']}.")
    if summary.get("ensemble_members"):
        lines.append(f"Ensemble of {summary['ensemble_members']}: validation {num('ensemble_val_score')}"
                     + (f", test {num('ensemble_test_score')}" if num("ensemble_test_score") else "")
                     + (f", inference cost {summary['inference_cost']:.2f}x the chosen trial's"
                        if num("inference_cost") else "") + ".")
    return [" ".join(lines), ""]


def _markdown(out: Path, summary: dict[str, Any], rows: list[dict[str, Any]], study: optuna.Study) -> None:
    trans = read_transferability(out)
    t_cols = [c for c in (trans[0].keys() if trans else []) if not c.startswith("rank_") and c not in ("notes",)]
    text = [
        "# autotransfer report", "",
        f"**Answer:** `{summary['best_source']}` with `{summary['strategy']}`"
        + (f" (depth {summary['depth']})" if summary.get("depth") not in (None, "") else "")
        + f", validation {summary['val_score']:.4f}"
        + (f", test {summary['test_score']:.4f}" if summary.get("test_score") is not None else "")
        + (f"; scratch baseline validation {summary['scratch_val_score']:.4f}"
           if summary.get("scratch_val_score") is not None else "")
        + (f", test {summary['scratch_test_score']:.4f}" if summary.get("scratch_test_score") is not None else "")
        + ".", "",
        summary["note"] + ".", "",
        *_final_md(summary),
        f"![learning curves]({CURVES})", "",
        f"{summary['n_trials']} trials: {summary['n_pruned']} pruned "
        f"({summary['negative_transfer_pruned']} behind scratch), {summary['n_failed']} failed; "
        f"{summary['total_seconds']} s in all.", "",
        *_searched_md(study),
        "## Transferability", "", _md_table(trans, t_cols) if trans else "(none)", "",
        "## Trials", "", _md_table(rows, [c for c in TRIAL_COLUMNS if c not in ("fail_reason",)]), "",
        "![transferability vs validation](transferability_vs_val.png)", "",
        "![optimisation history](history.png)", "",
    ]
    report = "\n".join(text)
    names = {str(r.get("source")) for r in [*rows, *trans]} | {str(summary.get("best_source"))}
    for name in sorted(names, key=len, reverse=True):  # longest first: one name may contain another
        report = report.replace(name, display_source(name))
    replace_file(out / "report.md", lambda tmp: tmp.write_text(report))
