"""The final model, measured: the single best trial, its refit, the ensemble and the refit ensemble on
the suite's tasks, side by side at the same search seeds; and on the imbalanced task, the pick chosen by
accuracy against the pick chosen by ``auto``.

For each task and search seed, two searches with that seed and the suite's settings (sources, epochs,
top-k 3, default trials and strategies, CPU):

* **A** ``refit="on", ensemble=0``: the chosen trial tested as searched (``test_score_single``) and
  refit on train + val (``test_score_refit``, ``refit_seconds``);
* **B** ``refit="on", ensemble=N``: the greedy ensemble of the completed trials chosen on validation
  (``ensemble_test_score``; the single trial when no ensemble beats it on validation) and that ensemble
  with every member refit (``test_score_refit``).

A and B run the same search (same seed): the benchmark checks that both chose the same trial. Scores are
in the search's metric (accuracy on the balanced tasks; balanced accuracy on ``imbalanced``, where
``auto`` resolves to it). Inference cost: the ensemble's parameters over the chosen trial's (the
search's ``inference_cost``) and the measured seconds of predicting the test split with each.

On ``imbalanced`` a third search, **C** ``metric="accuracy"``, chooses by plain accuracy; each pick's
test balanced accuracy is computed from its model, beside the grid's best by validation balanced
accuracy (``suite.run_grid``, every grid config at each seed).

    python benchmarks/bench_final.py                         # every small task, 3 seeds
    python benchmarks/bench_final.py --tasks digits10 --seeds 1 --out /tmp/f

Writes ``OUT/bench_final.csv`` (one row per task and seed), ``OUT/bench_final_summary.csv`` (mean and
std over seeds per task and variant, and over the tasks) and ``OUT/bench_final_imbalanced.csv``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import suite  # noqa: E402  (the suite's tasks, data and grid)

SMALL_TASKS = ("digits10", "digits50", "invert", "rotate", "imbalanced", "imbalanced20", "bbc", "imagenet")
VARIANTS = ("single", "refit", "ensemble", "refit_ensemble")
ROW_COLUMNS = ["task", "seed", "metric", "pick", "same_pick", *(f"test_{v}" for v in VARIANTS), "exported_b",
               "ensemble_members", "inference_cost", "predict_seconds_single", "predict_seconds_final",
               "predict_ratio", "refit_seconds", "refit_ensemble_seconds", "ensemble_seconds", "search_seconds",
               "n_trials"]


def _search(task: suite.Task, work: Path, name: str, seed: int, **options: Any) -> Any:
    import autotransfer

    strategies = list(task.strategies) if task.strategies else None
    return autotransfer.search(task.data, out=work / name, sources=list(task.sources.values()),
                               epochs=task.epochs, strategies=strategies, device="cpu",
                               cache_dir=str(work / "cache"), progress=False, seed=seed, top_k=suite.TOP_K,
                               **options)


def _predict_seconds(model_dir: Path, items: list[str]) -> float:
    """Seconds to load ``model_dir`` and predict ``items`` on the CPU (the better of two runs)."""
    from autotransfer.loading import load_model

    model = load_model(model_dir, device="cpu")
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        model.predict(items)
        best = min(best, time.perf_counter() - t0)
    return best


def _chosen_dir(run: Path) -> Path:
    """The chosen trial's saved model in search A's run folder (the one refit_N names)."""
    refit = next((run / "trials").glob("refit_*"))
    return run / "trials" / f"trial_{refit.name.split('_')[1]}"


def _num(v: Any) -> float:
    return float("nan") if v is None or v == "" else float(v)


def variant_row(task: suite.Task, work: Path, seed: int, size: int, log) -> dict[str, Any]:
    """One task and seed: searches A and B, their four test scores, costs and inference timings."""
    from autotransfer.datasets import load

    a = _search(task, work, f"a{seed}", seed, refit="on", ensemble=0)
    t0 = time.perf_counter()
    b = _search(task, work, f"b{seed}", seed, refit="on", ensemble=size)
    sa, sb = a.summary, b.summary
    won = str(sb.get("exported", "")).startswith("refit ")  # an ensemble (or soup) beat the single trial
    test_items = list(load(task.data).split_items("test"))
    single_s = _predict_seconds(_chosen_dir(a.out_dir), test_items)
    final_s = _predict_seconds(b.best_dir, test_items)
    row = {"task": task.name, "seed": seed, "metric": sa["metric"],
           "pick": f"{sa['best_source']} {sa['strategy']}", "same_pick": _same_pick(sa, sb),
           "test_single": _num(sa["test_score_single"]), "test_refit": _num(sa["test_score_refit"]),
           "test_ensemble": _num(sb["ensemble_test_score"]) if won else _num(sb["test_score_single"]),
           "test_refit_ensemble": _num(sb["test_score_refit"]), "exported_b": sb["exported"],
           "ensemble_members": sb.get("ensemble_members"),
           "inference_cost": _num(sb.get("inference_cost")) if won else 1.0,
           "predict_seconds_single": round(single_s, 4), "predict_seconds_final": round(final_s, 4),
           "predict_ratio": round(final_s / single_s, 3), "refit_seconds": _num(sa["refit_seconds"]),
           "refit_ensemble_seconds": _num(sb["refit_seconds"]), "ensemble_seconds": _num(sb.get("ensemble_seconds")),
           "search_seconds": round(time.perf_counter() - t0, 1), "n_trials": sa["n_trials"]}
    log(f"[{task.name} seed {seed}] {row['pick']}: single {row['test_single']:.4f} refit {row['test_refit']:.4f} "
        f"ensemble {row['test_ensemble']:.4f} refit+ensemble {row['test_refit_ensemble']:.4f} ({sb['exported']})")
    return row


def _same_pick(sa: dict[str, Any], sb: dict[str, Any]) -> bool:
    keys = ("best_source", "strategy", "depth", "lr", "val_score")
    return all(str(sa.get(k)) == str(sb.get(k)) for k in keys)


def _balanced(model_dir: Path, data: Path) -> tuple[float, float]:
    """(balanced accuracy, accuracy) of a saved model on the test split."""
    from autotransfer.datasets import load
    from autotransfer.loading import load_model
    from autotransfer.metrics import score

    ds = load(data)
    probs = load_model(model_dir, device="cpu").predict(list(ds.split_items("test")))[1]
    labels = ds.split_labels("test")
    return float(score("balanced_accuracy", labels, probs)), float(score("accuracy", labels, probs))


def _summary(run: Path) -> dict[str, Any]:
    import pandas as pd

    return pd.read_csv(next(run.rglob("summary.csv"))).iloc[0].to_dict()


def imbalanced_rows(task: suite.Task, work: Path, seeds: list[int], grid_seeds: list[int], log) -> list[dict[str, Any]]:
    """Per seed: the pick chosen by accuracy (search C) and by auto (search A's single trial), on test
    balanced accuracy, beside the grid's best by validation balanced accuracy (``grid_seeds``)."""
    configs = suite.grid_configs(task, quick=False)
    grid = suite.run_grid(task, work / "grid", configs, grid_seeds, task.epochs, lambda m: None)
    suite.write_csv(work / "grid.csv", grid, list(grid[0]))  # every grid run, kept beside the searches
    best, best_test, oracle, oracle_test = suite.grid_best(grid)
    same = suite.config_tests(grid, best)
    rows = []
    for seed in seeds:
        c = _search(task, work, f"c{seed}", seed, metric="accuracy", refit="off")  # both picks as searched
        auto_bal, auto_acc = _balanced(_chosen_dir(work / f"a{seed}"), task.data)
        acc_bal, acc_acc = _balanced(c.best_dir, task.data)
        a = _summary(work / f"a{seed}")
        rows.append({"task": task.name, "seed": seed, "auto_metric": a["metric"],
                     "auto_pick": f"{a['best_source']} {a['strategy']}",
                     "accuracy_pick": f"{c.summary['best_source']} {c.summary['strategy']}",
                     "auto_test_balanced": auto_bal, "accuracy_test_balanced": acc_bal,
                     "auto_test_accuracy": auto_acc, "accuracy_test_accuracy": acc_acc,
                     "auto_minus_accuracy_pp": 100 * (auto_bal - acc_bal),
                     "grid_best": best, "grid_best_test_balanced": best_test,
                     "grid_oracle": oracle, "grid_oracle_test_balanced": oracle_test,
                     "auto_regret_pp": 100 * (best_test - auto_bal), "grid_seeds": len(grid_seeds),
                     # the grid's best config at the search's own seed (NaN past the grid's seeds)
                     "grid_best_test_same_seed": same.get(seed, float("nan")),
                     "auto_regret_same_seed_pp": 100 * (same.get(seed, float("nan")) - auto_bal)})
        log(f"[imbalanced seed {seed}] auto {rows[-1]['auto_pick']} {auto_bal:.4f}; accuracy "
            f"{rows[-1]['accuracy_pick']} {acc_bal:.4f}; grid best {best} {best_test:.4f}")
    return rows


def summary_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over seeds per task and variant, each variant's change from the single trial, and the
    mean over tasks."""
    out = []
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    for t in [*tasks, "mean"]:
        mine = [r for r in rows if r["task"] == t] if t != "mean" else None
        for v in VARIANTS:
            if mine is None:  # the mean over tasks of each task's mean
                per_task = [o for o in out if o["variant"] == v]
                vals = [o["test_mean"] for o in per_task]
                gains = [o["gain_pp"] for o in per_task]
                worst = min(gains) if gains else float("nan")
                out.append({"task": "mean", "variant": v, "test_mean": suite._mean(vals), "test_std": float("nan"),
                            "gain_pp": suite._mean(gains), "worst_task_gain_pp": worst, "seeds": ""})
                continue
            vals = [r[f"test_{v}"] for r in mine]
            base = [r["test_single"] for r in mine]
            out.append({"task": t, "variant": v, "test_mean": suite._mean(vals), "test_std": suite._std(vals),
                        "gain_pp": 100 * (suite._mean(vals) - suite._mean(base)), "worst_task_gain_pp": float("nan"),
                        "seeds": len(mine)})
    return out


def run_task(name: str, work_root: Path, seeds: list[int], size: int, log, grid_seeds: int = 3) -> tuple[list, list]:
    task = suite.all_tasks()[name]
    work = work_root / name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    suite.prepare(task, work, quick=False)
    rows = [variant_row(task, work, seed, size, log) for seed in seeds]
    extra = imbalanced_rows(task, work, seeds, list(range(grid_seeds)), log) if task.kind == "imbalanced" else []
    return rows, extra


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default=",".join(SMALL_TASKS), help="comma-separated suite tasks")
    ap.add_argument("--seeds", type=int, default=3, help="search seeds 0..N-1 (default 3)")
    ap.add_argument("--ensemble", type=int, default=5, help="search B's --ensemble (default 5)")
    ap.add_argument("--grid-seeds", type=int, default=3, help="the imbalanced task's grid seeds (default 3)")
    ap.add_argument("--out", default=str(suite.ROOT / "leaderboards"))
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "autotransfer-final"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1, help="tasks run in this many processes at once")
    args = ap.parse_args(argv)
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = sorted(set(names) - set(suite.all_tasks()))
    if unknown:
        print(f"error: unknown task(s) {', '.join(unknown)}; choose from {', '.join(suite.all_tasks())}",
              file=sys.stderr)
        return 2
    log = suite._Log(time.perf_counter())
    suite._init_worker(args.threads)
    if any(suite.all_tasks()[n].kind in ("digits", "imbalanced") for n in names):
        from autotransfer.zoo import build_zoo

        build_zoo(archs=("test_resnet", "test_vit"))
    results = _run(names, Path(args.work), list(range(args.seeds)), args, log)
    rows = [r for task_rows, _ in results for r in task_rows]
    extra = [r for _, task_extra in results for r in task_extra]
    out = Path(args.out)
    suite.write_csv(out / "bench_final.csv", rows, ROW_COLUMNS)
    summary = summary_rows(rows)
    suite.write_csv(out / "bench_final_summary.csv", summary, list(summary[0]))
    if extra:
        suite.write_csv(out / "bench_final_imbalanced.csv", extra, list(extra[0]))
    for s in summary:
        log(f"{s['task']:10s} {s['variant']:15s} {s['test_mean']:.4f} ± {s['test_std']:.4f} "
            f"gain {s['gain_pp']:+.2f} pp")
    return 0


def _run(names: list[str], work: Path, seeds: list[int], args, log) -> list:
    if args.jobs <= 1 or len(names) == 1:
        return [run_task(n, work, seeds, args.ensemble, log, args.grid_seeds) for n in names]
    import concurrent.futures as cf
    import multiprocessing as mp

    with cf.ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn"),
                                initializer=suite._init_worker, initargs=(args.threads,)) as pool:
        futures = {n: pool.submit(run_task, n, work, seeds, args.ensemble, log, args.grid_seeds)
                   for n in sorted(names, key=lambda n: -suite.all_tasks()[n].cost)}
        return [futures[n].result() for n in names]


if __name__ == "__main__":
    sys.exit(main())
