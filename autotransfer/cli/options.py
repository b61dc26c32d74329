"""Options shared by several commands."""

from __future__ import annotations

import click

from .._search.config import DEFAULTS  # light: the search's defaults, shown by every command that shares them
from ..checks import COUNT, POSITIVE, check_number
from ..features import resolve_device
from ..precision import resolve_precision


def data_options(f):
    """--data, --text-col, --label-col, --split, --seed (checked where the data is loaded, before any work)."""
    f = click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True,
                     help="Seed for splits and training.")(f)
    f = click.option("--split", default=None, help="Train,val,test fractions when the data is "
                     "not pre-split [default: 0.7,0.15,0.15].")(f)
    f = click.option("--label-col", default=None, help="Label column(s) of a table; 'a,b' = multi-task.")(f)
    f = click.option("--text-col", default=None, help="Text column of a table (auto-detected by default).")(f)
    f = click.option("--data", "data", required=True, help="Dataset folder or table file.")(f)
    return f


def precision_option(f):
    """--precision auto|bf16|fp16|fp32 (checked by ``autotransfer.precision`` when the run starts)."""
    return click.option("--precision", default=DEFAULTS.precision, show_default=True,
                        help="auto (bf16 on CUDA cards >= 8.0, fp16 with a gradient scaler on older "
                             "cards, fp32 on CPU), bf16, fp16 or fp32.")(f)


def metric_option(default: str):
    """--metric auto|accuracy|balanced_accuracy|macro_f1|log_loss: what chooses (``autotransfer.metrics``)."""
    from ..metrics import IMBALANCE_RATIO, METRICS, MIN_VAL_ITEMS

    return click.option("--metric", type=click.Choice(["auto", *METRICS]), metavar="METRIC", default=default,
                        show_default=True,
                        help=f"{', '.join(['auto', *METRICS])}: what every validation score is, so what chooses "
                             "the kept epoch, a probe's L2, pruning and the answer (log_loss is reported negated: "
                             "higher is better). auto: balanced_accuracy when the largest training class has at "
                             f"least {IMBALANCE_RATIO}x the items of the smallest and every class has at least "
                             f"{MIN_VAL_ITEMS} validation items, else accuracy.")


def checked_precision(precision: str, device: str) -> str:
    """The resolved precision, or a one-line error before any data or model is loaded."""

    return resolve_precision(precision, resolve_device(device))


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(f)


def positive(ctx: click.Context, param: click.Parameter, value):
    """Option callback for the two options no config checks as strictly: ``train --lr`` (``TrainConfig``
    allows 0, which freezes a stage) and ``demo --timeout`` (the demo's own default).

    Raises ``AutotransferError`` rather than click's usage error so the CLI prints one line.
    """
    if value is not None:
        check_number(param.name, value, COUNT if param.type is click.INT else POSITIVE, param.default)
    return value
