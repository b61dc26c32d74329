"""Shared fixtures: real offline data written once per session, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def run_cli(*args: str, env: dict | None = None, cwd: str | None = None, timeout: int = 600) -> CliResult:
    """Run ``autotransfer ARGS`` in a subprocess, as a user would."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "autotransfer", *args], capture_output=True, text=True,
        env=full_env, cwd=cwd, timeout=timeout,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """All of sklearn's digits as an image folder (8×8 PNGs)."""
    from autotransfer.data.offline import write_digits_folder

    return write_digits_folder(tmp_path_factory.mktemp("digits") / "digits")


@pytest.fixture(scope="session")
def bbc_dir(tmp_path_factory) -> Path:
    """The whole BBC-news corpus as a text folder."""
    from autotransfer.data.offline import write_bbc_folder

    return write_bbc_folder(tmp_path_factory.mktemp("bbc") / "bbc")


@pytest.fixture()
def cli():
    return run_cli


@pytest.fixture(scope="session")
def zoo(tmp_path_factory) -> dict:
    """The digits zoo (test_resnet pretrained on digits 0–4, and on shuffled labels), by name."""
    from autotransfer.zoo import build_zoo

    entries = build_zoo(tmp_path_factory.mktemp("zoo"), archs=("test_resnet",), kinds=("helpful", "harmful"),
                         epochs=10)
    return {e.name: e for e in entries}


@pytest.fixture(scope="session")
def target_dir(tmp_path_factory) -> Path:
    """Digits 5–9, 20 labels per class for training (pre-split folder)."""
    from autotransfer.zoo import write_target_task

    return write_target_task(tmp_path_factory.mktemp("target") / "target", per_class=20)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the module: on shared 2-core CI boxes two OpenMP threads under load run
    the tiny models ~5x slower than one. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def digits5(tmp_path_factory):
    """Digits 0–4, 30 per class, as a 32 px image folder, loaded (split 70/15/15)."""
    from helpers_training import write_digits

    from autotransfer.datasets import load

    return load(write_digits(tmp_path_factory.mktemp("digits5") / "digits", classes=range(5), per_class=30))
