"""Seeds: the run's, and one per stage and epoch, so an out-of-memory retry replays the same order."""

from __future__ import annotations

import hashlib
import random
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    pass

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _stage_seed(seed: int, stage: str, epoch: int) -> int:
    h = hashlib.sha256(f"{seed}|{stage}|{epoch}".encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


def _worker_init(worker_id: int) -> None:
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)
