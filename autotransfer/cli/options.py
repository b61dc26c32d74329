"""Options shared by several commands."""

from __future__ import annotations

import click


def data_options(f):
    """--data, --text-col, --label-col, --split, --seed."""
    f = click.option("--seed", type=int, default=0, show_default=True, help="Seed for splits and training.")(f)
    f = click.option("--split", default=None, help="Train,val,test fractions when the data is not pre-split "
                     "[default: 0.7,0.15,0.15].")(f)
    f = click.option("--label-col", default=None, help="Label column(s) of a table; 'a,b' = multi-task.")(f)
    f = click.option("--text-col", default=None, help="Text column of a table (auto-detected by default).")(f)
    f = click.option("--data", "data", required=True, help="Dataset folder or table file.")(f)
    return f


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(f)
