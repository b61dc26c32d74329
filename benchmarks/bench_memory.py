"""CPU training with glibc's default allocator against freed memory kept for reuse (``autotransfer.memory``).

One epoch of full fine-tuning of efficientnet-lite0 (real ImageNet weights) on ``--n`` rendered
digits (``scale_data.py``, 70/15/15) at ``--px``, run twice in fresh processes, alternating: with
``AUTOTRANSFER_MALLOC=system`` (glibc's defaults: activations above the mmap threshold are mapped,
zero-filled and unmapped every batch) and with the tool's default (mmap off, 1 GB kept free at the
heap's top). Each run prints its wall seconds, user and system CPU seconds, minor page faults and
peak resident memory; the decoded-image cache is filled before either is timed.

    python benchmarks/bench_memory.py --n 1000 --px 224
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_data import make_folder  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

EPOCH = """
import json, os, resource, sys, time
import torch
import autotransfer
folder, px, cache, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
torch.set_num_threads(threads)
t0, c0 = time.perf_counter(), os.times()
r0 = resource.getrusage(resource.RUSAGE_SELF)
autotransfer.train(folder, f"efficientnet-lite0?size={px}", "full", epochs=1, evaluate_test=False,
                   cache_dir=cache, progress=False, device="cpu")
c1, r1 = os.times(), resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps(dict(seconds=time.perf_counter() - t0, user=c1.user - c0.user, system=c1.system - c0.system,
                      minor_faults=r1.ru_minflt - r0.ru_minflt, peak_gb=r1.ru_maxrss / 1e6)))
"""


def one(mode: str, folder: Path, args) -> dict:
    env = {**os.environ, "AUTOTRANSFER_MALLOC": "system" if mode == "system" else ""}
    out = subprocess.run([sys.executable, "-c", EPOCH, str(folder), str(args.px), str(args.work / "cache"),
                          str(args.threads)], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--px", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="runs per mode, alternating")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "autotransfer-bench-memory")
    ap.add_argument("--out", type=Path, default=REPO / "leaderboards" / "bench_memory_cpu.csv")
    args = ap.parse_args(argv)
    folder = make_folder(args.work / f"data_{args.n}_{args.px}", args.n, 10, args.px)
    one("kept", folder, args)  # fills the decoded-image cache; not timed
    fields = ["mode", "repeat", "n", "px", "threads", "seconds", "user", "system", "minor_faults", "peak_gb"]
    rows = []
    with args.out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for rep in range(args.repeats):
            for mode in ("system", "kept"):
                m = one(mode, folder, args)
                row = dict(mode=mode, repeat=rep, n=args.n, px=args.px, threads=args.threads,
                           **{k: round(v, 2) if isinstance(v, float) else v for k, v in m.items()})
                w.writerow(row)
                fh.flush()
                rows.append(row)
                print("  ".join(f"{k}={row[k]}" for k in fields), flush=True)
    best = {mode: min(r["seconds"] for r in rows if r["mode"] == mode) for mode in ("system", "kept")}
    print(f"one epoch, best of {args.repeats}: glibc defaults {best['system']:.1f} s, kept {best['kept']:.1f} s "
          f"({best['system'] / best['kept']:.2f}x)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
