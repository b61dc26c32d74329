"""Shared fixtures: real offline data written once per session, and two CLI runners.

``cli`` runs ``autotransfer`` in this process through click's ``CliRunner`` (seconds saved per call:
no interpreter start, no torch import). ``cli_subprocess`` runs it in a fresh process; tests use it
where a fresh process is the thing under test: signals, what an import pulls in, and environment
variables that third-party libraries read when they are imported (``HF_HUB_OFFLINE``, ``HF_HOME``,
``TORCH_HOME``, ``PYTHONPATH``), which an in-process run could not honour once they are imported.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import traceback
import warnings
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


# a fresh interpreter's warning filters (``python -W`` unset): what a user's terminal shows
_FRESH_FILTERS = [("default", DeprecationWarning, "__main__"), ("ignore", DeprecationWarning, None),
                  ("ignore", PendingDeprecationWarning, None), ("ignore", ImportWarning, None),
                  ("ignore", ResourceWarning, None)]


def _show_on_stderr(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def _fresh_warnings():
    """Python warnings printed on the (captured) stderr as in a fresh process, not recorded by pytest."""
    with warnings.catch_warnings():
        warnings.resetwarnings()
        for action, category, module in reversed(_FRESH_FILTERS):
            warnings.filterwarnings(action, category=category, module=module or "")
        warnings.showwarning = _show_on_stderr
        yield


def _process_caches() -> list:
    """The process-wide memos of every loaded autotransfer module (each starts empty in a fresh process)."""
    from autotransfer.memo import BoundedMemo

    found = []
    for name, module in list(sys.modules.items()):
        if name.startswith("autotransfer") and module is not None:
            found += [v for v in vars(module).values() if isinstance(v, BoundedMemo)]
    from autotransfer import sources

    return found + [sources._reachable]


def _memo_items(memo):
    return memo._items if hasattr(memo, "_items") else memo


@contextlib.contextmanager
def _fresh_process_state():
    """What a command changes for the whole process, as a fresh process has it, and put back afterwards:
    the plugin manager, the console logger and its warning memory, the memos, environment, argv,
    working directory, plugin-folder modules, torch's thread count and global generator."""
    from autotransfer import console, plugins

    saved_plugins = (plugins._manager, dict(plugins._config))
    log = console.logger
    saved_log = (list(log.handlers), log.level, log.propagate, list(console._seen))
    caches = [(c, dict(_memo_items(c))) for c in _process_caches()]
    for cache, _ in caches:
        _memo_items(cache).clear()
    console._seen.clear()
    plugins.configure()
    saved_env, saved_argv, saved_cwd, saved_modules = dict(os.environ), list(sys.argv), os.getcwd(), set(sys.modules)
    torch = sys.modules.get("torch")
    saved_torch = (torch.get_num_threads(), torch.get_rng_state()) if torch else None
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        sys.argv[:] = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        for name in set(sys.modules) - saved_modules:
            if name.startswith("autotransfer_dirplugin_"):  # --plugins-dir files, loaded by the command
                del sys.modules[name]
        plugins._manager, config = saved_plugins
        plugins._config.clear()
        plugins._config.update(config)
        log.handlers[:], log.propagate = saved_log[0], saved_log[2]
        log.setLevel(saved_log[1])
        console._seen.clear()
        console._seen.extend(saved_log[3])
        for cache, items in caches:
            _memo_items(cache).clear()
            _memo_items(cache).update(items)
        if saved_torch:
            torch.set_num_threads(saved_torch[0])
            torch.set_rng_state(saved_torch[1])


def _stream_handlers() -> list[logging.StreamHandler]:
    """Plain stream handlers of every logger (optuna's, transformers'): each holds the stream it was made with."""
    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values()
                                      if isinstance(v, logging.Logger))]
    return [h for lg in loggers for h in lg.handlers if type(h) is logging.StreamHandler]


@contextlib.contextmanager
def _logs_on_stderr(outside):
    """Libraries' log handlers write to the current ``sys.stderr`` for the block, as to a fresh process's
    stderr; afterwards each goes back to its stream, and one made during the block to ``outside``."""
    stderr = sys.stderr
    saved = {h: h.stream for h in _stream_handlers() if h.stream not in (sys.stdout, sys.__stdout__)}
    for handler in saved:
        handler.setStream(stderr)
    try:
        yield
    finally:
        for handler in _stream_handlers():
            if handler in saved:
                handler.setStream(saved[handler])
            elif handler.stream is stderr:
                handler.setStream(outside)


def run_cli_in_process(*args: str, env: dict | None = None, cwd: str | None = None, timeout: int = 600) -> CliResult:
    """Run ``autotransfer ARGS`` in this process: ``main()`` with click's ``CliRunner`` capturing stdout
    and stderr apart, ``env`` and ``cwd`` applied for the call only, exit codes as a process gives them.

    ``timeout`` is accepted for ``run_cli``'s signature; nothing can stop a call in process.
    """
    from click.testing import CliRunner

    from autotransfer.cli import main

    runner = CliRunner()
    outside = sys.stderr
    with (_fresh_process_state(), runner.isolation(env=env) as (out, err, _), _fresh_warnings(),
          _logs_on_stderr(outside)):
        sys.argv[:] = ["autotransfer", *args]  # the lazy group reads argv to tell a help listing
        if cwd is not None:
            os.chdir(cwd)
        code = _exit_code(main, list(args))
        sys.stdout.flush()
        sys.stderr.flush()
    return CliResult(code, out.getvalue().decode(runner.charset), err.getvalue().decode(runner.charset, "replace"))


def _exit_code(main, argv: list[str]) -> int:
    """``main(argv)``'s exit status as the interpreter would give it (an uncaught error: traceback, 1)."""
    try:
        main(argv)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1
    return 0


@pytest.fixture()
def cli():
    """``autotransfer ARGS`` run in this process (see ``run_cli_in_process``)."""
    return run_cli_in_process


@pytest.fixture()
def cli_subprocess():
    """``autotransfer ARGS`` run in a fresh process, for tests that need one (see the module docstring)."""
    return run_cli


@pytest.fixture(scope="session")
def zoo(tmp_path_factory) -> dict:
    """The digits zoo (test_resnet pretrained on digits 0–4, and on shuffled labels), by name. Built with
    one torch thread whichever test asks first: the thread count changes the float sums of training, so
    the weights (and every score measured on them) would otherwise depend on the order tests run in."""
    import torch

    from autotransfer.zoo import build_zoo

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        entries = build_zoo(tmp_path_factory.mktemp("zoo"), archs=("test_resnet",), kinds=("helpful", "harmful"),
                            epochs=10)
    finally:
        torch.set_num_threads(old)
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
