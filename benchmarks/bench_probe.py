"""The probe's solver against the exact one it replaced, on every suite task's sources: same answer, how fast.

The reference is the exact solver (scipy L-BFGS in float64 numpy, 500 iterations per point at
``gtol 1e-8`` / ``ftol 1e-12``, in the span of the features when N < D), kept here as
``exact_path``. The probe (``autotransfer.probe.solve_path``: torch, ``solve_dtype``, relative tolerance,
warm-started path walked at a loose tolerance, the chosen point polished) runs on the same
standardised features, side by side, and the two validation accuracies are compared (target:
within 0.5 pp on every task). Features come from the suite's data and sources
(``suite.prepare``), cached under ``--work``.

    python benchmarks/bench_probe.py                          # every suite task
    python benchmarks/bench_probe.py --tasks digits10,imagenet
    python benchmarks/bench_probe.py --folder DIR --source efficientnet-lite0   # any image folder
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[1]
L2_PATH = tuple(10.0 ** (k / 2) for k in range(0, -9, -1))


def _logistic(x, y, l2, w, b):
    """Multinomial logistic regression (mean cross-entropy + l2/2 ||w||²) by scipy L-BFGS from (w, b)."""
    from scipy.optimize import minimize

    n, (c, d) = len(x), w.shape
    onehot = np.eye(c)[y]

    def loss_grad(theta):
        wt, bt = theta[:c * d].reshape(c, d), theta[c * d:]
        z = x @ wt.T + bt
        z -= z.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        g = (np.exp(logp) - onehot) / n
        loss = -(logp * onehot).sum() / n + 0.5 * l2 * float((wt * wt).sum())
        return loss, np.concatenate([(g.T @ x + l2 * wt).ravel(), g.sum(0)])

    res = minimize(loss_grad, np.concatenate([w.ravel(), b]), jac=True, method="L-BFGS-B",
                   options={"maxiter": 500, "gtol": 1e-8, "ftol": 1e-12})
    return res.x[:c * d].reshape(c, d), res.x[c * d:]


def exact_path(x, y, xv, yv, classes: int) -> tuple[float, float]:
    """The exact solver's (val accuracy, l2): float64, warm-started path, cut 2 points after its best."""
    x, xv = x.astype(np.float64), xv.astype(np.float64)
    if x.shape[0] < x.shape[1]:  # the weights lie in the span of the training features
        _, sv, vh = np.linalg.svd(x, full_matrices=False)
        basis = vh[sv > sv[0] * 1e-10].T
        x, xv = x @ basis, xv @ basis
    w, b = np.zeros((classes, x.shape[1])), np.zeros(classes)
    best, since = None, 0
    for l2 in L2_PATH:
        w, b = _logistic(x, y, l2, w, b)
        z = xv @ w.T + b
        z -= z.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        key = (float((z.argmax(1) == yv).mean()), float(logp[np.arange(len(z)), yv].mean()))
        if best is None or key > best[0]:
            best, since = (key, l2), 0
        else:
            since += 1
            if since >= 2:
                break
    return best[0][0], best[1]


def compare(name: str, source: str, tr, va, classes: int, writer) -> None:
    """Both solvers on one source's standardised features; one row."""
    import torch

    from autotransfer._train import standardizer
    from autotransfer.probe import solve_dtype, solve_path

    x, xv = torch.as_tensor(tr.features), torch.as_tensor(va.features)
    mean, std = standardizer(x, isotropic=True)
    xs, xvs = ((x - mean) / std), ((xv - mean) / std)
    y, yv = tr.labels[:, 0], va.labels[:, 0]
    start = time.perf_counter()
    ref_acc, ref_l2 = exact_path(xs.numpy(), y, xvs.numpy(), yv, classes)
    ref_s = time.perf_counter() - start
    start = time.perf_counter()
    dt = solve_dtype(torch.device("cpu"))
    res = solve_path(xs.to(dt), torch.as_tensor(y)[:, None], xvs.to(dt), torch.as_tensor(yv)[:, None],
                     classes=[classes])
    new_s = time.perf_counter() - start
    writer(dict(task=name, source=source, n_train=len(y), dim=x.shape[1], classes=classes,
                exact_val=round(ref_acc, 4), exact_l2=ref_l2, probe_val=round(res.scores[0], 4), probe_l2=res.l2,
                diff_pp=round(100 * (res.scores[0] - ref_acc), 2), exact_seconds=round(ref_s, 3),
                probe_seconds=round(new_s, 3), speedup=round(ref_s / max(new_s, 1e-9), 1),
                gradients=res.gradients))


def run_task(task, work: Path, writer) -> None:
    import suite

    from autotransfer.datasets import load
    from autotransfer.features import extract
    from autotransfer.sources import SourceOptions, resolve_source

    suite.prepare(task, work / task.name, quick=False)
    ds = load(task.data)
    for short, spec in task.sources.items():
        src = resolve_source(spec, SourceOptions(offline=True))
        tr, va = (extract(src, ds, s, cache_dir=work / "cache", progress=False) for s in ("train", "val"))
        compare(task.name, short, tr, va, ds.tasks[0].num_classes, writer)


def run_folder(folder: Path, spec: str, cache: Path, writer) -> None:
    from autotransfer.datasets import load
    from autotransfer.features import extract
    from autotransfer.sources import SourceOptions, resolve_source

    ds = load(folder)
    src = resolve_source(spec, SourceOptions(offline=True))
    tr, va = (extract(src, ds, s, cache_dir=cache, progress=False) for s in ("train", "val"))
    compare(folder.name, spec, tr, va, ds.tasks[0].num_classes, writer)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="digits10,digits50,invert,rotate,bbc,imagenet")
    ap.add_argument("--folder", type=Path, help="an image folder instead of the suite's tasks")
    ap.add_argument("--source", default="efficientnet-lite0", help="with --folder")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "autotransfer-bench-probe")
    ap.add_argument("--out", type=Path, default=REPO / "leaderboards" / "bench_probe_cpu.csv")
    ap.add_argument("--append", action="store_true")
    ap.add_argument("--cache", type=Path, help="feature cache folder (default: under --work)")
    args = ap.parse_args(argv)
    fields = ["task", "source", "n_train", "dim", "classes", "exact_val", "exact_l2", "probe_val", "probe_l2",
              "diff_pp", "exact_seconds", "probe_seconds", "speedup", "gradients"]
    new = not (args.append and args.out.exists())
    with args.out.open("a" if not new else "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        if new:
            w.writeheader()

        def writer(row: dict) -> None:
            w.writerow(row)
            fh.flush()
            print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)

        if args.folder:
            run_folder(args.folder, args.source, args.cache or args.work / "cache", writer)
            return
        import suite

        tasks = suite.all_tasks()
        for name in args.tasks.split(","):
            run_task(tasks[name], args.work, writer)


if __name__ == "__main__":
    main()
