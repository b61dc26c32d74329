"""best/README.md: the exported model's card, in the Hugging Face model-card layout.

YAML front matter (library, tags, and a ``model-index`` with the validation and test scores), then
prose: what the model is, the data it learned from, what it was chosen over, its scores with 95%
intervals (summary.csv's: Wilson's for one task's accuracy, else the stratified bootstrap's), how to
load it, and its limits. Every number comes from the study and summary.csv, so a rebuilt report
writes the same card.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..metrics import Metric, get_metric, wilson_interval
from ..sources import display_source
from .record import SCRATCH, StudyRecord, TrialRecord
from .rundir import replace_file

CARD = "README.md"
TOP_ROWS = 5  # rows of the transferability table shown


def _metric(summary: dict[str, Any]) -> Metric:
    return get_metric(summary.get("metric") or "accuracy")  # a summary from before the metric: accuracy


def _interval(summary: dict[str, Any], prefix: str) -> tuple[float, float] | None:
    """``{prefix}_low``/``_high`` of the summary; for an older summary of accuracy, Wilson's from the score."""
    low, high = summary.get(f"{prefix}_low"), summary.get(f"{prefix}_high")
    if not _nan(low) and not _nan(high):
        return float(low), float(high)
    value, n = summary.get(f"{prefix}_score"), summary.get(f"n_{'val' if prefix.endswith('val') else 'test'}")
    if _metric(summary).name == "accuracy" and not _nan(value) and n and len(str(summary.get("tasks") or "").split(",")) == 1:
        return wilson_interval(round(float(value) * int(n)), int(n))
    return None


def _score(summary: dict[str, Any], prefix: str, n: int | None) -> str:
    value = summary.get(f"{prefix}_score")
    if _nan(value):
        return "not measured"
    interval = _interval(summary, prefix)
    if interval is None:
        return f"{value:.4f}"
    return f"{value:.4f} (95% interval {interval[0]:.3f}–{interval[1]:.3f}, n = {n})"


def _front_matter(summary: dict[str, Any], config: dict[str, Any], name: str) -> str:
    import yaml

    task = f"{summary.get('modality') or config.get('modality') or 'image'}-classification"
    metric = _metric(summary)
    results = [{"task": {"type": task}, "dataset": {"name": name, "type": name, "split": split},
                "metrics": [{"type": metric.name, "value": float(metric.oriented(summary[key])),  # a loss as a loss
                             "name": f"{split} {metric.title}"}]}
               for split, key in (("validation", "val_score"), ("test", "test_score")) if summary.get(key) is not None]
    front: dict[str, Any] = {
        "library_name": "autotransfer",
        "pipeline_tag": task,
        "tags": [t for t in ("autotransfer", "transfer-learning", task, summary.get("strategy"),
                             config.get("architecture")) if t],
        "metrics": [metric.name],
    }
    source = str(config.get("source") or "")
    if source.startswith("hf:") and not source[3:].startswith(("/", ".", "~")):
        front["base_model"] = source[3:].split("?")[0]  # a Hub id, never a local path
    front["model-index"] = [{"name": f"{name}-{summary.get('best_source')}-{summary.get('strategy')}",
                             "results": results}]
    return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n"


def _model_md(summary: dict[str, Any], config: dict[str, Any], answer: Any) -> list[str]:
    record = TrialRecord.from_frozen(answer) if answer is not None else TrialRecord()
    params = dict((record.config or {}).get("params") or {})
    lines = ["## Model", "",
             f"- source: `{summary.get('best_source')}` (architecture `{config.get('architecture') or '?'}`, "
             f"{config.get('modality') or summary.get('modality')})",
             f"- strategy: `{summary.get('strategy')}`"
             + (f", {', '.join(f'{k} {v}' for k, v in sorted(params.items()))}" if params else "")
             + (f", learning rate {summary['lr']:.3g}" if summary.get("lr") is not None else "")]
    if record.trainable_params is not None:
        total = record.total_params if record.total_params is not None else 0
        lines.append(f"- parameters: {record.trainable_params:,} trained of {total:,}")
    if record.epochs_run is not None:
        kept = record.best_epoch if record.best_epoch is not None else 0
        lines.append(f"- trained {record.epochs_run} epoch(s), keeping epoch {int(kept) + 1} "
                     f"(the best on validation); precision {summary.get('precision') or 'fp32'}")
    for task in config.get("tasks", []):
        lines.append(f"- task `{task['name']}`: {len(task['classes'])} classes: "
                     + ", ".join(f"`{c}`" for c in task["classes"]))
    return [*lines, ""]


def _data_md(summary: dict[str, Any], data: dict[str, Any], name: str, fingerprint: str) -> list[str]:
    lines = ["## Data", "",  # its name, not its path: the card travels, the training machine's folders do not
             f"`{name}`, fingerprint `{fingerprint or 'not recorded'}` (sha256 over the items, their "
             "labels and the split). "
             f"Items per split: train {summary.get('n_train')}, validation {summary.get('n_val')}, "
             f"test {summary.get('n_test')}.", ""]
    counts: dict[str, dict[str, dict[str, int]]] = data.get("counts") or {}
    splits = [s for s in ("train", "val", "test") if s in counts]
    for task in (data.get("tasks") or []):
        classes = list(dict.fromkeys(c for s in splits for c in counts[s].get(task, {})))
        if not classes:
            continue
        lines += [f"Items per class (task `{task}`):", "", "| class | " + " | ".join(splits) + " |",
                  "|---|" + "---:|" * len(splits)]
        lines += [f"| `{c}` | " + " | ".join(str(counts[s][task].get(c, 0)) for s in splits) + " |" for c in classes]
        lines.append("")
    return lines


def _chosen_md(summary: dict[str, Any], trans: list[dict[str, Any]], primary: str,
               probes: dict[str, float], scratch: str) -> list[str]:
    """The transferability table's top rows (with each source's solved probe), and the scratch baseline."""
    lines = ["## What it was chosen over", ""]
    ranked = sorted((r for r in trans if r.get("rank") is not None and not _nan(r.get("rank"))),
                    key=lambda r: r["rank"])[:TOP_ROWS]
    if ranked:
        probe = {display_source(k): v for k, v in probes.items()}
        lines += [f"Sources ranked by transferability ({primary}; top {len(ranked)} of {len(trans)}), each with its "
                  f"linear probe's validation {_metric(summary).score_title}:", "",
                  f"| rank | source | {primary} | probe validation |", "|---:|---|---:|---:|"]
        for r in ranked:
            name = display_source(str(r["source"]))
            score = r.get(primary)
            lines.append(f"| {int(r['rank'])} | `{name}` | {'' if _nan(score) else f'{score:.4g}'} | "
                         f"{'' if probe.get(name) is None else f'{probe[name]:.4f}'} |")
        lines.append("")
    if summary.get("scratch_val_score") is not None:
        lines.append(f"The best scratch baseline, `{scratch}` from random initialisation (what every trial was "
                     f"checked against), reached validation {summary['scratch_val_score']:.4f}"
                     + (f" and test {summary['scratch_test_score']:.4f}"
                        if summary.get("scratch_test_score") is not None else "") + ".")
    else:
        lines.append("No scratch baseline completed, so this model was not checked against training from scratch.")
    lines += ["", f"{summary.get('n_trials')} trials ({summary.get('n_pruned')} pruned, {summary.get('n_failed')} "
              f"failed) in {summary.get('total_seconds')} s. {str(summary.get('note') or '')[:1].upper()}"
              f"{str(summary.get('note') or '')[1:]}.", ""]
    return lines


def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _combined(summary: dict[str, Any]) -> bool:
    """Whether best/ is an ensemble or a soup of several trials (refit or not)."""
    return str(summary.get("exported") or "").removeprefix("refit ") in ("ensemble", "soup")


def _final_md(summary: dict[str, Any]) -> list[str]:
    """What best/ is when it is not the chosen trial as searched: a refit, an ensemble or a soup."""
    exported = str(summary.get("exported") or "single")
    if exported == "single":
        return []
    lines = ["## What this folder holds", ""]
    if _combined(summary):
        kind = "weight-space average (soup)" if exported.endswith("soup") else "weighted ensemble"
        cost = summary.get("inference_cost")
        lines.append(f"A {kind} of the search's trials {summary.get('ensemble_members')}, chosen on validation by "
                     "greedy ensemble selection; the model section below describes the chosen single trial"
                     + ("" if _nan(cost) else f". Inference cost: {float(cost):.2f}x that trial's") + ".")
    if summary.get("completed") and not str(summary["completed"]).startswith("not applied"):
        lines.append("The chosen probe was solved during the search on ranking's stratified subsample of the "
                     "training split (what ranking's share of the time budget could extract); this model is the "
                     f"same probe {summary['completed']}.")
    if exported.startswith("refit"):
        what = "Every member was" if _combined(summary) else "The chosen configuration was"
        lines.append(f"{what} retrained on train + validation ({summary.get('refit_train_items')} items) once the "
                     "search had chosen it: the same source, strategy, parameters, seed and learning-rate "
                     "schedule, stopped at the kept epoch. The validation items were training items for this "
                     "model, so the validation score below is the one that chose it, before the refit.")
    single = summary.get("test_score_single")
    if not _nan(single):
        lines.append(f"The chosen trial as searched scored {float(single):.4f} on test; this model's test score is "
                     "below.")
    return [" ".join(lines), ""]


def _scores_md(summary: dict[str, Any]) -> list[str]:
    metric = _metric(summary)
    val = "ensemble_val" if _combined(summary) and not _nan(summary.get("ensemble_val_score")) else "val"
    return ["## Scores", "",
            f"{metric.score_title[:1].upper()}{metric.score_title[1:]} (the mean over tasks when there are several), "
            "with 95% intervals (Wilson's for one task's accuracy, a stratified bootstrap's otherwise); chosen by "
            f"{summary.get('metric_reason') or metric.title}:", "",
            f"- validation: {_score(summary, val, summary.get('n_val'))} — the split that chose this "
            "model among all trials, so it is optimistic",
            f"- test: {_score(summary, 'test', summary.get('n_test'))} — measured once, after the choice",
            ""]


def _use_md(modality: str) -> list[str]:
    items = "image paths" if modality == "image" else "texts"
    return ["## How to use", "",
            "This folder is self-contained (weights, configuration, preprocessing). With autotransfer installed:",
            "", "```python", "import autotransfer", "",
            'model = autotransfer.load_model("best")  # this folder',
            f"labels = model.predict_names(items)  # items: a list of {items}; one label per task each",
            "```", "", "or from the command line:", "", "```",
            "autotransfer predict --model best --data NEW_ITEMS --out predictions.csv",
            "autotransfer evaluate --model best --data LABELLED_ITEMS",
            f"autotransfer export --model best --format {_export_formats(modality)} --out EXPORTED  # plain libraries",
            "```", ""]


def _export_formats(modality: str) -> str:
    """The ``export`` formats to name for this modality (a multi-task model fits onnx only; export says so)."""
    return "timm|onnx" if modality == "image" else "transformers|onnx" if modality == "text" else "onnx"


def _limits_md(summary: dict[str, Any], config: dict[str, Any]) -> list[str]:
    classes = sum(len(t["classes"]) for t in config.get("tasks", []))
    return ["## Limits", "",
            f"- Learned from {summary.get('n_train')} training items and chosen on {summary.get('n_val')} validation "
            f"items; its test score rests on {summary.get('n_test')} items, so the intervals above are wide when "
            "those are small.",
            f"- It knows only the {classes} class(es) listed above: every input gets one of them, even one that "
            "belongs to none.",
            "- Its scores hold for data like the data above; no claim is made for other sources of items.",
            "- The probabilities it outputs are not calibrated: no calibration was measured or applied.", ""]


def _intro(modality: str, negative: bool) -> str:
    kind = f"{'An' if modality[:1] in tuple('aeiou') else 'A'} {modality} classifier chosen by `autotransfer search`"
    if negative:
        return (f"{kind}, trained from scratch: no searched pretrained source and transfer strategy beat training "
                "from scratch on validation (negative transfer), so this is the scratch model.")
    return (f"{kind}: the best of the searched pretrained sources and transfer strategies on validation, never "
            "worse there than training from scratch.")


def write_card(out: Path, study: Any, summary: dict[str, Any], rows: list[dict[str, Any]],
               trans: list[dict[str, Any]]) -> Path | None:
    """Write ``out/best/README.md`` for the exported model; None when this run has no ``best/``."""
    best = Path(out) / "best"
    if not (best / "config.json").is_file():
        return None
    config = json.loads((best / "config.json").read_text())
    attrs = StudyRecord.from_study(study)
    data = attrs.dataset or {}
    name = str(data.get("name") or Path(str(summary.get("data") or "data")).name)
    answer = next((t for t in study.get_trials(deepcopy=False) if t.number == attrs.answer), None)
    trained = (TrialRecord.from_frozen(answer).config or {}) if answer is not None else {}
    combined = _combined(summary) and (config.get("members") or config.get("soup"))
    if not combined and trained and (trained.get("source"), trained.get("strategy")) != (
            config.get("source_name"), config.get("strategy")):
        return None  # best/ holds an older run's model (this answer was trained on another worker): no card for it
    title = f"# {summary.get('best_source')} + {summary.get('strategy')} for `{name}`"
    modality = str(summary.get("modality") or config.get("modality") or "image")
    bases = [r for r in rows if r["role"] == SCRATCH and r["state"] == "COMPLETE" and r["val_score"] is not None]
    scratch = max(bases, key=lambda r: r["val_score"])["source"] if bases else ""
    text = "\n".join([
        _front_matter(summary, config, name), title, "",
        _intro(modality, bool(summary.get("negative_transfer"))),
        "", *_final_md(summary), *_model_md(summary, config, answer), *_data_md(summary, data, name, str(attrs.fingerprint or "")),
        *_chosen_md(summary, trans, str(attrs.primary if attrs.primary is not None else "logme"),
                    attrs.probe_scores or {}, scratch),
        *_scores_md(summary), *_use_md(modality),
        *_limits_md(summary, config)])
    replace_file(best / CARD, lambda tmp: tmp.write_text(text))
    return best / CARD
