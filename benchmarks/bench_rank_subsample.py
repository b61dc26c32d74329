"""How ranking's answer moves when it runs on a stratified training subsample: what ranking's floor rests on.

When ranking cannot afford every training item (``rank_plan``), it scores and probes the sources
on a stratified, seeded subsample of at least ``rank_plan.MIN_ITEMS_PER_CLASS`` items per class
(and ``MIN_ITEMS`` in all). This benchmark measures what that costs the answer. On a folder of
``--n`` rendered digits (``scale_data.py``, split 70/15/15 by the tool) and eight sources
spread from good to useless (the midsize suite task's five: efficientnet-lite0/1/2 with real
ImageNet weights at ``--px``, the digits zoo's helpful and harmful test_resnet; and three more:
lite0 at half ``--px``, the zoo's helpful test_vit and its test_resnet pretrained on unrelated
synthetic bars; ``--sources midsize`` keeps the five), each source's training and validation features are
extracted once; then, for each subsample size per class and each subsample seed, every source
gets its LogME (the search's primary estimator) and its probe (the search's linear probe, scored
on the full validation split), and the result is compared with the same scores on every training
item:

    tau          Kendall's tau between the sources' order on the subsample and on every item
    top1         1 when the subsample's best source is every item's best (ties: any of the best)
    regret_pp    every item's probe accuracy of the source this score picks on every item minus
                 that of the source it picks on the subsample, in points (what picking on the
                 subsample loses; negative when the subsample's pick happens to be the better one)
    probe_drop   mean over sources of (probe accuracy on every item - on the subsample), in points

One row per (size, seed, score) goes to ``--out``, then a summary per size is printed.

    python benchmarks/bench_rank_subsample.py                        # 8,000 items, 10 classes
    python benchmarks/bench_rank_subsample.py --classes 100 --per-class 10,25,50
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_data import make_folder  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def sources(px: int, which: str = "wide") -> dict[str, str]:
    """The midsize suite task's sources (three real ImageNet backbones, two digits-zoo ones), and with
    ``wide`` three more, so that the order is not only a near-tie of the three lite backbones."""
    from autotransfer.zoo import build_zoo

    zoo = {e.name: e.spec for e in build_zoo(archs=("test_resnet", "test_vit"),
                                              kinds=("helpful", "harmful", "unrelated"))}
    out = {f"efficientnet-lite{k}": f"efficientnet-lite{k}?size={px}" for k in (0, 1, 2)}
    out.update({k: zoo[k] for k in ("digits-test_resnet", "shuffled-test_resnet")})
    if which == "wide":
        out[f"efficientnet-lite0@{px // 2}px"] = f"efficientnet-lite0?size={px // 2}"
        out.update({k: zoo[k] for k in ("digits-test_vit", "synthetic-test_resnet")})
    return out


def scores(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, classes: int) -> tuple[float, float, float]:
    """(LogME, probe validation accuracy, seconds of both) of one source on these training rows."""
    import torch

    from autotransfer._train import standardizer
    from autotransfer.estimators import estimate
    from autotransfer.probe import solve_dtype, solve_path

    start = time.perf_counter()
    logme = float(estimate("logme", x, y, device="cpu", source="bench"))
    xt, xvt = torch.as_tensor(x), torch.as_tensor(xv)
    mean, std = standardizer(xt, isotropic=True)
    dt = solve_dtype(torch.device("cpu"))
    res = solve_path(((xt - mean) / std).to(dt), torch.as_tensor(y)[:, None], ((xvt - mean) / std).to(dt),
                     torch.as_tensor(yv)[:, None], classes=[classes])
    return logme, res.scores[0], time.perf_counter() - start


def compare(full: dict[str, float], sub: dict[str, float], probe_full: dict[str, float]) -> dict[str, float]:
    """tau, top1 and regret (on every item's probe accuracy) of the subsample's order against every item's."""
    from scipy.stats import kendalltau

    names = list(full)
    tau = kendalltau([full[s] for s in names], [sub[s] for s in names]).statistic
    best_full = max(full.values())
    pick, full_pick = max(names, key=lambda s: sub[s]), max(names, key=lambda s: full[s])
    return dict(tau=round(float(tau), 4), top1=int(full[pick] == best_full),
                regret_pp=round(100 * (probe_full[full_pick] - probe_full[pick]), 2), pick=pick)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8000, help="images in the folder (70%% train)")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--px", type=int, default=64, help="the images' and the lite sources' input size")
    ap.add_argument("--per-class", default="10,25,50,100,200", help="subsample sizes, training items per class")
    ap.add_argument("--seeds", type=int, default=5, help="subsample seeds per size")
    ap.add_argument("--sources", choices=("wide", "midsize"), default="wide", help="the eight sources or the midsize five")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "autotransfer-bench-rank-subsample")
    ap.add_argument("--out", type=Path, default=REPO / "leaderboards" / "bench_rank_subsample_cpu.csv")
    args = ap.parse_args(argv)
    import torch

    from autotransfer.probe import stratified_rows

    if args.threads:
        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads"
    feats = features(args)
    y = next(iter(feats.values()))[1]
    full_logme, full_probe = {}, {}
    for name, (x, yt, xv, yv) in feats.items():
        full_logme[name], full_probe[name], sec = scores(x, yt, xv, yv, args.classes)
        print(f"# every item: {name} logme {full_logme[name]:.4f} probe {full_probe[name]:.4f} ({sec:.1f} s)", flush=True)
    fields = ["n", "n_train", "classes", "per_class", "items", "seed", "score", "tau", "top1", "regret_pp", "pick",
              "probe_drop_pp", "seconds", "px", "sources", "machine"]
    summary: dict[tuple[int, str], list[dict]] = {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for per_class in (int(v) for v in args.per_class.split(",")):
            for seed in range(args.seeds):
                rows = stratified_rows(y, per_class * args.classes, seed=seed)
                if len(rows) >= len(y):
                    break
                sub_logme, sub_probe, seconds = {}, {}, 0.0
                for name, (x, yt, xv, yv) in feats.items():
                    sub_logme[name], sub_probe[name], sec = scores(x[rows], yt[rows], xv, yv, args.classes)
                    seconds += sec
                drop = 100 * float(np.mean([full_probe[s] - sub_probe[s] for s in feats]))
                for score, full, sub in (("logme", full_logme, sub_logme), ("probe", full_probe, sub_probe)):
                    row = dict(n=args.n, n_train=len(y), classes=args.classes, per_class=per_class, items=len(rows),
                               seed=seed, score=score, **compare(full, sub, full_probe), probe_drop_pp=round(drop, 2),
                               seconds=round(seconds, 2), px=args.px, sources=";".join(feats), machine=machine)
                    w.writerow(row)
                    fh.flush()
                    summary.setdefault((per_class, score), []).append(row)
                    print("  ".join(f"{k}={row[k]}" for k in ("per_class", "seed", "score", "tau", "top1", "regret_pp",
                                                              "pick", "probe_drop_pp")), flush=True)
    print(f"\nevery item ({len(y)}): best by probe {max(full_probe, key=full_probe.get)}, by LogME "
          f"{max(full_logme, key=full_logme.get)}")
    print_summary(summary)
    print(f"wrote {args.out}")


def features(args) -> dict[str, tuple]:
    """Each source's (train features, train labels, val features, val labels), extracted once (cached)."""
    from autotransfer.datasets import load
    from autotransfer.features import extract
    from autotransfer.sources import SourceOptions, resolve_source

    ds = load(make_folder(args.work / f"data_{args.n}_{args.classes}_{args.px}", args.n, args.classes, args.px))
    feats = {}
    for name, spec in sources(args.px, args.sources).items():
        src = resolve_source(spec, SourceOptions(offline=True))
        tr, va = (extract(src, ds, s, cache_dir=args.work / "cache", progress=False) for s in ("train", "val"))
        feats[name] = (tr.features, tr.labels[:, 0], va.features, va.labels[:, 0])
        print(f"# features of {name}: {tr.features.shape[0]} train x {tr.features.shape[1]}", flush=True)
    return feats


def print_summary(summary: dict[tuple[int, str], list[dict]]) -> None:
    print("per class  score  mean tau  min tau  top-1  mean regret (pp)  max regret  probe drop (pp)")
    for (per_class, score), rows in summary.items():
        taus = [r["tau"] for r in rows]
        regrets = [r["regret_pp"] for r in rows]
        print(f"{per_class:9d}  {score:5s}  {np.mean(taus):8.3f}  {min(taus):7.3f}  {np.mean([r['top1'] for r in rows]):5.2f}"
              f"  {np.mean(regrets):16.2f}  {max(regrets):10.2f}  {np.mean([r['probe_drop_pp'] for r in rows]):15.2f}")


if __name__ == "__main__":
    main()
