"""Built-in dataset plugin: CSV / TSV / JSONL / Parquet tables of text and labels."""

from pathlib import Path

from autotransfer import hookimpl
from autotransfer.data.tables import load_table, looks_like_table


@hookimpl
def load_dataset(path, options):
    p = Path(path)
    if looks_like_table(p):
        return load_table(p, dict(options))
    return None
