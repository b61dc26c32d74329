"""Where a command writes, checked before it works: an ``--out`` that is a folder where a file is
wanted (or the reverse), whose folder is missing or read-only, or that would overwrite the input it
reads is one line at the start, never an error after minutes of predicting or training."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from .errors import AutotransferError


def check_out_file(out: str | Path, inputs: Mapping[str, str | Path]) -> Path:
    """``out`` as a CSV file a command may write: not a folder, its folder exists and is writable,
    and it is none of ``inputs`` (option -> path) nor an existing file inside one of them."""
    path = Path(out)
    _refuse_inputs(path, inputs, new_inside_ok=True)
    if path.is_dir():
        raise AutotransferError(f"--out {str(out)!r} is a folder; expected a file name such as "
                                f"{path / 'predictions.csv'} — pass a file name to --out")
    if not path.parent.is_dir():
        raise AutotransferError(f"--out {str(out)!r}: the folder {str(path.parent)!r} does not exist; create it, "
                                "or pass --out in a folder that exists")
    _check_writable(path if path.exists() else path.parent, out)
    return path


def check_out_folder(out: str | Path, inputs: Mapping[str, str | Path]) -> Path:
    """``out`` as a folder a command may fill (missing parents are made): not a file, not one of
    ``inputs`` or inside one, and the nearest folder that exists is writable."""
    path = Path(out)
    _refuse_inputs(path, inputs, new_inside_ok=False)
    if path.exists() and not path.is_dir():
        raise AutotransferError(f"--out {str(out)!r} is a file; expected a folder for the model — pass a new "
                                "folder name to --out")
    existing = next(p for p in [path, *path.absolute().parents] if p.exists())
    _check_writable(existing, out)
    return path


def _refuse_inputs(path: Path, inputs: Mapping[str, str | Path], new_inside_ok: bool) -> None:
    """An input itself (a hard link or symlink included), or a file inside an input folder that exists
    already (or, unless ``new_inside_ok``, any path inside one), is refused."""
    target = path.resolve()
    for option, given in inputs.items():
        src = Path(given).resolve()
        same = target == src or (path.exists() and src.exists() and os.path.samefile(path, src))
        inside = src.is_dir() and src in target.parents and (path.exists() or not new_inside_ok)
        if same or inside:
            raise AutotransferError(f"--out {str(path)!r} would overwrite {option} {str(given)!r}; pass an --out "
                                    f"outside {option}")


def _check_writable(where: Path, out: str | Path) -> None:
    """Write nothing, but find out whether a write would work (root ignores permission bits, not a
    read-only disk, so this tries rather than asks ``os.access``)."""
    try:
        if where.is_dir():
            fd, probe = tempfile.mkstemp(dir=where, prefix=".autotransfer-probe-")
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(probe)
        else:
            with open(where, "ab"):  # appends nothing: the file is unchanged
                pass
    except OSError as exc:
        raise AutotransferError(f"cannot write --out {str(out)!r} ({exc.strerror or exc}); expected a place this "
                                "user can write to — pass another --out, or fix its permissions") from None
