"""``autotransfer evaluate``."""

from __future__ import annotations

import json
import math

import click

from .._evaluate import evaluate
from ..console import warn
from ..csvsafe import write_csv
from ..outputs import check_out_file
from ..textable import format_table
from .options import json_option


@click.command("evaluate")
@click.option("--model", "model_dir", required=True, type=click.Path(), help="An exported model folder (DIR/best).")
@click.option("--data", required=True, help="Labelled data in any supported layout (every item is scored).")
@click.option("--out", default="confusion_matrix.csv", show_default=True, help="Confusion-matrix CSV to write.")
@click.option("--text-col", default=None, help="Text column of a table.")
@click.option("--label-col", default=None, help="Label column(s) of a table [default: the model's task names].")
@click.option("--device", default="cpu", show_default=True)
@json_option
def evaluate_cmd(model_dir, data, out, text_col, label_col, device, as_json):
    """Score an exported model on labelled data: accuracy, balanced accuracy, macro-F1, per class."""

    check_out_file(out, {"--data": data, "--model": model_dir})
    result = evaluate(model_dir, data, text_col=text_col, label_col=label_col, device=device)
    write_csv(result.confusion_frame(), out)
    if result.unreadable:
        warn(f"{len(result.unreadable)} item(s) could not be read and are not scored: "
             + ", ".join(list(result.unreadable)[:5]))
    if as_json:
        click.echo(json.dumps({**result.as_dict(), "confusion_csv": str(out)}, indent=2))
        return
    for t in result.tasks:
        click.echo(f"task {t.name!r}: {t.n} items   accuracy {_f(t.accuracy)}   "
                   f"balanced accuracy {_f(t.balanced_accuracy)}   macro-F1 {_f(t.macro_f1)}")
        rows = [{"class": c, "precision": _f(v["precision"]), "recall": _f(v["recall"]), "f1": _f(v["f1"]),
                 "support": v["support"]} for c, v in t.per_class.items()]
        click.echo(format_table(rows) + "\n")
    click.echo(f"wrote the confusion matrix to {out}")


def _f(v: float) -> str:
    return "" if v is None or math.isnan(v) else f"{v:.4f}"
