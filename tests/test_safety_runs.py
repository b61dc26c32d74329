"""No silent wrong answers in a search's run (issue 12): a folder of other data, an unwritable or full
disk, an unreachable storage, a worker killed in its first seconds, a second search on one folder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from helpers_training import timm_spec, write_digits

from autotransfer._search import storage as st
from autotransfer._search.record import SCRATCH
from autotransfer.errors import AutotransferError

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
ROLE = "role"  # the key run folders store a trial's role under (TrialRecord.role)


def _one_line_error(r, *words) -> str:
    assert r.code == 2, (r.code, r.out, r.err)
    assert "Traceback" not in r.err, r.err[-3000:]
    errors = [line for line in r.err_lines if line.startswith("error:")]
    assert len(errors) == 1, r.err
    for w in words:
        assert w in errors[0], (w, errors[0])
    return errors[0]


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _search_args(data: Path, out: Path, spec: str, cache: Path, trials: int = 3, *extra: str) -> list[str]:
    return ["search", "--data", str(data), "--out", str(out), "--sources", spec, "--trials", str(trials),
            "--epochs", "2", "--estimators", "logme", "--no-progress", "--device", "cpu", "--cache-dir",
            str(cache), *extra]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two datasets (digits 0-2 and 3-5), one tiny local source, one finished search of the first."""
    from conftest import run_cli_in_process

    root = tmp_path_factory.mktemp("runs")
    a = write_digits(root / "digits-a", classes=range(3), per_class=10, size=16)
    b = write_digits(root / "digits-b", classes=range(3, 6), per_class=10, size=16)
    spec = timm_spec(root, "test_resnet", size=16)
    out = root / "run-a"
    r = run_cli_in_process(*_search_args(a, out, spec, root / "cache"))
    assert r.code == 0, r.err[-3000:]
    return {"a": a, "b": b, "spec": spec, "out": out, "cache": root / "cache", "root": root,
            "summary": pd.read_csv(out / "leaderboards" / "summary.csv").iloc[0]}


def _pg_ok() -> bool:
    if st.pg_available(PG_URL):
        return True
    if os.environ.get("AUTOTRANSFER_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required (AUTOTRANSFER_REQUIRE_POSTGRES=1) but {PG_URL} is not reachable")
    pytest.skip(f"no PostgreSQL server at {PG_URL}")


def _can_mount() -> bool:
    """Root with mount namespaces: a real read-only or full file system for one command."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


# --- item 2: one folder, one data ---


@pytest.mark.slow  # a search of the module's world
def test_out_of_other_data_is_refused_and_nothing_in_it_changes(cli, world):
    out = world["out"]
    before = _snapshot(out)
    r = cli(*_search_args(world["b"], out, world["spec"], world["cache"]))
    line = _one_line_error(r, f"--out {out}", str(world["a"]), str(world["b"]), "another --out", f"delete {out}")
    assert "fingerprint" in line
    assert _snapshot(out) == before
    # ranking other data into it is refused the same way (its transferability.csv is the search's)
    ranked = cli("rank", "--data", str(world["b"]), "--out", str(out), "--sources", world["spec"], "--estimators",
                 "logme", "--device", "cpu", "--cache-dir", str(world["cache"]))
    _one_line_error(ranked, f"--out {out}", str(world["a"]), "another --out")
    assert _snapshot(out) == before
    # the same folder of data split another way is other data too, and the line says why
    reseeded = cli(*_search_args(world["a"], out, world["spec"], world["cache"]), "--seed", "1")
    _one_line_error(reseeded, f"--out {out} holds a search of {world['a']} as it was", "split", "another --out")
    assert _snapshot(out) == before
    # the first command again: it resumes its own study and reproduces its answer
    again = cli(*_search_args(world["a"], out, world["spec"], world["cache"]))
    assert again.code == 0, again.err[-3000:]
    summary = pd.read_csv(out / "leaderboards" / "summary.csv").iloc[0]
    same = [c for c in summary.index if c not in ("total_seconds", "refit_seconds", "ensemble_seconds")]  # timings
    assert summary[same].equals(world["summary"][same]), (summary, world["summary"])
    assert int(summary["n_trials"]) == 3


@pytest.mark.slow  # a search of the module's world
def test_leaderboards_and_result_show_sources_by_name(world):
    weights = world["spec"].split("@")[1].split("?")[0]
    assert Path(weights).is_absolute()
    out = world["out"]
    for path in (out / "leaderboards" / "trials.csv", out / "leaderboards" / "summary.csv",
                 out / "best" / "result.json", out / "report.md"):
        assert weights not in path.read_text(), path
    trials = pd.read_csv(out / "leaderboards" / "trials.csv")
    assert "timm:test_resnet@test_resnet.safetensors?size=16" in set(trials["source"])
    # the full spec stays where the search needs it: the ranking and the study
    trans = pd.read_csv(out / "leaderboards" / "transferability.csv")
    assert trans["source"].tolist() == [world["spec"]]


# --- item 8: failures before any ranking, and a disk that fills mid-run ---


@pytest.mark.parametrize("kind", ["refused", "no-database"])
@pytest.mark.slow  # a search of the module's world
def test_unreachable_storage_fails_before_ranking(cli, world, tmp_path, kind):
    if kind == "refused":
        url, shown, words = "postgresql://postgres:secret@127.0.0.1:1/test", "postgresql://postgres@127.0.0.1:1/test", \
            ("Connection refused",)
    else:
        _pg_ok()
        url = "postgresql://postgres:secret@127.0.0.1:5432/autotransfer_no_such_db"
        shown, words = "postgresql://postgres@127.0.0.1:5432/autotransfer_no_such_db", ("does not exist",)
    out = tmp_path / "run"
    r = cli(*_search_args(world["a"], out, world["spec"], world["cache"], 3, "--storage", url, "--study-name", "x"))
    _one_line_error(r, "--storage", shown, "expected a reachable database URL", *words)
    assert "secret" not in r.err
    assert not out.exists()  # refused before the ranking wrote anything


@pytest.mark.slow  # a search of the module's world
def test_a_shared_study_of_other_data_is_refused_before_ranking(cli, world, tmp_path):
    _pg_ok()
    name = f"other-data-{os.getpid()}-{int(time.time())}"
    study = optuna.create_study(storage=st.open_storage(PG_URL), study_name=name, direction="maximize")
    study.set_user_attr("fingerprint", "0123456789ab" + "0" * 52)
    study.set_user_attr("sources", ["elsewhere"])
    try:
        out = tmp_path / "run"
        r = cli(*_search_args(world["a"], out, world["spec"], world["cache"], 3, "--storage", PG_URL,
                              "--study-name", name))
        _one_line_error(r, f"study {name!r}", "made for other data", "0123456789ab", "--study-name")
        assert not out.exists()  # refused before the ranking wrote anything
        assert len(optuna.load_study(study_name=name, storage=st.open_storage(PG_URL)).trials) == 0
    finally:
        optuna.delete_study(study_name=name, storage=st.open_storage(PG_URL))


def _read_only_cmd(folder: Path, argv: list[str]) -> list[str]:
    """``autotransfer ARGV`` with ``folder`` read-only (a read-only bind mount as root, else chmod)."""
    cli = [sys.executable, "-m", "autotransfer", *argv]
    if os.geteuid() != 0:
        for p in [folder, *folder.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
        return cli
    if not _can_mount():
        pytest.skip("running as root without mount namespaces: no way to make a folder read-only")
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, str(folder), *cli]


@pytest.mark.slow  # a search of the module's world
def test_read_only_out_is_one_line_before_ranking(world, tmp_path):
    from conftest import CliResult

    run = tmp_path / "copy"
    shutil.copytree(world["out"], run)
    before = _snapshot(run)
    argv = _search_args(world["a"], run, world["spec"], tmp_path / "fresh-cache")
    proc = subprocess.run(_read_only_cmd(run, argv), capture_output=True, text=True, timeout=300)
    r = CliResult(proc.returncode, proc.stdout, proc.stderr)
    _one_line_error(r, f"cannot write to --out {run}", "another --out")
    assert not (tmp_path / "fresh-cache").exists()  # no feature was extracted: no ranking ran
    for p in [run, *run.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o200)
    assert _snapshot(run) == before


@pytest.mark.slow  # a search of the module's world
def test_disk_full_mid_search_is_one_line_and_the_study_resumes(cli, world, tmp_path):
    """A real full disk: the run folder on a 32 MiB tmpfs (a private mount namespace), filled with
    zeros as soon as the first trial is on the leaderboard."""
    if not _can_mount():
        pytest.skip("needs root and mount namespaces for a tmpfs of its own")
    mnt, keep = tmp_path / "mnt", tmp_path / "kept"
    mnt.mkdir()
    out = mnt / "run"
    argv = _search_args(world["a"], out, world["spec"], world["cache"], 4)
    script = f"""
mount -t tmpfs -o size=32m tmpfs {mnt} || exit 97
{sys.executable} -m autotransfer {' '.join(f"'{a}'" for a in argv)} > {tmp_path}/stdout 2> {tmp_path}/stderr &
pid=$!
while kill -0 $pid 2>/dev/null && ! grep -q COMPLETE {out}/leaderboards/trials.csv 2>/dev/null; do sleep 0.1; done
dd if=/dev/zero of={out}/filler bs=64k 2>/dev/null
wait $pid; rc=$?
rm -f {out}/filler
cp -a {out} {keep}
exit $rc
"""
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=600)
    from conftest import CliResult

    r = CliResult(proc.returncode, (tmp_path / "stdout").read_text(), (tmp_path / "stderr").read_text())
    assert r.code != 97, "tmpfs mount failed"
    line = _one_line_error(r, "the search stopped", f"--out {out}", "rerun the same command to resume")
    assert "space" in line or "full" in line, line
    assert f"writing {out}/" in line, line  # the file: the study database, a model or a leaderboard
    assert "exceeding max length" not in r.err
    # nothing lost: the study opens, the finished trial is there, the leaderboard is whole
    study = optuna.load_study(study_name="autotransfer-digits-a", storage=f"sqlite:///{keep / 'study.db'}")
    done = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert done and not [t for t in study.get_trials() if t.state.name == "FAIL"]
    rows = pd.read_csv(keep / "leaderboards" / "trials.csv")
    assert set(rows[rows["state"] == "COMPLETE"]["trial"]) >= {done[0].number}
    # and the same command, with room again, resumes it to --trials
    again = cli(*_search_args(world["a"], keep, world["spec"], world["cache"], 4))
    assert again.code == 0, again.err[-3000:]
    after = optuna.load_study(study_name="autotransfer-digits-a", storage=f"sqlite:///{keep / 'study.db'}")
    assert all(after.get_trials()[t.number].value == t.value for t in done)
    assert st.counted(after) == 4


# --- item 3 and 10: dead workers' trials ---


def test_a_trial_without_any_heartbeat_is_failed_and_retried_first(tmp_path, monkeypatch):
    """Optuna never calls a RUNNING trial with no heartbeat row stale; the search does, and the retry
    of a baseline goes back to its place in the queue, before the transfer trials enqueued after it."""
    study = optuna.create_study(storage=st.open_storage(f"sqlite:///{tmp_path / 's.db'}"), study_name="s",
                                direction="maximize")
    study.enqueue_trial({}, user_attrs={ROLE: SCRATCH, "baseline_source": "a"})
    study.enqueue_trial({"x": 1.0}, user_attrs={ROLE: "default"})
    dead = study.ask()  # what a worker killed before its first heartbeat left behind
    assert dead.number == 0
    st.fail_stale(study)
    assert study.trials[0].state.name == "RUNNING"  # inside the grace period: left alone
    monkeypatch.setattr(st, "GRACE_SECONDS", 0)
    time.sleep(0.05)
    st.fail_stale(study)
    states = [t.state.name for t in study.get_trials()]
    assert states == ["FAIL", "WAITING", "WAITING"]
    assert st.counted(study) == 0
    nxt = st.ask(study)
    assert nxt.number == 2 and nxt.user_attrs[ROLE] == SCRATCH
    st.fail_stale(study)  # its first heartbeat was recorded at once: Optuna's grace (60 s) applies
    assert study.trials[2].state.name == "RUNNING"


def _trials_of(name: str) -> list:
    return optuna.load_study(study_name=name, storage=st.open_storage(PG_URL)).get_trials()


@pytest.mark.slow  # a search of the module's world
def test_worker_killed_in_its_first_seconds_is_retried_before_the_survivor_finishes(world, tmp_path):
    _pg_ok()
    name = f"early-kill-{os.getpid()}-{int(time.time())}"
    env = {**os.environ, "AUTOTRANSFER_HEARTBEAT_SECONDS": "2", "AUTOTRANSFER_GRACE_SECONDS": "20"}

    def worker(i: int) -> subprocess.Popen:
        # 20 epochs: with the decode cache a 2-epoch baseline of the tiny source can end between two
        # polls, before it is seen running (it did once in CI)
        argv = _search_args(world["a"], tmp_path / f"w{i}", world["spec"], world["cache"], 3,
                            "--strategies", "full", "--storage", PG_URL, "--study-name", name, "--epochs", "20")
        return subprocess.Popen([sys.executable, "-m", "autotransfer", *argv], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    a = worker(0)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and a.poll() is None:
            try:
                if any(t.state.name == "RUNNING" for t in _trials_of(name)):
                    break
            except Exception:  # the study does not exist yet
                pass
            time.sleep(0.2)
        a.send_signal(signal.SIGKILL)  # within its first heartbeat interval of the baseline
        a.wait()
        first = _trials_of(name)[0]
        assert first.state.name == "RUNNING" and first.user_attrs[ROLE] == SCRATCH
        b = worker(1)
        out, err = b.communicate(timeout=600)
        assert b.returncode == 0, err[-3000:]
        study = optuna.load_study(study_name=name, storage=st.open_storage(PG_URL))
        trials = study.get_trials()
        assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")], [t.state for t in trials]
        assert st.counted(study) == 3
        assert trials[0].state.name == "FAIL"
        baselines = [t for t in trials if t.user_attrs.get(ROLE) == SCRATCH and t.state.name == "COMPLETE"]
        assert len(baselines) == 1 and baselines[0].system_attrs.get("failed_trial") == 0
        # the requeued baseline ran before any transfer trial that started after the dead one was failed
        later = [t for t in trials if t.datetime_start and t.datetime_start >= trials[0].datetime_complete]
        assert min(later, key=lambda t: t.datetime_start).number == baselines[0].number
        summary = pd.read_csv(tmp_path / "w1" / "leaderboards" / "summary.csv").iloc[0]
        assert not pd.isna(summary["scratch_val_score"]) and int(summary["n_trials"]) == 4
    finally:
        if a.poll() is None:
            a.kill()
        optuna.delete_study(study_name=name, storage=st.open_storage(PG_URL))


@pytest.mark.slow  # a search of the module's world
def test_a_second_search_on_the_same_out_says_it_waits(world, tmp_path):
    out = tmp_path / "run"
    # long enough trials (40 epochs) that the second search is ready before the first ends: with
    # the decode cache, 2-epoch trials of the tiny source finish in about a second
    argv = [sys.executable, "-m", "autotransfer",
            *_search_args(world["a"], out, world["spec"], world["cache"], 3, "--epochs", "40")]
    first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (out / ".owner.lock").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert first.poll() is None, "the first search ended before a second could wait for it"
        second = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        first_err = first.communicate(timeout=600)[1]
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, first_err[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    waited = [line for line in second.stderr.splitlines() if line.startswith("waiting for another search")]
    assert len(waited) == 1 and str(out) in waited[0]
    summary = pd.read_csv(out / "leaderboards" / "summary.csv").iloc[0]
    assert int(summary["n_trials"]) == 3  # the second found the study done and added nothing


def test_without_a_completed_baseline_the_report_never_claims_to_beat_scratch():
    from autotransfer._search.report import summary_row

    study = optuna.create_study(direction="maximize")
    study.set_user_attr("epochs", 2)
    rows = [{"trial": 0, "state": "FAIL", "role": SCRATCH, "source": "scratch:test_resnet", "strategy": "full",
             "depth": None, "lr": 1e-3, "val_score": None, "epochs_run": 0, "prune_reason": ""},
            {"trial": 1, "state": "COMPLETE", "role": "default", "source": "timm:test_resnet", "strategy": "full",
             "depth": None, "lr": 1e-3, "val_score": 0.9, "epochs_run": 2, "prune_reason": ""}]
    summary = summary_row(study, rows, {"answer": 1, "baseline": None, "negative": False, "tests": {1: 0.8}})
    assert "beats scratch" not in summary["note"] and "no scratch baseline completed" in summary["note"]
    assert summary["scratch_val_score"] is None and summary["delta_vs_scratch"] is None
    assert summary["negative_transfer"] is False


def test_a_failed_atomic_write_names_the_file_not_its_temporary_twin(tmp_path):
    import errno

    from autotransfer._search.rundir import replace_file, write_failure

    target = tmp_path / "trials.csv"
    target.write_text("old\n")

    def full_disk(tmp):
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    with pytest.raises(OSError) as info:
        replace_file(target, full_disk)
    assert write_failure(info.value) == f"No space left on device writing {target}"
    assert target.read_text() == "old\n"  # the previous file is whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trials.csv"]  # no temporary file left


def test_a_database_whose_tables_another_process_is_creating_opens_after_a_retry(tmp_path, monkeypatch):
    """Two processes opening a fresh study.db at once (a second worker, or any Optuna client): the
    loser of Optuna's schema setup sees a duplicate alembic_version row; it opens what the other made."""
    import sqlalchemy.exc

    from autotransfer._search import storage as st_mod

    url = f"sqlite:///{tmp_path / 'study.db'}"
    st_mod.open_storage(url)  # the winner made the tables
    real, calls = st_mod.RDBStorage, []

    def racing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise sqlalchemy.exc.IntegrityError("INSERT INTO alembic_version", {}, Exception(
                "UNIQUE constraint failed: alembic_version.version_num"))
        return real(*args, **kwargs)

    monkeypatch.setattr(st_mod, "RDBStorage", racing)
    monkeypatch.setattr(st_mod.time, "sleep", lambda s: None)
    storage = st_mod.open_storage(url)
    assert len(calls) == 2 and isinstance(storage, real)
    monkeypatch.setattr(st_mod, "RDBStorage", lambda *a, **k: (_ for _ in ()).throw(
        sqlalchemy.exc.OperationalError("connect", {}, Exception("unable to open database file"))))
    with pytest.raises(AutotransferError, match="cannot open --storage .*unable to open database file"):
        st_mod.open_storage(url)  # any other error is not retried: one line at once
