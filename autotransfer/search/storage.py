"""Where a study lives: the run directory's SQLite by default, or a shared RDB URL; locks and orphans."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from pathlib import Path
from typing import Iterator

import inspect
import warnings

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from ..errors import AutotransferError

HEARTBEAT_SECONDS = 10  # a running trial touches the storage this often
GRACE_SECONDS = 60  # a trial silent for this long belongs to a dead worker: failed and retried


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
        import importlib.util

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
    url = normalize_url(url)
    kwargs: dict = {_CALLBACK_ARG: retry_callback()}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    try:
        return RDBStorage(url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS, **kwargs)
    except ImportError as exc:
        raise AutotransferError(
            f"--storage {redact(url)!r} needs a database driver ({exc}); for PostgreSQL install "
            "pip install 'autotransfer[postgres]'"
        ) from None
    except Exception as exc:  # connection refused, bad URL ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AutotransferError(
            f"cannot open --storage {redact(url)!r} ({first}); expected a reachable database URL "
            "such as postgresql://user@host:5432/db or sqlite:///path/study.db"
        ) from None


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

    PostgreSQL: a session advisory lock (works across machines). Anything else: an
    exclusive ``flock`` on a file in the run directory (workers on one machine).
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
    with open(Path(out_dir) / ".study.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class RunOwner:
    """Holds ``DIR/.owner.lock`` while a search runs in ``DIR``; the kernel drops it if the process dies."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / ".owner.lock"
        self._fh = None
        self.sole = False  # True when no other live process is searching in this directory

    def __enter__(self) -> "RunOwner":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a+")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.sole = True
        except OSError:
            # another local worker shares this directory: hold a shared lock, rely on heartbeats
            fcntl.flock(self._fh, fcntl.LOCK_SH)
        return self

    def __exit__(self, *exc) -> None:
        if self._fh:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()


def fail_orphans(study: optuna.Study) -> list[int]:
    """Fail and re-enqueue RUNNING trials of a study nobody else is running (a killed process's)."""
    storage = study._storage
    retry = retry_callback()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
            retry(study, storage.get_trial(t._trial_id))
            failed.append(t.number)
    return failed


def fail_stale(study: optuna.Study) -> None:
    """Optuna's heartbeat check: trials whose worker went silent are failed (and retried)."""
    optuna.storages.fail_stale_trials(study)


SKIPPED = "skipped"  # user attr: why a trial was never trained (it does not count toward --trials)


def counted(study: optuna.Study) -> int:
    """Trials that count toward ``--trials``: everything started, except failures that were retried
    and baselines skipped for budget."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return sum(1 for t in trials if t.state != TrialState.WAITING and SKIPPED not in t.user_attrs
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


_ = os  # os kept for platform checks by callers
