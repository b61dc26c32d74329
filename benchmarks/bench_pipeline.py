"""The data pipeline against the hardware's limit: ranking K sources, and training epochs.

Data: N real-size JPEGs (about 500×375, quality 90) cut from sklearn's two sample photos
(``china.jpg``, ``flower.jpg``: one class each) with random crops and colour jitter.
Sources: K = 3 timm test models (``test_efficientnet``, ``test_convnext``, ``test_vit``: the same
160 px input, crop and interpolation, so they share one decoded-image cache), randomly
initialised and saved locally, loaded through ``timm:<arch>@file`` like a user's weights.

Measured, side by side in one run:

* ``rank`` of the K sources (estimator: LogME), from empty caches, with the decoded-image cache
  and without it (the rows labelled ``today (no decode cache)``: every source decodes every JPEG
  again). Ceiling: one decode pass (every JPEG decoded and resized, on every core, arrays returned
  to the parent: the faster of a thread pool and a process pool) plus the sum of the K bare
  forward passes over tensors made beforehand (same batch size).
* one training epoch per strategy that trains the backbone (``partial``, ``full``, ``lp_ft``,
  ``lora``), with the cache (batch augmentation, and per-image augmentation of the cached arrays
  for comparison) and without it. Ceiling: a bare epoch on pre-made tensors of the same
  model, trainable parameters and batch size: forward, backward, clipping and AdamW step over the
  training split, then the forward pass over the validation split (an epoch of the loop evaluates).

Ratios are time / ceiling (1.0 = the pipeline adds nothing). Each time is the best of a few
interleaved rounds (epochs), as other jobs on a shared machine only ever slow a round down; a
training round times as many ceiling epochs as the run has epochs, so both minima are over the
same number of samples.

    python benchmarks/bench_pipeline.py                      # 240 images, a few minutes on 2 cores
    python benchmarks/bench_pipeline.py --quick              # a smoke run
    python benchmarks/bench_pipeline.py --device cuda        # on a GPU machine
Writes ``leaderboards/bench_pipeline_<device>.csv``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ("test_efficientnet", "test_convnext", "test_vit")
STRATEGIES = ("partial", "full", "lp_ft", "lora")
OFF = "AUTOTRANSFER_DECODE_CACHE_MAX_GB"


def write_jpegs(folder: Path, n: int, seed: int = 0, prefix: str = "") -> Path:
    """``n`` JPEGs of about 500×375 px: random crops of the sample photos, jittered, quality 90."""
    import numpy as np
    from PIL import Image, ImageEnhance
    from sklearn.datasets import load_sample_image

    rng = np.random.default_rng(seed)
    for c, name in enumerate(("china.jpg", "flower.jpg")):
        photo = load_sample_image(name)
        (folder / name.split(".")[0]).mkdir(parents=True, exist_ok=True)
        for i in range(n // 2 + (c < n % 2)):
            w, h = int(rng.integers(450, 551)), int(rng.integers(340, 411))
            y, x = int(rng.integers(0, photo.shape[0] - h + 1)), int(rng.integers(0, photo.shape[1] - w + 1))
            img = Image.fromarray(photo[y:y + h, x:x + w])
            for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
                img = enhance(img).enhance(float(rng.uniform(0.7, 1.3)))
            img.save(folder / name.split(".")[0] / f"{prefix}{i:04d}.jpg", quality=90)
    return folder


def save_sources(folder: Path) -> list[str]:
    import timm
    import torch
    from safetensors.torch import save_file

    specs = []
    for k, arch in enumerate(ARCHS):
        torch.manual_seed(k)
        model = timm.create_model(arch, num_classes=10)
        path = folder / f"{arch}.safetensors"
        save_file({n: v.contiguous() for n, v in model.state_dict().items()}, str(path))
        specs.append(f"timm:{arch}@{path}")
    return specs


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def _decode_one(args):
    from autotransfer.decode_cache import decode

    return decode(*args)


def decode_pass(items, spec, workers: int, kind: str = "threads") -> float:
    """Seconds to decode and resize every image once on ``workers`` threads or processes (arrays to the parent)."""
    import multiprocessing as mp
    from concurrent.futures import ThreadPoolExecutor

    t0 = time.perf_counter()
    if workers > 1 and kind == "processes":
        with mp.get_context("fork").Pool(workers) as pool:
            for _ in pool.imap(_decode_one, [(p, spec) for p in items], chunksize=16):
                pass
    elif workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(_decode_one, [(p, spec) for p in items]):
                pass
    else:
        for p in items:
            _decode_one((p, spec))
    return time.perf_counter() - t0


def premade(source, items, batch_size: int):
    """Eval tensors of ``items`` in batches, made before any timing."""
    return [source.collate([source.load_item(i) for i in items[s:s + batch_size]])
            for s in range(0, len(items), batch_size)]


def bare_forward(source, batches, dev, precision: str) -> float:
    import torch

    from autotransfer.precision import autocast

    model = source.build(pretrained=True).eval().to(dev)
    with torch.inference_mode(), autocast(precision, dev):
        model(batches[0].to(dev))  # warm-up, not timed
        _sync(dev)
        t0 = time.perf_counter()
        for b in batches:
            model(b.to(dev)).float().cpu()
        _sync(dev)
    return time.perf_counter() - t0


def bare_epoch(model, train_batches, labels, val_batches, dev, precision: str) -> float:
    """One epoch of fwd + bwd + clip + AdamW over pre-made tensors, then the val forward pass."""
    import torch

    from autotransfer.precision import autocast, grad_scaler

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    scaler = grad_scaler(precision, dev)

    def step(x, y):
        with autocast(precision, dev):
            out = model(x.to(dev))
        loss = sum(torch.nn.functional.cross_entropy(o.float(), y.to(dev)[:, t]) for t, o in enumerate(out))
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            scaler.step(opt)
            scaler.update()

    model.train()
    step(train_batches[0], labels[0])  # warm-up, not timed
    _sync(dev)
    t0 = time.perf_counter()
    model.train()
    for x, y in zip(train_batches, labels, strict=False):
        step(x, y)
    model.eval()
    with torch.no_grad(), autocast(precision, dev):
        for x in val_batches:
            model(x.to(dev))
    _sync(dev)
    return time.perf_counter() - t0


@contextlib.contextmanager
def decode_cache_off(off: bool):
    old = os.environ.get(OFF)
    if off:
        os.environ[OFF] = "0"
    try:
        yield
    finally:
        if off:
            if old is None:
                os.environ.pop(OFF, None)
            else:
                os.environ[OFF] = old


PIPELINES = (("today (no decode cache)", True, True), ("cache, per-image augment", False, True),
             ("decode cache", False, False))  # (label, decode cache off, per-image augmentation)


def epoch_inputs(source, ds, bs: int):
    """The ceiling's pre-made tensors: train batches (as the loop batches them), their labels, val batches."""
    import torch

    items = ds.split_items("train")
    tb = premade(source, items, bs)
    lb = [torch.as_tensor(ds.split_labels("train")[s:s + bs]) for s in range(0, len(items), bs)]
    if len(tb[-1]) == 1:  # the loop drops a last batch of one (BatchNorm)
        tb, lb = tb[:-1], lb[:-1]
    return tb, lb, premade(source, ds.split_items("val"), bs)


@contextlib.contextmanager
def per_image_augmentation(source, on: bool):
    """The source without its batch augmentation (``decoded_augmentation`` None): every training image
    goes through ``load_decoded`` (the pipeline before batch augmentation, for comparison)."""
    if on:
        source.decoded_augmentation = lambda: None
    try:
        yield
    finally:
        source.__dict__.pop("decoded_augmentation", None)


def _parse():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=240, help="JPEGs in the dataset (default 240)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per training run; the fastest one counts")
    ap.add_argument("--today-epochs", type=int, default=2, help="epochs of the runs without the cache (slow)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of each measurement; the fastest counts")
    ap.add_argument("--quick", action="store_true", help="48 images, full and partial only")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--precision", default="auto", help="auto, bf16, fp16 or fp32")
    ap.add_argument("--out", default=None, help="CSV path (default leaderboards/bench_pipeline_<device>.csv)")
    return ap.parse_args()


def main() -> None:
    args = _parse()

    import torch

    from autotransfer.datasets import load
    from autotransfer.features import resolve_device
    from autotransfer.precision import resolve_precision
    from autotransfer.sources import resolve_source

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    precision = resolve_precision(args.precision, dev)
    n_images = 48 if args.quick else args.images
    strategies = ("partial", "full") if args.quick else STRATEGIES
    if dev.type == "cuda":
        where = f"cuda: {torch.cuda.get_device_name(dev)}, {precision}"
    else:
        where = (f"cpu: {platform.machine()}, {os.cpu_count()} cores (shared), "
                 f"{torch.get_num_threads()} torch threads, {precision}")
    batch = 256 if dev.type == "cuda" else 64

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ds = load(write_jpegs(work / "photos", n_images))
        srcs = [resolve_source(s) for s in save_sources(work)]
        spec = srcs[0].decode_spec()
        assert all(s.decode_spec() == spec for s in srcs), "the sources must share one decode geometry"
        rows = _rank_rows(ds, srcs, batch, dev, precision, args.repeats, work, where)
        rows += _train_rows(ds, srcs[0], strategies, args, dev, precision, work, where)

    from suite import write_csv  # benchmarks/ is on sys.path when this runs as a script

    out = Path(args.out) if args.out else ROOT / "leaderboards" / f"bench_pipeline_{dev.type}.csv"
    write_csv(out, rows, list(rows[0]))
    print(f"wrote {out}")


def _rank_rows(ds, srcs, batch, dev, precision, repeats, work, where) -> list[dict]:
    """rank: K sources over the train split, with and without the decode cache; best of ``repeats``
    interleaved rounds, against one decode pass plus the bare forward passes."""
    from autotransfer._rank import rank_sources
    from autotransfer.decode_cache import default_workers

    items = ds.split_items("train")
    n = len(items)
    spec = srcs[0].decode_spec()
    batches = premade(srcs[0], items, batch)
    fwd = [float("inf")] * len(srcs)
    decode = float("inf")
    timing: dict[str, float] = {}
    for r in range(repeats):
        fwd = [min(f, bare_forward(s, batches, dev, precision)) for f, s in zip(fwd, srcs, strict=False)]
        # the fastest known way to decode on every core: threads (PIL releases the GIL) or processes
        decode = min(decode, *(decode_pass(items, spec, default_workers(), kind) for kind in ("threads", "processes")))
        for label, off in (("today (no decode cache)", True), ("decode cache", False)):
            with decode_cache_off(off):  # empty caches each round: the decode and the features are paid
                t0 = time.perf_counter()
                rank_sources(ds, srcs, ["logme"], device=str(dev), cache_dir=work / f"cache-rank-{off}-{r}",
                             progress=False, precision=precision)
                timing[label] = min(timing.get(label, float("inf")), time.perf_counter() - t0)
    ceiling = decode + sum(fwd)
    print(f"rank of K={len(srcs)} sources over {n} JPEGs ({where})")
    print(f"  ceiling: one decode pass {decode:.2f}s + forward passes {' + '.join(f'{f:.2f}' for f in fwd)}s"
          f" = {ceiling:.2f}s")
    rows = []
    for label, sec in timing.items():
        print(f"  {label:24s} {sec:7.2f}s  ratio {sec / ceiling:5.2f}")
        rows.append({"measure": "rank", "pipeline": label, "strategy": "", "n_images": n,
                     "k_sources": len(srcs), "seconds": round(sec, 3), "ceiling_seconds": round(ceiling, 3),
                     "ratio": round(sec / ceiling, 3), "device": where})
    return rows


def _train_rows(ds, src, strategies, args, dev, precision, work, where) -> list[dict]:
    """training: one epoch per strategy through every pipeline, against a bare epoch on pre-made tensors."""
    n = len(ds.split_items("train"))
    val_items = ds.split_items("val")
    print(f"training epochs of {src.name.split('@')[0]} ({n} train / {len(val_items)} val JPEGs, augmentation on)")
    rows = []
    for strategy in strategies:
        timed_epochs = _time_epochs(ds, src, strategy, args, dev, precision, work)
        if timed_epochs is None:
            print(f"  {strategy:8s} skipped: not applicable to {src.name.split('@')[0]}")
            continue
        seconds, ceiling = timed_epochs
        for label, sec in seconds.items():
            print(f"  {strategy:8s} {label:25s} epoch {sec:6.2f}s  ceiling {ceiling:6.2f}s  "
                  f"ratio {sec / ceiling:5.2f}")
            rows.append({"measure": "train_epoch", "pipeline": label, "strategy": strategy, "n_images": n,
                         "k_sources": 1, "seconds": round(sec, 3), "ceiling_seconds": round(ceiling, 3),
                         "ratio": round(sec / ceiling, 3), "device": where})
    return rows


def _time_epochs(ds, src, strategy, args, dev, precision, work) -> tuple[dict[str, float], float] | None:
    """(quietest epoch per pipeline, quietest ceiling epoch) of ``strategy``; None when it does not apply."""
    from autotransfer._train import train
    from autotransfer.strategies import StrategyNotApplicable

    params = {"depth": 1} if strategy == "partial" else {}
    seconds: dict[str, float] = {}
    ceiling, premades = float("inf"), None
    for _ in range(args.repeats):  # interleaved rounds: a slow spell of the machine hits every pipeline
        for label, off, per_image in PIPELINES:
            with decode_cache_off(off), per_image_augmentation(src, per_image):
                try:
                    result = train(ds, src, strategy, epochs=args.today_epochs if off else args.epochs,
                                   device=str(dev), augment=True, cache_dir=work / f"cache-train-{off}",
                                   evaluate_test=False, batch_size=32, precision=precision, **params)
                except StrategyNotApplicable:
                    return None
            # the quietest epoch of the run (others share the machine)
            seconds[label] = min(seconds.get(label, float("inf")), *result.epoch_seconds)
        premades = premades or epoch_inputs(src, ds, result.batch_size)
        # as many ceiling epochs per round as the runs had: the min of more samples is lower
        ceiling = min(ceiling, *(bare_epoch(result.model.to(dev), *premades, dev, precision)
                                 for _ in range(args.epochs)))
    return seconds, ceiling


if __name__ == "__main__":
    main()
