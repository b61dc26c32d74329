"""Freed memory kept for reuse on glibc: a repeated large allocation stops page-faulting (``autotransfer.memory``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")

PROBE = """
import resource, sys
import torch
from autotransfer.memory import keep_freed_memory
applied = keep_freed_memory()
for _ in range(12):  # warm: the heap grows until freed blocks coalesce into room for the next one
    torch.ones(12_500_000).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):  # 50 MB each time, freed each time, as a batch's activations are
    torch.ones(12_500_000).sum()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(env_extra: dict[str, str]) -> tuple[str, int]:
    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


def test_a_freed_large_block_is_reused_instead_of_faulted_in_again():
    kept, kept_faults = _faults({"AUTOTRANSFER_MALLOC": ""})
    system, system_faults = _faults({"AUTOTRANSFER_MALLOC": "system"})
    assert (kept, system) == ("True", "False")  # the environment variable leaves the C library's defaults
    pages = 5 * 50_000_000 // 4096
    assert system_faults > pages // 2  # glibc's default: every 50-MB block is mapped and faulted in again
    assert kept_faults < pages // 20  # kept: the heap's freed block serves the next one
