"""Freed memory kept for reuse on glibc (Linux), so CPU training does not page-fault every batch.

Training and extraction on the CPU allocate and free the activations of every batch, many of them
tens of megabytes. glibc serves allocations above its mmap threshold (at most 32 MB) from fresh
``mmap`` pages and returns them on ``free``, and trims the heap's free top above its trim
threshold, so each batch's activations are zero-filled by the kernel again: on the 1,259-digits
search this was 837 s of system CPU beside 1,141 s of user CPU (440 million minor page faults).
``keep_freed_memory`` turns ``mmap`` allocation off (``M_MMAP_MAX`` 0: every block comes from the
heap and is reused once freed) and lets the heap keep up to ``TRIM_BYTES`` free at its top. One
training step of efficientnet-lite0 (batch 64, 224 px, two threads): 36.9 s → 22.0 s wall for six
steps, system CPU 31.4 → 0.1 s, peak resident memory 6.1 → 6.9 GB; one epoch of full fine-tuning
on 700 images at 224 px, 67.4 s → 47.3 s, peak 6.3 → 7.8 GB (``benchmarks/bench_memory.py``).

It is process-wide and applied once, by ``train`` and ``extract`` on the CPU; ``AUTOTRANSFER_MALLOC=system``
leaves the C library's defaults.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters
TRIM_BYTES = 1 << 30  # free memory the heap keeps at its top before returning it to the system
_applied = False


def keep_freed_memory(device: Any = "cpu") -> bool:
    """Apply the setting above once (glibc only) when ``device`` is the CPU; True when it is in effect."""
    global _applied
    if _applied:
        return True
    if str(device).split(":")[0] != "cpu" or os.environ.get("AUTOTRANSFER_MALLOC", "").lower() == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        _applied = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_BYTES) == 1
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to change
        return False
    return _applied
