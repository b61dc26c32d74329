"""``autotransfer predict``."""

from __future__ import annotations

from pathlib import Path

import click

from ..console import warn
from ..csvsafe import write_csv
from ..errors import AutotransferError
from ..loading import load_model
from ..outputs import check_out_file
from ..predict_io import read_items


@click.command("predict")
@click.option("--model", "model_dir", required=True, type=click.Path(), help="An exported model folder (DIR/best).")
@click.option("--data", required=True, type=click.Path(), help="Items to predict: a folder (labelled or not) or a table.")
@click.option("--out", default="predictions.csv", show_default=True, help="CSV to write.")
@click.option("--text-col", default=None, help="Text column of a table.")
@click.option("--device", default="cpu", show_default=True)
def predict_cmd(model_dir, data, out, text_col, device):
    """Predict labels (and probabilities) for new items with an exported model."""
    import pandas as pd

    if not (Path(model_dir) / "config.json").exists():
        raise AutotransferError(
            f"--model {model_dir!r} is not an exported model (no config.json); expected DIR/best from a search"
        )
    check_out_file(out, {"--data": data, "--model": model_dir})
    model = load_model(model_dir, device=device)
    items, names = read_items(Path(data), model.modality, text_col)
    preds, probs, errors = model.predict_rows(items)
    rows = []
    for i, name in enumerate(names):
        row = {"item": name}
        for t, task in enumerate(model.tasks):
            prefix = "" if len(model.tasks) == 1 else f"{task.name}."
            row[f"{prefix}prediction"] = task.classes[int(preds[i, t])] if errors[i] is None else ""
            for k, c in enumerate(task.classes):
                row[f"{prefix}p[{c}]"] = float(probs[t][i, k])
        row["error"] = errors[i] or ""
        rows.append(row)
    write_csv(pd.DataFrame(rows), out)
    failed = [n for n, e in zip(names, errors, strict=False) if e]
    if failed:
        warn(f"{len(failed)} item(s) could not be read and have no prediction (see the 'error' column of {out}): "
             + ", ".join(failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else ""))
    click.echo(f"wrote {len(rows) - len(failed)} predictions to {out}")
