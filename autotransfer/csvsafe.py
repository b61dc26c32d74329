"""Every CSV the tool writes, safe to open in a spreadsheet, and read back as it was.

A cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is run as a formula
by Excel, LibreOffice and Google Sheets; a class folder named ``=HYPERLINK(...)`` would otherwise
land in predictions.csv as one. Such text cells get a leading ``'`` (the OWASP rule), which a
spreadsheet shows as text. Only text is touched: a number, negative or not, stays a number, and so
does text that reads as a plain number (a class named ``-1``), which no spreadsheet runs.

The escape is reversible: text that already begins with quotes before one of those characters
gets one more, and ``unescape`` removes exactly one, so ``read_csv(write_csv(df))`` gives ``df``'s
text back.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _runs(text: str) -> bool:
    """Whether a spreadsheet would run ``text`` (quotes in front stripped) as a formula."""
    bare = text.lstrip("'")
    return bare.startswith(TRIGGERS) and not _NUMBER.fullmatch(bare)


def escape(value: Any) -> Any:
    """``value`` with a ``'`` in front if it is text a spreadsheet would run; anything else as is."""
    return "'" + value if isinstance(value, str) and _runs(value) else value


def unescape(value: Any) -> Any:
    """The inverse of ``escape``."""
    return value[1:] if isinstance(value, str) and value.startswith("'") and _runs(value) else value


def _text_columns(df: Any) -> list[int]:
    """Positions of the columns that may hold text (numbers, negative ones included, are never touched)."""
    from pandas.api.types import is_numeric_dtype

    return [i for i, dtype in enumerate(df.dtypes) if not is_numeric_dtype(dtype)]


def _map_text(df: Any, fn) -> Any:
    """``df`` with ``fn`` applied to its column names and to the cells of its text columns."""
    out = df.copy()
    out.columns = [fn(c) for c in df.columns]
    for i in _text_columns(df):
        out.isetitem(i, df.iloc[:, i].map(fn, na_action="ignore"))
    return out


def write_csv(df: Any, path: str | Path | Any | None = None) -> str | None:
    """Write the DataFrame ``df`` (without its index) to ``path`` — a file name or an open file —
    with formula-like text escaped; with no ``path``, return the CSV text."""
    safe = _map_text(df, escape)
    return safe.to_csv(path, index=False, lineterminator="\r\n" if _has_cr(safe) else "\n")


def _has_cr(df: Any) -> bool:
    """Whether any text holds a carriage return. Python's csv module quotes a cell only for the
    characters of the line ending, so such a file ends its lines with CRLF (RFC 4180): a bare
    ``\r`` would otherwise split the row when read back."""
    texts = [*df.columns, *(v for i in _text_columns(df) for v in df.iloc[:, i])]
    return any(isinstance(v, str) and "\r" in v for v in texts)


def read_csv(path: str | Path, **kwargs: Any) -> Any:
    """A CSV written by ``write_csv`` back as a DataFrame, text unescaped (kwargs go to pandas)."""
    import pandas as pd

    return _map_text(pd.read_csv(path, **kwargs), unescape)
