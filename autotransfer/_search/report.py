"""Leaderboards of a study: trials.csv, summary.csv, report.md and two plots; the answer's weak spots
on test (confusion.csv, per_class.csv); the probes' scores in transferability.csv.

Everything is rebuilt from the study itself (trials plus study attributes), so any worker,
or ``autotransfer leaderboard --storage URL --study-name NAME``, writes the same files.

Every score is the study's metric, higher is better (a loss negated), and every ``X_score`` column
has its 95% interval beside it, ``X_low`` and ``X_high`` (Wilson's for one task's accuracy, else the
stratified bootstrap's: ``metrics.scored``); a validation score also has ``X_se``, the standard error
the kept-epoch rule uses.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from .._evaluate import TaskScores, confusion_rows, per_class_rows
from ..csvsafe import read_csv, write_csv
from ..metrics import Scored, get_metric
from ..sources import display_source
from ..strategies import SCRATCH_RECIPE
from . import plots
from .answer import comparison_columns, describe
from .card import write_card
from .curves import curves_figure
from .pruner import BEHIND_SCRATCH, ScratchBaselinePruner
from .record import SCRATCH, StudyRecord, TrialRecord
from .rundir import replace_file

CURVES = "curves.png"  # every trial's validation curve, first in the report
TRIAL_COLUMNS = ["trial", "state", "role", "source", "provider", "strategy", "depth", "lr", "weight_decay",
                 "epochs_run", "val_score", "val_low", "val_high", "val_se", "best_epoch", "baseline_val_same_epoch",
                 "delta_vs_scratch", "prune_reason", "stop_reason", "fail_reason", "seconds", "trainable_params",
                 "precision"]
# what best/ is once the search has chosen (``final.improve``): the chosen trial, its refit, an ensemble
# or a soup; the summary's test_score is best/'s, test_score_single the chosen trial's as searched
FINAL_COLUMNS = ["exported", "test_score_single", "test_single_low", "test_single_high", "completed", "refit",
                 "test_score_refit",
                 "test_refit_low", "test_refit_high", "refit_seconds", "refit_train_items",
                 "ensemble_members", "ensemble_val_score", "ensemble_val_low", "ensemble_val_high",
                 "ensemble_test_score", "ensemble_test_low", "ensemble_test_high", "inference_cost",
                 "ensemble_seconds"]
SUMMARY_COLUMNS = ["data", "modality", "tasks", "n_train", "n_val", "n_test", "metric", "metric_reason",
                   "best_source", "strategy", "depth", "lr", "val_score", "val_low", "val_high", "val_se",
                   "test_score", "test_low", "test_high", "scratch_val_score", "scratch_val_low", "scratch_val_high",
                   "scratch_test_score", "scratch_test_low", "scratch_test_high", "delta_vs_scratch",
                   "runner_up", "runner_up_diff", "runner_up_diff_se", "within_se",
                   "negative_transfer", "negative_transfer_pruned", "n_trials", "n_pruned", "n_failed",
                   "total_seconds", "precision", "note", *FINAL_COLUMNS]
PROBE_COLUMNS = ["probe_val_score", "probe_val_low", "probe_val_high"]  # transferability.csv: each source's probe
CONFUSION, PER_CLASS = "confusion.csv", "per_class.csv"  # the answer on test, in leaderboards/
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
        low, high, se = record.val_interval if record.val_interval and val is not None else (None, None, None)
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
            "val_low": low,
            "val_high": high,
            "val_se": se,
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
            low, high = (record.task_intervals or {}).get(k, (None, None))
            row[f"val[{k}]_low"], row[f"val[{k}]_high"] = low, high
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
    tests: dict[int, Scored | float | None] = extra.get("tests", {})
    test, base_test = tests.get(extra["answer"]), tests.get(extra.get("baseline"))
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
    metric = get_metric(attrs.selection_metric)
    chosen = extra.get("chosen")
    compared = describe(chosen, metric.score_title) if chosen is not None else ""
    if compared:
        note += f"; {compared}"
    return {
        "data": extra.get("data", _or(attrs.data, "")),
        "modality": ds.get("modality"),
        "tasks": ",".join(ds.get("tasks", [])),
        "n_train": ds.get("n_train"), "n_val": ds.get("n_val"), "n_test": ds.get("n_test"),
        "metric": metric.name, "metric_reason": attrs.metric_reason or f"{metric.title}: the study's",
        "best_source": ans.get("source"), "strategy": ans.get("strategy"), "depth": ans.get("depth"),
        "lr": ans.get("lr"), "val_score": val, "val_low": ans.get("val_low"), "val_high": ans.get("val_high"),
        "val_se": ans.get("val_se"), **_scored("test", test),
        "scratch_val_score": base_val, "scratch_val_low": base.get("val_low"), "scratch_val_high": base.get("val_high"),
        **_scored("scratch_test", base_test),
        "delta_vs_scratch": (val - base_val) if (val is not None and base_val is not None) else None,
        **(comparison_columns(chosen) if chosen is not None else {}),
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


def _scored(prefix: str, band: Scored | float | None) -> dict[str, float | None]:
    """``{prefix}_score``, ``{prefix}_low`` and ``{prefix}_high`` of a test score (None: not measured; a bare
    number: no interval)."""
    if not isinstance(band, Scored):
        return {f"{prefix}_score": band, f"{prefix}_low": None, f"{prefix}_high": None}
    return {f"{prefix}_score": band.value, f"{prefix}_low": band.low, f"{prefix}_high": band.high}


def probe_rows(study: optuna.Study) -> dict[str, dict[str, float]]:
    """Each source's best completed probe on validation, with its interval: ``PROBE_COLUMNS`` by source."""
    best: dict[str, tuple[float, list[float] | None]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        record = TrialRecord.from_frozen(t)
        if record.fixed and t.value is not None and t.value > best.get(record.fixed["source"], (-math.inf,))[0]:
            best[record.fixed["source"]] = (t.value, record.val_interval)
    return {s: dict(zip(PROBE_COLUMNS, (v, *(interval or (None, None))[:2]), strict=True))
            for s, (v, interval) in best.items()}


def _with_probes(study: optuna.Study, lb: Path) -> None:
    """transferability.csv with each source's probe validation score and its interval (once a probe finished)."""
    import pandas as pd

    path = lb / "transferability.csv"
    probes = probe_rows(study)
    if not probes or not path.exists():
        return
    table = read_csv(path)
    for col in PROBE_COLUMNS:
        table[col] = [probes.get(str(s), {}).get(col) for s in table["source"]]
    cols = [c for c in table.columns if c not in PROBE_COLUMNS]
    at = cols.index("rank") if "rank" in cols else len(cols)  # beside the estimators' scores, before the ranks
    at = min([at, *(cols.index(c) for c in cols if c.startswith("rank_"))])
    table = pd.DataFrame(table, columns=[*cols[:at], *PROBE_COLUMNS, *cols[at:]])
    replace_file(path, lambda tmp: write_csv(table, tmp))


def weak_spots(study: optuna.Study) -> list[TaskScores]:
    """The answer's scores on test per task, from its confusion matrices ([] when it was not tested here)."""
    confusion = StudyRecord.from_study(study).test_confusion or {}
    return [TaskScores.from_confusion(task, v["classes"], v["confusion"]) for task, v in confusion.items()]


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
    _with_probes(study, lb)
    if final:
        if extra is not None:
            summary = summary_row(study, rows, extra)
            StudyRecord(summary=summary, answer=extra["answer"]).save(study)  # the plots star the answer
        else:
            summary = StudyRecord.from_study(study).summary
        if summary:
            replace_file(lb / "summary.csv",
                         lambda tmp: write_csv(pd.DataFrame([summary], columns=SUMMARY_COLUMNS), tmp))
            tasks = weak_spots(study)
            for name, frame in ((CONFUSION, confusion_rows(tasks)), (PER_CLASS, per_class_rows(tasks))):
                if frame:
                    replace_file(lb / name, lambda tmp, frame=frame: write_csv(pd.DataFrame(frame), tmp))
                else:  # an earlier answer's: not the model this summary describes
                    (lb / name).unlink(missing_ok=True)
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


def md_table(rows: list[dict[str, Any]], cols: list[str]) -> str:
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
    if summary.get("completed"):
        lines.append(f"The chosen probe, solved on ranking's subsample: {summary['completed']}.")
    if summary.get("refit"):
        lines.append(f"Refit: {summary['refit']}.")
    if summary.get("ensemble_members") and not num("ensemble_val_score"):
        lines.append(f"Ensemble: {summary['ensemble_members']}.")
    elif summary.get("ensemble_members"):
        lines.append(f"Ensemble of {summary['ensemble_members']}: validation {num('ensemble_val_score')}"
                     + (f", test {num('ensemble_test_score')}" if num("ensemble_test_score") else "")
                     + (f", inference cost {summary['inference_cost']:.2f}x the chosen trial's"
                        if num("inference_cost") else "") + ".")
    return [" ".join(lines), ""]


def interval_text(value: Any, low: Any, high: Any) -> str:
    """``0.951 (0.92–0.97)``: a score and its 95% interval (the bare score when the interval is missing)."""
    if _missing(value):
        return ""
    return f"{value:.3f}" + ("" if _missing(low) or _missing(high) else f" ({low:.2f}–{high:.2f})")


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def exported_note(summary: dict[str, Any]) -> str:
    """`` (refit on train + val; as searched 0.965)`` after a test score that is best/'s when best/ is not the
    chosen trial as searched; empty otherwise."""
    exported = str(summary.get("exported") or "single")
    single = summary.get("test_score_single")
    if exported == "single" or _missing(single):
        return ""
    what = {"refit": "refit on train + val", "ensemble": "an ensemble of trials", "soup": "a soup of trials",
            "completed": "re-solved on every training item",
            "refit ensemble": "an ensemble of trials, each refit on train + val",
            "refit soup": "a soup of trials, each refit on train + val"}.get(exported, exported)
    return f" ({what}; as searched {single:.3f})"


def _answer_md(summary: dict[str, Any]) -> list[str]:
    """The answer line, every score with its interval, and the metric that chose it (and why)."""
    s = summary
    line = (f"**Answer:** `{s['best_source']}` with `{s['strategy']}`"
            + (f" (depth {s['depth']})" if s.get("depth") not in (None, "") else "")
            + f": validation {interval_text(s['val_score'], s.get('val_low'), s.get('val_high'))}"
            + (f", test {interval_text(s['test_score'], s.get('test_low'), s.get('test_high'))}{exported_note(s)}"
               if not _missing(s.get("test_score")) else "")
            + (f"; scratch baseline validation "
               f"{interval_text(s['scratch_val_score'], s.get('scratch_val_low'), s.get('scratch_val_high'))}"
               if not _missing(s.get("scratch_val_score")) else "")
            + (f", test {interval_text(s['scratch_test_score'], s.get('scratch_test_low'), s.get('scratch_test_high'))}"
               if not _missing(s.get("scratch_test_score")) else "") + ".")
    metric = get_metric(s.get("metric") or "accuracy")
    chose = (f"Every score is {metric.score_title} (the mean over tasks where there are several; 95% intervals in "
             f"brackets). Chosen by {s.get('metric_reason') or metric.title}.")
    return [line, "", chose, ""]


def _weak_spots_md(tasks: list[TaskScores]) -> list[str]:
    """Per-class recall and the confusion matrix of the answer on test (leaderboards/per_class.csv, confusion.csv)."""
    if not tasks:
        return []
    lines = ["## Weak spots: the answer on test", "",
             f"Per class (leaderboards/{PER_CLASS}) and the confusion matrix, rows the true class and columns the "
             f"predicted one (leaderboards/{CONFUSION}); the lowest recall first.", ""]
    for t in tasks:
        if len(tasks) > 1:
            lines += [f"### Task `{t.name}`", ""]
        order = sorted(t.classes, key=lambda c: (t.per_class[c]["recall"], t.classes.index(c)))
        lines += [md_table([{"class": c, **t.per_class[c]} for c in order],
                            ["class", "recall", "precision", "f1", "support"]), ""]
        lines += [md_table([{"true ↓ predicted →": c, **{p: t.confusion[i][j] for j, p in enumerate(t.classes)}}
                             for i, c in enumerate(t.classes)], ["true ↓ predicted →", *t.classes]), ""]
    return lines


def _markdown(out: Path, summary: dict[str, Any], rows: list[dict[str, Any]], study: optuna.Study) -> None:
    trans = read_transferability(out)
    t_cols = [c for c in (trans[0].keys() if trans else []) if not c.startswith("rank_") and c not in ("notes",)]
    text = [
        "# autotransfer report", "",
        *_answer_md(summary),
        summary["note"] + ".", "",
        *_final_md(summary),
        f"![learning curves]({CURVES})", "",
        f"{summary['n_trials']} trials: {summary['n_pruned']} pruned "
        f"({summary['negative_transfer_pruned']} behind scratch), {summary['n_failed']} failed; "
        f"{summary['total_seconds']} s in all.", "",
        *_weak_spots_md(weak_spots(study)),
        *_searched_md(study),
        "## Transferability", "", md_table(trans, t_cols) if trans else "(none)", "",
        "## Trials", "", md_table(rows, [c for c in TRIAL_COLUMNS if c not in ("fail_reason",)]), "",
        "![transferability vs validation](transferability_vs_val.png)", "",
        "![optimisation history](history.png)", "",
    ]
    report = "\n".join(text)
    names = {str(r.get("source")) for r in [*rows, *trans]} | {str(summary.get("best_source"))}
    for name in sorted(names, key=len, reverse=True):  # longest first: one name may contain another
        report = report.replace(name, display_source(name))
    replace_file(out / "report.md", lambda tmp: tmp.write_text(report))
