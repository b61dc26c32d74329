"""Where a study lives: the run directory's SQLite by default, or a shared RDB URL; locks and orphans."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import json
import os
import time
import warnings
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from filelock import FileLock, ReadWriteLock, Timeout
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from ..console import note
from ..errors import AutotransferError
from .optuna_private import rdb_of, start_waiting, storage_of, trial_id
from .record import TrialRecord


def _seconds(env: str, default: int) -> int:
    value = os.environ.get(env, "")
    return int(value) if value.isdigit() and int(value) > 0 else default


# a running trial touches the storage this often (and once as soon as it starts)
HEARTBEAT_SECONDS = _seconds("AUTOTRANSFER_HEARTBEAT_SECONDS", 10)
# a trial silent for this long belongs to a dead worker: failed and retried
GRACE_SECONDS = _seconds("AUTOTRANSFER_GRACE_SECONDS", 60)
WAIT_SECONDS = 2  # how often a worker with nothing left to start looks at other workers' running trials


# Optuna 4.9 renamed the retry callback and its storage argument; support both spellings.
_RETRY = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
_CALLBACK_ARG = ("heartbeat_stale_trial_callback"
                 if "heartbeat_stale_trial_callback" in inspect.signature(RDBStorage.__init__).parameters
                 else "failed_trial_callback")


def retry_callback():
    """Re-enqueue a dead worker's trial with the same parameters (at most twice)."""
    return _RETRY(max_retry=2)


def quiet_optuna() -> None:
    """Heartbeats are experimental in Optuna and warn on every use; the search uses them on purpose."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def normalize_url(url: str) -> str:
    """``postgresql://`` picks a driver that is installed: SQLAlchemy ≥ 2.1 defaults to psycopg 3,
    while the ``postgres`` extra installs psycopg2."""
    if url.startswith(("postgresql://", "postgres://")):
        rest = url.split("://", 1)[1]
        if importlib.util.find_spec("psycopg2") is not None:
            return f"postgresql+psycopg2://{rest}"
        if importlib.util.find_spec("psycopg") is not None:
            return f"postgresql+psycopg://{rest}"
    return url


def default_storage(out_dir: Path) -> str:
    return f"sqlite:///{(Path(out_dir) / 'study.db').resolve()}"


def open_storage(url: str) -> RDBStorage:
    """An RDB storage with heartbeats, so a dead worker's trials are failed and retried."""
    quiet_optuna()
    kwargs: dict = {_CALLBACK_ARG: retry_callback()}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    for attempt in range(SCHEMA_RACE_RETRIES + 1):
        try:
            return RDBStorage(normalize_url(url), heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
                              **kwargs)
        except Exception as exc:
            if attempt < SCHEMA_RACE_RETRIES and _schema_race(exc):
                time.sleep(0.5 * (attempt + 1))  # the other process is creating the tables: open what it made
                continue
            raise storage_error(url, exc) from None
    raise AssertionError("unreachable")


SCHEMA_RACE_RETRIES = 3


def _schema_race(exc: Exception) -> bool:
    """A fresh database's tables being created by another process at the same moment (a second
    worker, or any Optuna client opening the file): Optuna's schema setup then fails with a
    duplicate ``alembic_version`` row or an "already exists" table; opening again succeeds."""
    text = str(getattr(exc, "orig", None) or exc).lower()
    return "alembic_version" in text or "already exists" in text


def storage_error(url: str, exc: Exception) -> AutotransferError:
    """The one-line error for a storage that cannot be opened: no driver, refused, no such database ..."""
    if isinstance(exc, ImportError):
        return AutotransferError(f"--storage {redact(url)!r} needs a database driver ({exc}); for PostgreSQL "
                                 "install pip install 'autotransfer[postgres]'")
    text = str(getattr(exc, "orig", None) or exc).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return AutotransferError(
        f"cannot open --storage {redact(url)!r} ({first}); expected a reachable database URL "
        "such as postgresql://user@host:5432/db or sqlite:///path/study.db"
    )


def check_reachable(url: str, study_name: str | None = None, fingerprint: str | None = None) -> None:
    """Connect to a shared ``--storage`` once, before any work, so a wrong URL costs seconds, not a
    ranking; with ``study_name``, also refuse a study of that name made for other data."""
    import sqlalchemy

    theirs = None
    try:
        connect_args = {"connect_timeout": 10} if url.startswith("postgres") else {}
        engine = sqlalchemy.create_engine(normalize_url(url), poolclass=sqlalchemy.pool.NullPool,
                                          connect_args=connect_args)
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT 1"))
                if study_name and sqlalchemy.inspect(conn).has_table("study_user_attributes"):
                    theirs = conn.execute(sqlalchemy.text(
                        "SELECT a.value_json FROM study_user_attributes a JOIN studies s ON s.study_id = a.study_id "
                        "WHERE s.study_name = :name AND a.key = 'fingerprint'"), {"name": study_name}).scalar()
        finally:
            engine.dispose()
    except Exception as exc:
        raise storage_error(url, exc) from None
    if theirs is not None and fingerprint and json.loads(theirs) != fingerprint:
        raise other_data_error(study_name or "", url, json.loads(theirs), fingerprint)


def other_data_error(study_name: str, url: str, theirs: str, ours: str) -> AutotransferError:
    """A study (of this name, in this storage) holds the search of other data."""
    return AutotransferError(f"study {study_name!r} in {redact(url)!r} was made for other data (fingerprint "
                             f"{theirs[:12]} vs {ours[:12]}); use a new --out or --study-name")


def redact(url: str) -> str:
    """The URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}@{host}"
    return url


@contextlib.contextmanager
def study_lock(url: str, study_name: str, out_dir: Path) -> Iterator[None]:
    """Serialise study set-up and trial creation across workers.

    PostgreSQL: a session advisory lock (works across machines). Anything else: an exclusive
    ``filelock.FileLock`` on a file in the run directory (workers on one machine; any OS).
    """
    if url.startswith(("postgresql", "postgres:")):
        import sqlalchemy

        key = int(hashlib.sha256(f"autotransfer:{study_name}".encode()).hexdigest()[:15], 16)
        engine = sqlalchemy.create_engine(normalize_url(url), poolclass=sqlalchemy.pool.NullPool)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        engine.dispose()
        return

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with FileLock(Path(out_dir) / ".study.lock"):
        yield


class RunOwner:
    """Holds ``DIR/.owner.lock`` while a search runs in ``DIR``; the OS drops it if the process dies.

    A reader/writer lock: the first search takes it for writing and is ``sole`` (it may fail the
    RUNNING trials a killed search left behind); a later one waits until that ends, then shares it
    for reading with any other later workers, none of them sole (they rely on heartbeats instead).
    ``filelock.ReadWriteLock`` gives these shared and exclusive holds on every OS through SQLite's
    file locks, which the OS releases when a process dies, as ``flock`` did; ``FileLock`` alone is
    exclusive only, and a shared hold cannot be built on it without state a killed process leaves.
    """

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / ".owner.lock"
        self._lock = None
        self.sole = False  # True when no other live process is searching in this directory

    def __enter__(self) -> RunOwner:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = ReadWriteLock(self.path)
        try:
            self._lock.acquire_write(blocking=False)
            self.sole = True
        except Timeout:
            # another local worker shares this directory: hold a shared lock, rely on heartbeats
            try:
                self._lock.acquire_read(blocking=False)
            except Timeout:
                note(f"waiting for another search using {self.path.parent} to finish (it holds {self.path.name}) …")
                self._lock.acquire_read()
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def _record(storage: Any, trial: optuna.trial.FrozenTrial, record: TrialRecord) -> None:
    """Store ``record``'s fields on a trial through the storage (the trial may belong to a dead worker)."""
    for key, value in record.to_user_attrs().items():
        storage.set_trial_user_attr(trial_id(trial), key, value)


def fail_orphans(study: optuna.Study) -> list[int]:
    """Fail and re-enqueue RUNNING trials of a study nobody else is running (a killed process's)."""
    storage = storage_of(study)
    retry = retry_callback()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        _record(storage, t, TrialRecord(fail_reason="the process running it ended before the trial did "
                                                     "(killed or crashed)"))
        if storage.set_trial_state_values(trial_id(t), TrialState.FAIL):
            retry(study, storage.get_trial(trial_id(t)))
            failed.append(t.number)
    return failed


def fail_stale(study: optuna.Study) -> None:
    """Trials whose worker went silent are failed (and retried).

    Optuna's heartbeat check, plus what it leaves out: a RUNNING trial with no heartbeat row at all
    (its worker died before the first beat, or ran a version that beat only after one interval)
    is never stale to Optuna; it is failed here once it started longer than the grace period ago.
    """
    optuna.storages.fail_stale_trials(study)
    storage = storage_of(study)
    rdb = rdb_of(study)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running or not isinstance(rdb, RDBStorage):
        return
    import sqlalchemy

    ids = [trial_id(t) for t in running]
    with rdb.engine.connect() as conn:
        beaten = {row[0] for row in conn.execute(
            sqlalchemy.text("SELECT trial_id FROM trial_heartbeats WHERE trial_id IN :ids")
            .bindparams(sqlalchemy.bindparam("ids", expanding=True)), {"ids": ids})}
    retry = retry_callback()
    for t in running:
        if trial_id(t) in beaten or t.datetime_start is None:
            continue
        if (datetime.now() - t.datetime_start).total_seconds() <= GRACE_SECONDS:
            continue
        try:
            _record(storage, t, TrialRecord(fail_reason=f"its worker sent no heartbeat in its first "
                                                         f"{GRACE_SECONDS} s (killed early?)"))
            if storage.set_trial_state_values(trial_id(t), TrialState.FAIL):
                retry(study, storage.get_trial(trial_id(t)))
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker failed it first
            pass


def ask(study: optuna.Study) -> optuna.Trial:
    """``study.ask()``, except that a retried trial keeps its original place in the queue, and the
    new trial's first heartbeat is recorded at once.

    Optuna re-enqueues a dead worker's trial at the end of the queue, so a requeued scratch
    baseline would run after the transfer trials that need it as their reference. Recording the
    first heartbeat now (not one interval later) makes a worker killed in its first seconds stale.
    """
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    trial = None
    for t in sorted(waiting, key=lambda t: (t.system_attrs.get("failed_trial", t.number), t.number)):
        try:
            trial = start_waiting(study, t)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        if trial is not None:
            break
    if trial is None:
        trial = study.ask()
    if getattr(storage_of(study), "get_heartbeat_interval", lambda: None)():
        storage_of(study).record_heartbeat(trial_id(trial))
    return trial


def others_running(study: optuna.Study) -> bool:
    """True (after a short wait) while trials of other workers still run: the caller has nothing
    left to start, but a running trial may yet be failed as stale and retried, so it must not
    finish before they do."""
    if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        return False
    time.sleep(WAIT_SECONDS)
    return True


def counted(study: optuna.Study) -> int:
    """Trials that count toward ``--trials``: everything started, except failures that were retried
    and baselines skipped for budget."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return sum(1 for t in trials if t.state != TrialState.WAITING and TrialRecord.from_frozen(t).skipped is None
               and not (t.state == TrialState.FAIL and t.number in retried))


def pg_available(url: str) -> bool:
    """True when a PostgreSQL server answers at ``url`` (used by tests and `doctor`-style checks)."""
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(normalize_url(url), poolclass=sqlalchemy.pool.NullPool,
                                          connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False

