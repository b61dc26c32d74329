"""Levers on the probe's cost, side by side with the probe as it ships, on features where it is dearest.

At small input sizes extraction is cheap and the probe's L-BFGS gradients are not (64 px lite0:
the probe is 0.2-0.5x the extraction of the same split, ``bench_scale.py``). This benchmark times
the shipped probe (``autotransfer.probe.solve_path``) against variants of it on the same
standardised features, and reports each one's chosen L2 strength and validation accuracy next to
the shipped one's (a variant is only worth keeping when both are the same):

    shipped        solve_path as the linear-probe stage runs it (on the CPU: the path walked in float32,
                   the chosen strength polished in float64)
    f64-walk       the path walked in float64 too (the probe before WALK_DTYPE)
    walk-tol       as f64-walk, the chosen strength polished only to the walk's tolerance (not to TOL)
    precondition   L-BFGS on weights rotated into the eigenbasis of the walk's feature covariance
                   and scaled by sqrt(0.25 * eigenvalue + l2) (the penalised Hessian's diagonal there
                   for a logistic loss at p = 1/2); the polish on every item uses the same basis

Features: ``bench_scale``'s rendered digits through efficientnet-lite0 at ``--px``, extracted once
and cached under ``--work``.

    python benchmarks/bench_probe_variants.py --sizes 2000,8000 --px 64 --threads 1
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_data import make_folder  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def fit_preconditioned(x, y, l2, u, b, tol, counter, sd, basis=None):
    """One head by L-BFGS on u, with w = (u / sd) [@ basis.T]; the loss is the probe's (mean CE + l2/2 ||w||²)."""
    import torch

    from autotransfer import probe as P

    c, r = u.shape
    theta = torch.cat([u.reshape(-1), b]).detach().clone().requires_grad_(True)
    n = x.shape[0]

    def weights(uu):
        w = uu / sd
        return w if basis is None else w @ basis.T

    with torch.no_grad():  # the tolerance is relative to the gradient at zero weights, in u's coordinates
        g0 = (torch.full((n, c), 1.0 / c, dtype=x.dtype) - torch.nn.functional.one_hot(y, c).to(x.dtype)).T @ x / n
        g0 = (g0 if basis is None else g0 @ basis) / sd
        prior = torch.bincount(y, minlength=c).to(x.dtype) / n
        scale = float(torch.maximum(g0.abs().max(), (1.0 / c - prior).abs().max()))
    opt = torch.optim.LBFGS([theta], lr=1, max_iter=P.MAX_ITER, history_size=P.HISTORY,
                            tolerance_grad=tol * max(scale, 1e-12), tolerance_change=min(1e-9, tol ** 1.5),
                            line_search_fn="strong_wolfe")

    def closure():
        counter[0] += 1
        opt.zero_grad()
        w = weights(theta[:c * r].view(c, r))
        loss = torch.nn.functional.cross_entropy(x @ w.T + theta[c * r:], y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    theta = theta.detach()
    return theta[:c * r].view(c, r).clone(), theta[c * r:].clone()


def walk_rows(x, y):
    """The rows the shipped probe walks its path on (a stratified subsample above SELECT_ITEMS)."""
    import torch

    from autotransfer import probe as P

    if x.shape[0] <= P.SELECT_ITEMS:
        return x, y
    sub = torch.as_tensor(P.stratified_rows(y.numpy(), P.SELECT_ITEMS, 0))
    return x[sub], y[sub]


def shipped(x, y, xv, yv, c, counter):
    from autotransfer import probe as P

    res = P.solve_path(x, y[:, None], xv, yv[:, None], classes=[c])
    counter[0] += res.gradients
    return res.l2, res.scores[0]


def walk_then_polish(x, y, xv, yv, c, counter, walk_dtype, polish_tol):
    """The path walked in ``walk_dtype`` on the shipped probe's rows, the chosen strength polished in x's dtype."""
    from autotransfer import probe as P

    xs, ys = walk_rows(x, y)
    best, _ = P._walk(xs.to(walk_dtype), ys[:, None], xv, yv[:, None], P.L2_PATH, [c], P.WALK_TOL,
                      lambda: None, counter, "accuracy")
    _, _, l2, state = best
    w, b = state[0]
    w, b = P._fit(x, y, l2, w.to(x.dtype), b.to(x.dtype), polish_tol, lambda: None, counter)
    return l2, P._scores(xv, yv, w, b)[0]


def f64_walk(x, y, xv, yv, c, counter):
    from autotransfer import probe as P

    return walk_then_polish(x, y, xv, yv, c, counter, x.dtype, P.TOL)


def walk_tol(x, y, xv, yv, c, counter):
    from autotransfer import probe as P

    return walk_then_polish(x, y, xv, yv, c, counter, x.dtype, P.WALK_TOL)


def precondition(x, y, xv, yv, c, counter, alpha=0.25):
    import torch

    from autotransfer import probe as P

    xs, ys = walk_rows(x, y)
    evals, basis = torch.linalg.eigh(xs.T @ xs / xs.shape[0])
    evals = evals.clamp_min(0)
    xr = xs @ basis
    u, b, sd_old, best, since = x.new_zeros(c, x.shape[1]), x.new_zeros(c), None, None, 0
    for l2 in P.L2_PATH:
        sd = torch.sqrt(alpha * evals + l2)
        if sd_old is not None:
            u = u * sd / sd_old  # the same weights in the new scaling
        u, b = fit_preconditioned(xr, ys, l2, u, b, P.WALK_TOL, counter, sd)
        sd_old = sd
        acc, loss = P._scores(xv, yv, (u / sd) @ basis.T, b)
        if best is None or (acc, -loss) > best[0]:
            best, since = ((acc, -loss), l2, u, b, sd), 0
        else:
            since += 1
            if since >= P.PATIENCE:
                break
    _, l2, u, b, sd = best
    if xs.shape[0] < x.shape[0]:
        u, b = fit_preconditioned(x, y, l2, u, b, P.TOL, counter, sd, basis)
    else:
        u, b = fit_preconditioned(xr, y, l2, u, b, P.TOL, counter, sd)
    return l2, P._scores(xv, yv, (u / sd) @ basis.T, b)[0]


VARIANTS = {"shipped": shipped, "f64-walk": f64_walk, "walk-tol": walk_tol, "precondition": precondition}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2000,8000")
    ap.add_argument("--px", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2, help="timings per variant (the best is kept)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "autotransfer-bench-scale")
    ap.add_argument("--out", type=Path, default=REPO / "leaderboards" / "bench_probe_variants_cpu.csv")
    args = ap.parse_args(argv)
    import torch

    from autotransfer._train import standardizer
    from autotransfer.datasets import load
    from autotransfer.features import extract
    from autotransfer.sources import SourceOptions, resolve_source

    if args.threads:
        torch.set_num_threads(args.threads)
    machine = f"{platform.machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads"
    fields = ["n", "n_train", "dim", "classes", "variant", "seconds", "gradients", "l2", "val", "same_l2",
              "diff_pp", "speedup", "extract_seconds", "ratio_to_extract", "px", "machine"]
    with args.out.open("w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=fields)
        wr.writeheader()
        for n in (int(v) for v in args.sizes.split(",")):
            ds = load(make_folder(args.work / f"data_{n}_10_{args.px}", n, 10, args.px))
            src = resolve_source(f"efficientnet-lite0?size={args.px}", SourceOptions(offline=True))
            start = time.perf_counter()  # the extraction of the same split (decoding included: no cache)
            tr, va = (extract(src, ds, s, cache_dir=False, progress=False) for s in ("train", "val"))
            extract_s = time.perf_counter() - start
            x, xv = torch.as_tensor(tr.features).double(), torch.as_tensor(va.features).double()
            mean, std = standardizer(x, isotropic=True)
            x, xv = (x - mean) / std, (xv - mean) / std
            y, yv = torch.as_tensor(tr.labels[:, 0]).long(), torch.as_tensor(va.labels[:, 0]).long()
            c = int(y.max()) + 1
            ref = None
            for name, fn in VARIANTS.items():
                best = None
                for _ in range(args.repeats):
                    counter = [0]
                    t = time.perf_counter()
                    l2, acc = fn(x, y, xv, yv, c, counter)
                    sec = time.perf_counter() - t
                    best = sec if best is None else min(best, sec)
                ref = ref or (best, l2, acc)
                row = dict(n=n, n_train=len(y), dim=x.shape[1], classes=c, variant=name, seconds=round(best, 3),
                           gradients=counter[0], l2=l2, val=round(acc, 4), same_l2=l2 == ref[1],
                           diff_pp=round(100 * (acc - ref[2]), 2), speedup=round(ref[0] / best, 2),
                           extract_seconds=round(extract_s, 2), ratio_to_extract=round(best / extract_s, 3),
                           px=args.px, machine=machine)
                wr.writerow(row)
                fh.flush()
                print("  ".join(f"{k}={row[k]}" for k in fields[:-2]), flush=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
