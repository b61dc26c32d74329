"""Table datasets: *.csv, *.tsv, *.jsonl, *.parquet (one file, or train/val/test files in a folder)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ..errors import DataError
from .dataset import Dataset
from .splits import SPLIT_ALIASES, Record, assemble

TABLE_EXTS = (".csv", ".tsv", ".jsonl", ".parquet")
TEXT_NAMES = ("text", "sentence", "content", "document", "review", "body", "abstract", "question", "input", "title")
LABEL_NAMES = ("label", "labels", "target", "class", "category", "y", "intent", "sentiment", "topic")


def read_table(path: Path):
    import pandas as pd

    ext = path.suffix.lower()
    try:
        if ext == ".csv":
            return pd.read_csv(path)
        if ext == ".tsv":
            return pd.read_csv(path, sep="\t")
        if ext == ".jsonl":
            return pd.read_json(path, lines=True)
        if ext == ".parquet":
            return pd.read_parquet(path)
    except Exception as exc:
        raise DataError(
            f"cannot read table {str(path)!r} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            f"expected a valid {ext[1:]} file"
        ) from None
    raise DataError(f"{str(path)!r} is not a table; expected one of {', '.join(TABLE_EXTS)}")


def table_files(root: Path) -> dict[str, Path] | None:
    """Split -> file for a folder of train/val/test tables, or None."""
    out: dict[str, Path] = {}
    for f in sorted(root.iterdir()):
        if f.is_file() and f.suffix.lower() in TABLE_EXTS:
            s = SPLIT_ALIASES.get(f.stem.lower())
            if s and s not in out:
                out[s] = f
    return out or None


def looks_like_table(path: Path) -> bool:
    if path.is_file():
        return path.suffix.lower() in TABLE_EXTS
    if path.is_dir():
        if table_files(path):
            return True
        tables = [f for f in path.iterdir() if f.is_file() and f.suffix.lower() in TABLE_EXTS]
        return len(tables) == 1 and not any(d.is_dir() for d in path.iterdir())
    return False


def _is_text(series) -> bool:
    from pandas.api.types import is_string_dtype

    return series.dtype == object or is_string_dtype(series.dtype)


def pick_text_column(df, explicit: str | None, where: str, exclude: list[str] | None = None) -> str:
    """The text column of ``df``: ``explicit``, else one named like text, else the column of longest text.

    ``where`` names the table in errors (``DataError``, one line listing the columns); ``exclude``
    are columns that cannot be the text (the label columns the user named). A table read for
    training and one read for prediction pick their text column by this same rule.
    """
    return _choose_text(df, explicit, where, exclude or [])[0]


def _choose_text(df, explicit: str | None, where: str, exclude: list[str]) -> tuple[str, str]:
    """(text column, why it was chosen); ``exclude`` are the label columns the user named."""
    cols = [str(c) for c in df.columns]
    if explicit:
        if explicit not in cols:
            raise DataError(
                f"text column {explicit!r} not in {where}; columns are: {', '.join(cols)} — pass one with --text-col"
            )
        return explicit, "given with --text-col"
    lower = {c.lower(): c for c in cols if c not in exclude}
    for n in TEXT_NAMES:
        if n in lower:
            return lower[n], "named like a text column"
    strings = [c for c in cols if c not in exclude and _is_text(df[c])]
    if not strings:
        raise DataError(f"no text column found in {where}; columns are: {', '.join(cols)} — pass one with --text-col")
    return max(strings, key=lambda c: df[c].astype(str).str.len().mean()), "the column with the longest text"


def _pick_labels(df, explicit: list[str] | None, text_col: str, where: str) -> tuple[list[str], str]:
    """(label columns, why): ``explicit``, else one named like a label, else the one column of few
    distinct values — a text column before a numeric one (a year or an id with few values is rarely
    the label); two equally likely columns are an error naming them."""
    cols = [str(c) for c in df.columns]
    if explicit:
        for c in explicit:
            if c not in cols:
                raise DataError(
                    f"label column {c!r} not in {where}; columns are: {', '.join(cols)} — pass one with --label-col"
                )
            if c == text_col:
                raise DataError(f"column {c!r} of {where} cannot be both the text and the label; pass --text-col "
                                "and --label-col naming different columns")
        return list(explicit), "given with --label-col"
    lower = {c.lower(): c for c in cols}
    for n in LABEL_NAMES:
        if n in lower and lower[n] != text_col:
            return [lower[n]], "named like a label column"
    few = [c for c in cols if c != text_col and 1 < df[c].nunique() <= max(2, len(df) // 2)]
    if not few:
        raise DataError(f"no label column found in {where}; columns are: {', '.join(cols)} — pass one with --label-col")
    texts = [c for c in few if _is_text(df[c])]
    pool, kind = (texts, "text") if texts else (few, "numeric")
    if len(pool) > 1:
        raise DataError(f"cannot tell which column of {where} holds the labels: {', '.join(map(repr, pool))} could "
                        "each be one; pass --label-col with one of them (or several, comma-separated, for multi-task)")
    others = [c for c in few if c != pool[0]]
    why = f"the only {kind} column with few distinct values, {df[pool[0]].nunique()} of them"
    return pool, why + (f"; numeric {', '.join(map(repr, others))} passed over" if others else "")


def _label_str(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def load_table(path: Path, options: dict) -> Dataset:

    files = table_files(path) if path.is_dir() else None
    if path.is_dir() and not files:
        files = {None: next(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in TABLE_EXTS)}
    elif not path.is_dir():
        files = {None: path}
    label_opt = options.get("label_col")
    if isinstance(label_opt, str):
        label_opt = [c.strip() for c in label_opt.split(",") if c.strip()]
    frames = {s: read_table(f) for s, f in files.items()}
    first_split, first = next(iter(frames.items()))
    where = repr(str(files[first_split]))
    if len(first) == 0:
        raise DataError(f"table {where} has no rows; expected one row per example")
    text_col, text_why = _choose_text(first, options.get("text_col"), where, list(label_opt or []))
    label_cols, label_why = _pick_labels(first, label_opt, text_col, where)
    chosen = f"text {text_col!r} ({text_why}); label {', '.join(map(repr, label_cols))} ({label_why})"

    warnings: list[str] = []
    records: list[Record] = []
    for split, df in frames.items():
        w = repr(str(files[split]))
        for c in [text_col, *label_cols]:
            if c not in df.columns:
                raise DataError(
                    f"column {c!r} missing from {w}; columns are: {', '.join(map(str, df.columns))} — "
                    "every split table needs the same columns"
                )
        for c in label_cols:
            if df[c].isna().all():
                raise DataError(f"label column {c!r} in {w} is empty; expected a class label per row")
        missing = df[label_cols].isna().any(axis=1)
        if missing.any():
            warnings.append(f"{int(missing.sum())} row(s) of {w} with a missing label dropped")
        no_text = df[text_col].isna() & ~missing
        if no_text.any():
            warnings.append(f"{int(no_text.sum())} row(s) of {w} with empty text dropped")
        keep = df[~missing & ~df[text_col].isna()]
        for row_no, text, *labels in zip(keep.index, keep[text_col].astype(str), *[keep[c] for c in label_cols], strict=False):
            records.append(Record(
                text, tuple(_label_str(v) for v in labels),
                hashlib.sha256(text.encode("utf-8", "replace")).hexdigest(), split, f"row {row_no}",
            ))
    name = path.resolve().stem if path.is_file() else path.resolve().name
    return assemble(
        name=name, path=str(path), modality="text", records=records, task_names=label_cols,
        options=options, warnings=warnings, meta={"text_col": text_col, "label_cols": label_cols, "columns": chosen},
    )
