"""The run directory (``--out``): whose data it holds, whether it can be written, and what a write
failure in the middle of a search means (one line, the study kept), checked before any ranking."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import AutotransferError
from ..runs import MARKER, refuse_other_data
from .storage import check_reachable, default_storage, redact

_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
_DB_FULL = ("database or disk is full", "no space left on device", "could not extend file",
            "attempt to write a readonly database", "disk quota exceeded", "disk i/o error")


def prepare(out_dir: Path, dataset: Any, data: Any, storage: str | None, study_name: str | None = None) -> None:
    """Everything that can refuse a search, checked before its ranking (and in this order, so a
    refused search writes nothing): a folder inside the data or holding another data's search, a
    folder that holds another study, a ``--storage`` that cannot be reached or whose study of this
    name holds other data, a folder that cannot be written."""
    out_dir = Path(out_dir)
    owner = refuse_other_data(out_dir, dataset, data)
    name = study_name or f"autotransfer-{dataset.name}"
    where = _storage_key(out_dir, storage)
    refuse_other_study(out_dir, owner, name, where)
    if storage:
        check_reachable(storage, name, dataset.fingerprint)
    mark(out_dir, {**(owner or {"data": str(data), "fingerprint": dataset.fingerprint}), "study": name,
                   "storage": where})


def _storage_key(out_dir: Path, storage: str | None) -> str | None:
    """How the marker names the study's storage: None for the folder's own study.db, else the URL
    without its password."""
    if not storage or storage == default_storage(out_dir):
        return None
    return redact(storage)


def refuse_other_study(out_dir: Path, owner: dict[str, Any] | None, name: str, storage: str | None) -> None:
    """Refuse a folder that holds another study's trials, ``best/`` and leaderboards.

    A run folder belongs to one study (its name and storage), whatever the storage: two studies
    would share ``trials/trial_N`` folders and ``best/``, and ``best/`` would stop being the model
    that ``summary.csv`` describes. Workers of one shared study may share a folder (same name and
    ``--storage``); another study needs another ``--out``.
    """
    if owner and "study" in owner:
        theirs, their_storage = owner["study"], owner.get("storage")
    else:  # folders made before the marker named their study: the studies in their study.db
        names = _local_studies(out_dir)
        if not names or (name in names and storage is None):
            return
        theirs, their_storage = names[0], None
    if (theirs, their_storage) == (name, storage):
        return
    raise AutotransferError(
        f"--out {out_dir} holds {_study_at(theirs, their_storage)}, not {_study_at(name, storage)}: one run "
        f"folder keeps one study's trials, best/ and leaderboards; pass another --out for this study, or --study-name "
        f"{theirs}" + (f" --storage {their_storage}" if their_storage else "") + " to resume the one it holds"
    )


def _study_at(name: str, storage: str | None) -> str:
    return f"study {name!r} " + (f"in {storage}" if storage else "in its study.db")


def mark(out_dir: Path, record: dict[str, Any]) -> None:
    """Write the folder's owner record; also the check that ``--out`` can be written at all, before
    hours of work go into it."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        replace_file(out_dir / MARKER, lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n"))
    except OSError as exc:
        raise AutotransferError(
            f"cannot write to --out {out_dir} ({exc.strerror or exc}); expected a folder this user can write "
            "to, on a disk with free space; pass another --out, or fix its permissions or free space"
        ) from None


def replace_file(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` then rename over ``path``: a full disk leaves the previous file whole, not truncated."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:  # name the file being written, not its temporary twin
        if exc.filename is not None and Path(exc.filename).name == tmp.name:
            exc.filename = str(path)
        raise
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _local_studies(out_dir: Path) -> list[str]:
    """The names of the studies in the folder's study.db, oldest first (none when it cannot be read)."""
    db = out_dir / "study.db"
    if not db.is_file():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            return [row[0] for row in conn.execute("SELECT study_name FROM studies ORDER BY study_id")]
    except sqlite3.Error:
        return []


def write_failure(exc: BaseException, database: str = "the study database") -> str | None:
    """What could not be written, when ``exc`` is a full or read-only disk (else None).

    Such an error is the machine's, not the trial's: recorded as a trial failure it would hide
    behind Optuna's "exceeding max length" or fail every later trial one by one.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            return f"{exc.strerror or exc}" + (f" writing {exc.filename}" if exc.filename else "")
        text = str(exc).lower()
        hit = next((m for m in _DB_FULL if m in text), None)
        if hit:
            return f"{hit} writing {database}"
        exc = exc.__cause__ or exc.__context__
    return None


def raise_if_write_failure(exc: BaseException) -> None:
    """Re-raise ``exc`` when it is a full or read-only disk, so the search stops instead of failing
    the trial."""
    if write_failure(exc):
        raise exc


@contextlib.contextmanager
def write_errors(out: Any, storage: str | None = None) -> Iterator[None]:
    """Turn a full or read-only disk in the middle of a search into one line that keeps the study."""
    try:
        yield
    except AutotransferError:
        raise
    except Exception as exc:
        database = redact(storage) if storage else f"{Path(out) / 'study.db'}" if out else "the study database"
        what = write_failure(exc, database)
        if what is None:
            raise
        where = f"--out {out}" if out else "the run directory"
        raise AutotransferError(
            f"the search stopped: {what}; the study and every finished trial in {where} are kept — free "
            "space (or make it writable) and rerun the same command to resume"
        ) from None
