"""Seconds per epoch of every strategy through the one training loop, on the same source and data.

Also the point of cached features: ``linear_probe`` (heads trained on features extracted once,
``autotransfer.features.extract``) against the *same* frozen-backbone probe run the naive way,
the backbone re-run on every image every epoch (a ``Strategy`` whose stage does not use the cache).
The ratio is printed per epoch and for a whole run from a cold cache (extraction included).
(The naive loop's heads see raw features, not standardised ones, so its val score differs:
it is here for time only.)

Sources are randomly initialised tiny models saved locally (no downloads) and loaded through
``timm:<arch>@file`` / ``hf:<folder>`` like a user's own weights:

* image: timm ``test_vit`` at 32 px (all five strategies apply, LoRA included) on all 1,797
  sklearn digits written as PNGs (70/15/15 split);
* text: a 2-layer, 128-wide BERT with a vocabulary built from the corpus on 500 BBC articles.

    python benchmarks/bench_train.py              # ~3 minutes on a 2-core CPU
    python benchmarks/bench_train.py --quick      # a smoke run
Writes ``leaderboards/bench_train_<device>.csv``.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ("linear_probe", "partial", "full", "lp_ft", "lora")


def _frozen_loop_strategy():
    """``linear_probe`` without the cache: the backbone runs on every batch of every epoch."""
    from autotransfer_plugins.strategies.linear_probe import LinearProbe

    from autotransfer.strategies import Stage

    class FrozenBackboneLoop(LinearProbe):
        name = "frozen_backbone_loop"
        can_use_cached_features = False

        def stages(self, params):
            return [Stage("probe", self, cached_features=False, params=params)]

    return FrozenBackboneLoop()


def make_tiny_bert(folder: Path, texts: list[str], hidden: int = 128, vocab_size: int = 3000) -> str:
    """A random-init 2-layer BERT with a word vocabulary from ``texts``, saved with save_pretrained."""
    import collections
    import re

    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = collections.Counter(w for t in texts for w in re.findall(r"[a-z]+|[0-9]+|[^\sa-z0-9]", t.lower()))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [w for w, _ in words.most_common(vocab_size - 5)]
    folder.mkdir(parents=True, exist_ok=True)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=2 * hidden, max_position_embeddings=128)).save_pretrained(folder)
    return f"hf:{folder}?max_length=128"


def _setups(work: Path, quick: bool):
    import numpy as np
    import timm
    import torch
    from safetensors.torch import save_file

    from autotransfer.data.offline import digits_arrays, write_bbc_folder, write_images
    from autotransfer.datasets import load

    images, y = digits_arrays()
    keep = np.arange(len(y)) if not quick else np.flatnonzero(np.arange(len(y)) % 4 == 0)
    write_images(work / "digits", images[keep], y[keep], names=[f"{i:04d}" for i in keep], size=32)
    torch.manual_seed(0)
    vit = timm.create_model("test_vit", num_classes=0, img_size=32)
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(work / "test_vit.safetensors"))
    spec = f"timm:test_vit@{work / 'test_vit.safetensors'}?size=32"
    yield "timm:test_vit@32px", spec, load(work / "digits"), "digits 32px"

    bbc = load(write_bbc_folder(work / "bbc", per_class=20 if quick else 100))
    spec = make_tiny_bert(work / "bert", bbc.items, hidden=128)
    yield "hf:tiny-bert-128", spec, bbc, "bbc"


def _parse():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run on a quarter of the data, 2 epochs")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per run (default 4, 2 with --quick)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=None, help="CSV path (default leaderboards/bench_train_<device>.csv)")
    return ap.parse_args()


def main() -> None:
    args = _parse()

    import torch

    from autotransfer.features import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    try:  # import LoRA's dependency up front so its one-off import time is not billed to an epoch
        import peft  # noqa: F401
    except ImportError:
        pass
    dev = resolve_device(args.device)
    epochs = args.epochs or (2 if args.quick else 4)
    if dev.type == "cuda":
        where = f"cuda: {torch.cuda.get_device_name(dev)}"
    else:
        where = f"cpu: {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for label, spec, ds, data_name in _setups(work, args.quick):
            cache = work / f"cache-{label.replace(':', '_')}"
            rows += _time_strategies(label, spec, ds, data_name, cache, epochs, dev, where)
    out = Path(args.out) if args.out else ROOT / "leaderboards" / f"bench_train_{dev.type}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {out}")


def _time_strategies(label, spec, ds, data_name, cache, epochs, dev, where) -> list[dict]:
    """One row per strategy (and the frozen-backbone loop) trained on one source, each printed."""
    import autotransfer

    rows = []
    per_epoch: dict[str, float] = {}
    runs = [(s, s) for s in STRATEGIES] + [("frozen_backbone_loop", _frozen_loop_strategy())]
    for name, strategy in runs:
        params = {"depth": 1} if name == "partial" else {}
        t0 = time.perf_counter()
        try:
            r = autotransfer.train(ds, spec, strategy, epochs=epochs, device=str(dev), cache_dir=cache,
                                   evaluate_test=False, **params)
        except autotransfer.AutotransferError as exc:
            print(f"{label:18s} {name:22s} skipped: {exc}")
            continue
        total = time.perf_counter() - t0
        sec = statistics.median(r.epoch_seconds)
        per_epoch[name] = sec
        row = {
            "source": label, "data": data_name, "strategy": name, "n_train": len(ds.splits["train"]),
            "batch_size": r.batch_size, "epochs": r.epochs_run, "seconds_per_epoch": round(sec, 4),
            "feature_seconds": round(r.feature_seconds, 3), "total_seconds": round(total, 3),
            "val_score": round(r.val_score, 4), "trainable_params": r.trainable_params,
            "total_params": r.total_params, "device": where,
        }
        rows.append(row)
        print(f"{label:18s} {name:22s} {sec:8.3f} s/epoch  total {total:7.2f}s "
              f"(features {r.feature_seconds:.2f}s)  val {r.val_score:.3f}  "
              f"trainable {r.trainable_params:,}/{r.total_params:,}")
    if "linear_probe" in per_epoch and "frozen_backbone_loop" in per_epoch:
        lp = next(x for x in rows if x["strategy"] == "linear_probe")
        fb = next(x for x in rows if x["strategy"] == "frozen_backbone_loop")
        speedup = per_epoch["frozen_backbone_loop"] / per_epoch["linear_probe"]
        print(f"{label}: cached-feature linear probe is {speedup:.0f}x "
              f"faster per epoch than re-running the frozen backbone "
              f"({per_epoch['linear_probe']:.3f}s vs {per_epoch['frozen_backbone_loop']:.3f}s); a whole "
              f"{epochs}-epoch run from a cold cache: {fb['total_seconds'] / lp['total_seconds']:.1f}x")
    return rows


if __name__ == "__main__":
    main()
