"""The Python API a notebook uses (rank, search, leaderboard), its messages through ``logging``, plots
that leave the caller's matplotlib backend alone, and run-folder locks that need no POSIX module."""

from __future__ import annotations

import ast
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers_training import timm_spec, write_digits

import autotransfer
from autotransfer._search.report import SUMMARY_COLUMNS, TRIAL_COLUMNS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Digits 0-2 (10 per class, 16 px) and two random-init tiny sources that differ by seed."""
    root = tmp_path_factory.mktemp("notebook")
    data = write_digits(root / "digits", classes=range(3), per_class=10, size=16)
    (root / "s0").mkdir()
    (root / "s1").mkdir()
    specs = [timm_spec(root / "s0", "test_resnet", size=16, seed=0),
             timm_spec(root / "s1", "test_resnet", size=16, seed=1)]
    return {"data": data, "specs": specs, "cache": root / "cache", "root": root}


def test_rank_returns_the_transferability_table_best_first(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    df = autotransfer.rank(tiny["data"], sources=tiny["specs"], estimators="logme,knn", out=out,
                           cache_dir=str(tiny["cache"]), device="cpu", progress=False)
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["source", "provider", "modality", "feature_dim", "n_samples", "logme", "knn",
                                "rank_logme", "rank_knn", "rank", "extract_seconds", "score_seconds", "notes"]
    assert sorted(df["source"]) == sorted(tiny["specs"])
    assert df["rank"].tolist() == [1, 2]  # best first, by the primary estimator (logme)
    assert df["logme"].iloc[0] >= df["logme"].iloc[1]
    # the same rows as the CSV the CLI writes
    csv = pd.read_csv(out / "leaderboards" / "transferability.csv")
    pd.testing.assert_frame_equal(df.drop(columns="notes"), csv.drop(columns="notes"), check_dtype=False)
    # without out, nothing is written
    again = autotransfer.rank(tiny["data"], sources=tiny["specs"], estimators=["logme"], cache_dir=str(tiny["cache"]),
                              device="cpu", progress=False)
    assert again["source"].tolist() == df["source"].tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_rank_with_a_bad_primary_is_one_line(tiny):
    with pytest.raises(autotransfer.AutotransferError) as info:
        autotransfer.rank(tiny["data"], sources=tiny["specs"][:1], estimators="knn", primary="logme",
                          cache_dir=str(tiny["cache"]), device="cpu", progress=False)
    assert "'logme'" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.slow  # a search end to end
def test_search_then_leaderboard_and_the_backend_is_untouched(tiny, tmp_path):
    import matplotlib

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # not the Agg the plots are drawn with: a switch to Agg would show
    try:
        out = tmp_path / "run"
        res = autotransfer.search(tiny["data"], out=out, sources=tiny["specs"][:1], trials=3, epochs=2,
                                  estimators=["logme"], progress=False, device="cpu", cache_dir=str(tiny["cache"]))
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    assert (out / "history.png").stat().st_size > 0 and (out / "transferability_vs_val.png").stat().st_size > 0
    lb = autotransfer.leaderboard(out)
    assert list(lb) == ["transferability", "trials", "summary"]
    trials = lb["trials"]
    assert isinstance(trials, pd.DataFrame) and len(trials) == 3
    assert list(trials.columns[:len(TRIAL_COLUMNS)]) == TRIAL_COLUMNS
    assert trials["trial"].tolist() == [r["trial"] for r in res.trials] == [0, 1, 2]
    assert (trials["role"] == "scratch").sum() == 1
    assert list(lb["summary"].columns) == SUMMARY_COLUMNS and len(lb["summary"]) == 1
    assert lb["summary"]["best_source"].iloc[0] == res.best_source
    assert lb["transferability"]["source"].tolist() == tiny["specs"][:1]
    same = res.leaderboard()  # the result exposes the same tables
    assert list(same) == list(lb) and same["trials"].equals(trials)


def test_leaderboard_of_a_folder_without_a_search_is_one_line(tmp_path):
    with pytest.raises(autotransfer.AutotransferError) as info:
        autotransfer.leaderboard(tmp_path)
    msg = str(info.value)
    assert "\n" not in msg and str(tmp_path) in msg and "autotransfer.search" in msg
    (tmp_path / "leaderboards").mkdir()
    (tmp_path / "leaderboards" / "transferability.csv").write_text("source,rank\na,1\n")  # `rank` only
    with pytest.raises(autotransfer.AutotransferError, match=r"no trials\.csv, summary\.csv in "):
        autotransfer.leaderboard(tmp_path)


# --- messages ---


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def test_warnings_and_notes_are_log_records_shown_on_stderr_as_before(capsys):
    from autotransfer.console import note, seen_warnings, warn

    log = logging.getLogger("autotransfer")
    mine = _Records()
    log.addHandler(mine)
    try:
        capsys.readouterr()
        warn("a 100% odd message")
        note("a note")
        assert capsys.readouterr().err == "warning: a 100% odd message\na note\n"
        assert [(r.levelno, r.getMessage()) for r in mine.records] == [
            (logging.WARNING, "a 100% odd message"), (logging.INFO, "a note")]
        assert mine.records[0].module == "test_notebook"  # the caller, not console.py
        assert seen_warnings()[-1] == "a 100% odd message"
        level = log.level
        log.setLevel(logging.WARNING)  # how a notebook hides notes
        try:
            note("hidden")
            warn("still shown")
        finally:
            log.setLevel(level)
        assert capsys.readouterr().err == "warning: still shown\n"
    finally:
        log.removeHandler(mine)


def test_a_warning_under_a_progress_bar_gets_its_own_line(capsys):
    from tqdm.auto import tqdm

    from autotransfer.console import warn

    with tqdm(total=2, file=sys.stderr, desc="bar") as bar:
        bar.update(1)
        warn("between")
        bar.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert "warning: between" in lines


def test_library_messages_reach_stderr_once_without_the_cli():
    code = ("import logging; logging.basicConfig(format='LOGGED %(message)s')\n"
            "from autotransfer.console import note, warn\nwarn('w'); note('n')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode == 0, r.stderr
    assert r.stderr == "warning: w\nn\n"  # the default handler, and not a second copy through root's


# --- portable locks ---

_POSIX_ONLY = {"fcntl", "termios", "tty", "pty", "pwd", "grp", "resource", "msvcrt", "winreg"}


def test_no_platform_only_module_is_imported_at_module_level():
    found = []
    for path in sorted((ROOT / "autotransfer").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only: an import inside a function may pick a platform
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in _POSIX_ONLY]
    assert not found


def test_a_killed_searchs_owner_lock_is_released(tmp_path):
    from autotransfer._search.storage import RunOwner

    code = ("import sys, time\nfrom autotransfer._search.storage import RunOwner\n"
            f"o = RunOwner({str(tmp_path)!r}).__enter__()\nprint(o.sole, flush=True)\ntime.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "True"
        holder.kill()  # no clean exit: the lock is left to the OS
        holder.wait(timeout=60)
        t0 = time.time()
        with RunOwner(tmp_path) as owner:
            assert owner.sole  # the OS dropped the dead process's hold: no wait, and sole again
        assert time.time() - t0 < 10
    finally:
        if holder.poll() is None:
            holder.kill()
