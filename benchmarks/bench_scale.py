"""How each phase of a search grows with the data: seconds per phase at N = 500, 2k, 8k (and 32k on a GPU).

For each size, a realistic image folder is made (``scale_data.py``: real handwritten digits,
rendered with their own jitter, colours and noise, 10 or 100 classes) and split by the tool
(70/15/15). Then each phase the search runs is timed once, as the search runs it, on one source:

    decode      the decoded-image cache of every split (threads, one per core)
    extract     the pretrained backbone over train and val (no feature cache)
    estimators  every default estimator on the training features
    probe       the linear probe's solve (standardise + the L2 path), on the cached features
    scratch     one epoch of the architecture from random init (train + val), the search's recipe
    finetune    one epoch of full fine-tuning from the pretrained weights (train + val)
    test+export the answer's test predictions and its export to a folder

It prints each phase's wall and CPU seconds and their log-log slopes against N between consecutive
sizes (1.0: linear), and the probe's seconds as a fraction of the extraction of the same split.
CPU seconds (this process and its finished DataLoader workers) are the work a phase did: on a
shared machine wall time also counts other programs' turns, so slopes are read from CPU seconds
there (with ``--threads 1``, which keeps OpenMP from spinning while it waits for a core). With
``--probe-grid`` it also times the probe at C = 100 classes and at D = 2048 (the source's
features through a fixed random ReLU layer, as a wider backbone would give), in the rows' span
and in the full feature space, against the same extraction and against the forward pass of a
real 2048-wide backbone (timm resnet50) over the same items. Results go to ``--out`` (CSV, one
row per phase and size).

    python benchmarks/bench_scale.py                              # CPU: 500, 2000, 8000 at 128 px
    python benchmarks/bench_scale.py --sizes 500,2000 --px 64     # a quick look
    python benchmarks/bench_scale.py --device cuda --sizes 500,2000,8000,32000 --px 224
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_data import make_folder  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PHASES = ["decode", "extract", "estimators", "probe", "scratch", "finetune", "test+export"]


def cpu_now() -> float:
    """CPU seconds of this process and its finished children (DataLoader workers): on a shared machine
    this is the work a phase did, where wall time also counts the other programs' turns."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Timer:
    """Wall and CPU seconds per phase of one size, synchronising the device around each."""

    def __init__(self, device: str):
        self.device, self.seconds, self.cpu = device, {}, {}

    def __call__(self, phase: str, fn, *args, **kwargs):
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        start, cpu = time.perf_counter(), cpu_now()
        out = fn(*args, **kwargs)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start
        self.cpu[phase] = self.cpu.get(phase, 0.0) + cpu_now() - cpu
        return out


def probe_seconds(x, y, xv, yv, classes: int, device: str, span: bool = True) -> tuple[float, float]:
    """(seconds, val accuracy) of the probe's solve on these features, as the linear-probe stage runs it."""
    import torch

    from autotransfer._train import standardizer
    from autotransfer.probe import solve_path

    start = time.perf_counter()
    x, xv = (torch.as_tensor(a, device=device) for a in (x, xv))
    mean, std = standardizer(x, isotropic=True)
    res = solve_path((x - mean) / std, torch.as_tensor(y, device=device)[:, None], (xv - mean) / std,
                     torch.as_tensor(yv, device=device)[:, None], classes=[classes], span=span)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, res.scores[0]


def _decode_all(ds, spec, cache_dir):
    from autotransfer.decode_cache import decoded

    for split in ("train", "val", "test"):
        decoded(ds, split, spec, cache_dir=cache_dir, progress=False)


def _extract(src, ds, device, cache_dir):
    from autotransfer.features import extract

    return [extract(src, ds, s, device=device, cache_dir=cache_dir, progress=False) for s in ("train", "val")]


def _estimators(feats, labels):
    from autotransfer.errors import NotApplicable
    from autotransfer.estimators import default_estimators, estimate

    for name in default_estimators():
        try:
            estimate(name, feats.features, labels, source_probs=feats.source_probs, device="cpu", source="bench")
        except NotApplicable:
            pass


def _epoch(ds, spec, device, cache_dir, pretrained: bool):
    import autotransfer
    from autotransfer.strategies import SCRATCH_RECIPE

    strategy = SCRATCH_RECIPE.name if not pretrained else "full"
    return autotransfer.train(ds, spec, strategy, epochs=1, pretrained=pretrained, device=device,
                              evaluate_test=False, cache_dir=cache_dir, progress=False)


def _test_export(result, ds, out: Path):
    preds, _ = result.model.predict(ds.split_items("test"))
    result.save(out)
    return float((preds[:, 0] == ds.split_labels("test")[:, 0]).mean())


def one_size(n: int, args, work: Path, writer) -> dict[str, float]:
    """Every phase at ``n`` items; rows written as they are measured."""
    from autotransfer.datasets import load
    from autotransfer.sources import SourceOptions, resolve_source

    folder = make_folder(work / f"data_{n}_{args.classes}_{args.px}", n, args.classes, args.px)
    cache = work / f"cache_{n}"
    shutil.rmtree(cache, ignore_errors=True)
    ds = load(folder)
    spec = f"{args.source}?size={args.px}"
    src = resolve_source(spec, SourceOptions(offline=True))
    t = Timer(args.device)
    t("decode", _decode_all, ds, src.decode_spec(), cache)
    train_f, val_f = t("extract", _extract, src, ds, args.device, cache)
    t("estimators", _estimators, train_f, train_f.labels[:, 0])
    _, acc = t("probe", probe_seconds, train_f.features, train_f.labels[:, 0], val_f.features,
               val_f.labels[:, 0], args.classes, args.device)
    if args.subsample_curve and n == max(int(v) for v in args.sizes.split(",")):
        subsample_curve(train_f, val_f, args.classes, args.device, writer, n)
    if not args.skip_epochs:
        t("scratch", _epoch, ds, spec, args.device, cache, False)
        ft = t("finetune", _epoch, ds, spec, args.device, cache, True)
        t("test+export", _test_export, ft, ds, work / f"export_{n}")
    n_train = len(ds.splits["train"])
    for phase, sec in t.seconds.items():
        writer(dict(phase=phase, n=n, n_train=n_train, classes=args.classes, dim=src.feature_dim,
                    seconds=round(sec, 3), cpu_seconds=round(t.cpu[phase], 3),
                    ratio_to_extract=round(sec / t.seconds["extract"], 4),
                    cpu_ratio_to_extract=round(t.cpu[phase] / t.cpu["extract"], 4),
                    probe_val=round(acc, 4) if phase == "probe" else ""))
    return t


def subsample_curve(train_f, val_f, classes: int, device: str, writer, n: int) -> None:
    """Probe val accuracy and LogME when ranking uses a stratified subsample of the training features:
    what ``rank_plan.MIN_ITEMS_PER_CLASS`` rests on."""
    from autotransfer.estimators import estimate
    from autotransfer.probe import stratified_rows

    y = train_f.labels[:, 0]
    for per_class in (10, 25, 50, 100, 200, None):
        rows = (stratified_rows(y, per_class * classes, seed=0) if per_class else np.arange(len(y)))
        if per_class and len(rows) >= len(y):
            continue
        x = train_f.features[rows]
        sec, acc = probe_seconds(x, y[rows], val_f.features, val_f.labels[:, 0], classes, device)
        logme = estimate("logme", x, y[rows], device="cpu", source="bench")
        writer(dict(phase="subsample", n=n, n_train=len(rows), classes=classes, dim=x.shape[1],
                    seconds=round(sec, 3), ratio_to_extract="", probe_val=round(acc, 4), logme=round(logme, 4)))


def wide_forward(n_items: int, px: int, device: str) -> Timer:
    """Wall and CPU seconds of a real 2048-wide backbone's forward pass (timm resnet50, random init: only its
    cost matters) over ``n_items`` images at ``px``: what extracting the same split from such a source costs."""
    import timm
    import torch

    model = timm.create_model("resnet50", pretrained=False, num_classes=0).to(device).eval()
    t = Timer(device)

    def run():
        with torch.inference_mode():
            for start in range(0, n_items, 64):
                model(torch.randn(min(64, n_items - start), 3, px, px, device=device))

    t("extract", run)
    return t


def probe_grid(n: int, args, work: Path, writer) -> None:
    """The probe at C = 100 and at D = 2048 (random ReLU layer over the real features), vs extraction of the
    same split: by the source (a 1280-wide lite0: a harsh reference for D = 2048) and by a real 2048-wide
    backbone. At D = 2048 the probe is timed in the rows' span (the default) and in the full feature space."""
    import torch

    from autotransfer.datasets import load
    from autotransfer.features import extract
    from autotransfer.sources import SourceOptions, resolve_source

    folder = make_folder(work / f"data_{n}_100_{args.px}", n, 100, args.px)
    ds = load(folder)
    src = resolve_source(f"{args.source}?size={args.px}", SourceOptions(offline=True))
    t = Timer(args.device)
    tr, va = t("extract", lambda: [extract(src, ds, s, device=args.device, cache_dir=False, progress=False)
                                   for s in ("train", "val")])
    wide = wide_forward(len(tr.features) + len(va.features), args.px, args.device)
    for dim, span in ((src.feature_dim, True), (2048, True), (2048, False)):
        x, xv = tr.features, va.features
        if dim != src.feature_dim:
            g = torch.Generator().manual_seed(0)
            proj = torch.randn(x.shape[1], dim, generator=g) / math.sqrt(x.shape[1])
            x, xv = (torch.relu(torch.as_tensor(a) @ proj).numpy() for a in (x, xv))
        phase = "probe" if span else "probe_fullspace"
        _, acc = t(phase, probe_seconds, x, tr.labels[:, 0], xv, va.labels[:, 0], 100, args.device, span)
        ref = wide if dim == 2048 else t
        writer(dict(phase=phase, n=n, n_train=len(x), classes=100, dim=dim, seconds=round(t.seconds[phase], 3),
                    cpu_seconds=round(t.cpu[phase], 3), ratio_to_extract=round(t.seconds[phase] / t.seconds["extract"], 4),
                    cpu_ratio_to_extract=round(t.cpu[phase] / t.cpu["extract"], 4),
                    ratio_to_wide_extract=round(t.seconds[phase] / ref.seconds["extract"], 4),
                    cpu_ratio_to_wide_extract=round(t.cpu[phase] / ref.cpu["extract"], 4), probe_val=round(acc, 4)))
        del t.seconds[phase], t.cpu[phase]


def slopes(table: dict[int, dict[str, float]], unit: str = "s") -> list[str]:
    sizes = sorted(table)
    lines = []
    for phase in PHASES:
        pts = [(n, table[n][phase]) for n in sizes if phase in table[n]]
        cells = [f"{n}: {s:7.2f}{unit}" for n, s in pts]
        sl = [f"{math.log(b / a) / math.log(m / n):.2f}" for (n, a), (m, b) in zip(pts, pts[1:], strict=False)
              if a > 0 and b > 0]
        lines.append(f"{phase:12s} " + "  ".join(cells) + ("   slopes " + " ".join(sl) if sl else ""))
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="500,2000,8000")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--px", type=int, default=128, help="input size of the source (and of the rendered images)")
    ap.add_argument("--source", default="efficientnet-lite0")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--skip-epochs", action="store_true", help="only decode, extract, estimators and probe")
    ap.add_argument("--probe-grid", action="store_true", help="also C=100 and D=2048 probes at each size")
    ap.add_argument("--subsample-curve", action="store_true",
                    help="at the largest size: probe accuracy and LogME on stratified training subsamples")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "autotransfer-bench-scale")
    ap.add_argument("--out", type=Path, default=REPO / "leaderboards" / "bench_scale_cpu.csv")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()} {platform.processor()}; torch {torch.__version__}, {torch.get_num_threads()} threads"
    print(f"# {machine}; device {args.device}; {args.source} at {args.px} px", flush=True)
    fields = ["phase", "n", "n_train", "classes", "dim", "seconds", "cpu_seconds", "ratio_to_extract",
              "cpu_ratio_to_extract", "ratio_to_wide_extract", "cpu_ratio_to_wide_extract", "probe_val", "logme",
              "px", "source", "device", "machine"]
    table: dict[int, Timer] = {}
    with args.out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()

        def writer(row: dict) -> None:
            w.writerow({**row, "px": args.px, "source": args.source, "device": args.device, "machine": machine})
            fh.flush()
            print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)

        for n in (int(s) for s in args.sizes.split(",")):
            table[n] = one_size(n, args, args.work, writer)
            if args.probe_grid and n >= 2000:
                probe_grid(n, args, args.work, writer)
    print("wall seconds\n" + "\n".join(slopes({n: t.seconds for n, t in table.items()})))
    print("CPU seconds\n" + "\n".join(slopes({n: t.cpu for n, t in table.items()}, " cpu-s")))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
