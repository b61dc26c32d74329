"""Time the built-in transferability estimators against a hardware floor and a reference LogME.

The floor is the least any exact LogME must do: cast the float32 features to float64 on the
device, one Gram product of the smaller side and one symmetric eigendecomposition of it
(D×D when N >= D, N×N otherwise). The reference is LogME as the paper's public code computes it
(one class at a time, each with its own fixed-point loop that recomputes |F m - y|² from F),
with the log-determinant corrected for N < D. Timings are the best of ``--repeats`` runs (default
5; the minimum is the least disturbed by other processes on a shared machine), the median is
reported too, and the floor and LogME runs alternate so that both see the same load.

    python benchmarks/bench_estimators.py            # full shapes, writes leaderboards/bench_estimators_cpu.csv
    python benchmarks/bench_estimators.py --quick    # small shapes, a smoke test
    python benchmarks/bench_estimators.py --threads 1 --append   # add a single-thread run
    python benchmarks/bench_estimators.py --device cuda
"""

from __future__ import annotations

import argparse
import csv
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

FULL_SHAPES = [(10000, 2048, 100), (500, 2048, 10), (20000, 1024, 1000)]
CUDA_SHAPES = [(50000, 2048, 100)]
QUICK_SHAPES = [(2000, 256, 10), (200, 512, 5), (4000, 128, 100)]
ESTIMATORS = ["logme", "hscore", "hscore_shrinkage", "transrate", "gbc", "knn", "leep", "nce"]
SOURCE_CLASSES = 1000
REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}; torch {torch.__version__}, {torch.get_num_threads()} threads"


def make_task(n: int, d: int, c: int, seed: int = 0):
    """Float32 features with class structure, labels, and softmax source-head probabilities."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    y[: 2 * c] = np.repeat(np.arange(c), 2)  # every class at least twice
    centres = rng.standard_normal((c, d), dtype=np.float32)
    f = 0.5 * centres[y] + rng.standard_normal((n, d), dtype=np.float32)
    logits = 2 * rng.standard_normal((c, SOURCE_CLASSES), dtype=np.float32)[y]
    logits += rng.standard_normal((n, SOURCE_CLASSES), dtype=np.float32)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return f, y, probs


def timed(fn, sync, repeats: int, budget_s: float):
    """Run ``fn`` up to ``repeats`` times (fewer once ``budget_s`` is spent); (best, median, runs, result)."""
    times, result = [], None
    while len(times) < repeats:
        sync()
        start = time.perf_counter()
        result = fn()
        sync()
        times.append(time.perf_counter() - start)
        if sum(times) > budget_s:
            break
    return min(times), statistics.median(times), len(times), result


def floor(features, device):
    import torch

    x = torch.from_numpy(features).to(device=device, dtype=torch.float64)
    n, d = x.shape
    return torch.linalg.eigh(x.T @ x if n >= d else x @ x.T)


def reference_logme(features, labels, device, *, tol=1e-5, max_iter=100, budget_s=float("inf")):
    """Per-class LogME as in the public code (residual from F every iteration), exact logdet.

    Returns (score, fraction of classes done): when ``budget_s`` runs out it stops early, and
    the caller extrapolates the loop time to all classes.
    """
    import torch

    x = torch.from_numpy(features).to(device=device, dtype=torch.float64)
    n, d = x.shape
    if n >= d:
        s, v = torch.linalg.eigh(x.T @ x)
    else:
        s, u = torch.linalg.eigh(x @ x.T)
    keep = s > s.max() * max(n, d) * np.finfo(np.float64).eps
    s = s[keep]
    if n >= d:
        v = v[:, keep]
    else:
        v = (x.T @ u[:, keep]) / s.sqrt()  # right singular vectors
    k = len(s)
    classes = np.unique(labels)
    start = time.perf_counter()
    evidences = []
    y_all = torch.from_numpy(labels).to(device)
    for c in classes:
        y = (y_all == int(c)).to(torch.float64)
        fy = v.T @ (x.T @ y)
        alpha, beta = 1.0, 1.0
        for _ in range(max_iter):
            gamma = float((beta * s / (alpha + beta * s)).sum())
            m = v @ (fy * beta / (alpha + beta * s))
            mm = float(m @ m)
            res = float(((x @ m - y) ** 2).sum())
            new_alpha, new_beta = gamma / mm, (n - gamma) / res
            done = abs(new_alpha - alpha) <= tol * new_alpha and abs(new_beta - beta) <= tol * new_beta
            alpha, beta = new_alpha, new_beta
            if done:
                break
        m = v @ (fy * beta / (alpha + beta * s))
        mm, res = float(m @ m), float(((x @ m - y) ** 2).sum())
        logdet = float(torch.log(alpha + beta * s).sum()) + (d - k) * math.log(alpha)
        evidence = (
            n / 2 * math.log(beta)
            + d / 2 * math.log(alpha)
            - n / 2 * math.log(2 * math.pi)
            - beta / 2 * res
            - alpha / 2 * mm
            - logdet / 2
        )
        evidences.append(evidence / n)
        if time.perf_counter() - start > budget_s:
            break
    return float(np.mean(evidences)), len(evidences) / len(classes)


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (seconds, not minutes)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per method (best-of)")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds per method before repeats stop")
    parser.add_argument("--only", default="", help="comma-separated estimators to time (default: all)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--append", action="store_true", help="add rows to the CSV instead of replacing it")
    parser.add_argument("--out", default=None, help="CSV path (default: leaderboards/bench_estimators_<device>.csv)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = _parse(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES + (CUDA_SHAPES if device.type == "cuda" else [])
    names = [n for n in args.only.split(",") if n] or ESTIMATORS
    who = machine() if device.type == "cpu" else f"{torch.cuda.get_device_name(device)}; torch {torch.__version__}"
    print(f"# {who}; device {device}")
    rows = []
    for n, d, c in shapes:
        f, y, probs = make_task(n, d, c)
        print(f"\n## N={n} D={d} C={c}")
        shape_rows = _time_shape(f, y, probs, names, device, sync, args)
        rows += _shape_rows(shape_rows, who, device, (n, d, c))
    out = args.out
    if out is None and device.type == "cpu" and not args.quick:
        out = REPO / "leaderboards" / "bench_estimators_cpu.csv"
    if out:
        _write_csv(rows, out, args.append)
    return 0


def _time_shape(f, y, probs, names, device, sync, args) -> list[tuple]:
    """(method, best s, median s, runs, value, note) for the floor, every estimator and the reference LogME."""
    import autotransfer

    # Warm up kernels and thread pools so the first timed call is not penalised.
    floor(f[: min(len(f), 256)], device)
    ests = {name: autotransfer.get_estimator(name) for name in names}

    def run(name, f=f, y=y, probs=probs, ests=ests):
        sp = probs if "source_probs" in ests[name].requires else None
        return ests[name].score(f, y, source_probs=sp, device=str(device))

    # The floor and LogME alternate, so both see the same load on a shared machine.
    floor_times, logme_times, logme_value = [], [], None
    for _ in range(args.repeats if "logme" in ests else 0):
        floor_times.append(timed(lambda f=f: floor(f, device), sync, 1, 0)[0])
        best, _, _, logme_value = timed(lambda: run("logme"), sync, 1, 0)
        logme_times.append(best)
    if not floor_times:
        floor_times = [timed(lambda f=f: floor(f, device), sync, 1, 0)[0] for _ in range(args.repeats)]
    base, base_med = min(floor_times), statistics.median(floor_times)
    shape_rows = [("floor", base, base_med, len(floor_times), "", "cast + Gram + eigh of the smaller side")]
    if logme_times:
        shape_rows.append(("logme", min(logme_times), statistics.median(logme_times), len(logme_times), logme_value,
                           ""))
    for name in names:
        if name == "logme":
            continue
        best, med, runs, value = timed(lambda name=name: run(name), sync, args.repeats, args.budget)
        shape_rows.append((name, best, med, runs, value, ""))
    if logme_times:
        shape_rows.append(_reference_row(f, y, device, sync, args.budget / 2, logme_value))
    return shape_rows


def _reference_row(f, y, device, sync, ref_budget, logme_value) -> tuple:
    start = time.perf_counter()
    ref_value, done = reference_logme(f, y, device, budget_s=ref_budget)
    sync()
    elapsed = time.perf_counter() - start
    note = "per-class fixed point, exact logdet"
    if done < 1:
        setup, _, _, _ = timed(lambda f=f: floor(f, device), sync, 1, 0)
        elapsed = setup + (elapsed - setup) / done
        note += f"; {done:.0%} of classes timed, extrapolated; value over those classes"
    else:
        note += f"; |reference - logme| = {abs(ref_value - logme_value):.1e}"
    return ("reference_logme", elapsed, elapsed, 1, ref_value, note)


def _shape_rows(shape_rows, who, device, shape) -> list[dict]:
    """The CSV rows of one shape, each printed as it is made; times relative to the floor and to LogME."""
    n, d, c = shape
    base = shape_rows[0][1]
    logme_s = next((best for method, best, *_ in shape_rows if method == "logme"), None)
    rows = []
    for method, best, med, runs, value, note in shape_rows:
        row = {
            "machine": who,
            "device": str(device),
            "N": n,
            "D": d,
            "C": c,
            "method": method,
            "best_s": f"{best:.4f}",
            "median_s": f"{med:.4f}",
            "runs": runs,
            "vs_floor": f"{best / base:.3f}",
            "vs_logme": f"{best / logme_s:.2f}" if logme_s else "",
            "value": f"{value:.6g}" if value != "" else "",
            "note": note,
        }
        rows.append(row)
        print(
            f"{method:18s} {best:9.4f}s  median {med:9.4f}s  x{runs}  "
            f"{row['vs_floor']:>7s}x floor  {row['vs_logme']:>6s}x logme  {row['value']:>12s}  {note}"
        )
    return rows


def _write_csv(rows: list[dict], out, append: bool) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    append = append and Path(out).exists()
    with open(out, "a" if append else "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        if not append:
            writer.writeheader()
        writer.writerows(rows)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    sys.exit(main())
