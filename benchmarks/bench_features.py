"""Throughput of ``autotransfer.features.extract`` against the bare model forward (the ceiling).

For each model: ``extract`` over a real dataset written to disk (images decoded and
transformed in loader workers, texts tokenised per batch), cache off (a fresh cache folder),
against the same backbone's forward on tensors made beforehand with the same batch size.
The ratio says how much of the achievable speed extraction keeps; ``extract`` time includes
building the model (weights read from disk) and starting loader workers, but not Python
imports (the ceiling runs first and warms them).

Images: sklearn digits upscaled to 256 px PNGs (decoded, resized and centre-cropped to the
model's 224 px). Models are randomly initialised and saved locally (no downloads), loaded
through ``timm:<arch>@file`` like a user's weights. Text: the bundled all-MiniLM-L6-v2 on
BBC-news articles (max 256 tokens).

    python benchmarks/bench_features.py            # a few minutes on a laptop CPU
    python benchmarks/bench_features.py --quick    # a smoke run
Writes ``leaderboards/bench_features_<device>.csv``.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FULL = {"images": 64, "texts": 60, "repeats": 2, "models": [("resnet18", 224), ("vit_small_patch16_224", 224),
                                                ("efficientnet_b0", 224)]}
QUICK = {"images": 32, "texts": 30, "repeats": 1, "models": [("resnet18", 224), ("test_vit", 160)]}


def _ceiling(model, batches, device, autocast) -> float:
    """Items per second of ``model`` on ready-made batches (one warm-up batch not timed)."""
    import torch

    from autotransfer.features import move_to

    with torch.inference_mode(), autocast():
        model(move_to(batches[0], device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        n = 0
        for b in batches:
            out = model(move_to(b, device))
            n += len(out)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def bench_source(source, dataset, split, device, batch_size, repeats) -> dict:
    """Best of ``repeats`` interleaved (ceiling, extract) rounds: other load on the machine only slows a round."""
    import contextlib

    import torch

    from autotransfer.features import extract, resolve_device

    dev = resolve_device(device)
    # The ceiling runs first, so imports and the OS file cache are warm for both.
    items = dataset.split_items(split)
    if source.modality == "text":  # the ceiling gets the same length-sorted batches extract uses
        items = sorted(items, key=len, reverse=True)
    batches = [source.collate([source.load_item(i) for i in items[k:k + batch_size]])
               for k in range(0, len(items), batch_size)]
    model = source.build().eval().to(dev)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if dev.type == "cuda" else contextlib.nullcontext
    if dev.type == "cuda" and source.modality == "image":
        model = model.to(memory_format=torch.channels_last)
        batches = [b.contiguous(memory_format=torch.channels_last) for b in batches]
    ceilings, seconds = [], []
    for _ in range(repeats):
        ceilings.append(_ceiling(model, batches, dev, autocast))
        with tempfile.TemporaryDirectory() as cache:
            got = extract(source, dataset, split, device=device, batch_size=batch_size, cache_dir=cache,
                          progress=False)
        assert not got.cached
        seconds.append(got.seconds)
    n = len(got.features)
    rate, ceiling = n / min(seconds), max(ceilings)
    return {"source": source.name.split("@")[0], "modality": source.modality, "items": n, "batch_size": batch_size,
            "extract_items_per_s": round(rate, 2), "ceiling_items_per_s": round(ceiling, 2),
            "ratio": round(rate / ceiling, 3), "extract_seconds": round(min(seconds), 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few items, small models: a smoke run")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", default=None, help="CSV path (default leaderboards/bench_features_<device>.csv)")
    args = ap.parse_args(argv)

    import numpy as np
    import timm
    import torch
    from safetensors.torch import save_file

    from autotransfer.data import load
    from autotransfer.data.offline import digits_arrays, write_bbc_folder, write_images
    from autotransfer.features import resolve_device
    from autotransfer.sources import resolve_source

    plan = QUICK if args.quick else FULL
    dev = resolve_device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pixels, labels = digits_arrays()
        images = load(write_images(tmp / "digits", pixels[: plan["images"]], labels[: plan["images"]], size=256))
        images.splits["test"] = np.arange(len(images.items))  # every item in one split
        for arch, size in plan["models"]:
            torch.manual_seed(0)
            kwargs = {"img_size": size} if timm.models.get_pretrained_cfg(arch).fixed_input_size else {}
            weights = tmp / f"{arch}.safetensors"
            save_file({k: v.contiguous() for k, v in timm.create_model(arch, **kwargs).state_dict().items()},
                      str(weights))
            src = resolve_source(f"timm:{arch}@{weights}" + (f"?size={size}" if size != 224 else ""))
            row = bench_source(src, images, "test", args.device, args.batch_size, plan["repeats"])
            rows.append(row)
            print(row, file=sys.stderr, flush=True)
        texts = load(write_bbc_folder(tmp / "bbc", per_class=plan["texts"] // 5))
        texts.splits["test"] = np.arange(len(texts.items))
        row = bench_source(resolve_source("minilm-l6"), texts, "test", args.device, args.batch_size, plan["repeats"])
        rows.append(row)
        print(row, file=sys.stderr, flush=True)

    host = f"{dev.type}: " + (torch.cuda.get_device_name(dev) if dev.type == "cuda"
                              else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                                   f"{torch.get_num_threads()} torch threads")
    for r in rows:
        r["device"] = host
    out = Path(args.out) if args.out else ROOT / "leaderboards" / f"bench_features_{dev.type}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

    from autotransfer.textable import format_table

    print(format_table(rows, ["source", "modality", "items", "batch_size", "extract_items_per_s",
                              "ceiling_items_per_s", "ratio", "extract_seconds"]))
    print(f"\n{host}; wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
