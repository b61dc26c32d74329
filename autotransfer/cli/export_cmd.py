"""``autotransfer export``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import AutotransferError
from ..outputs import check_out_folder

FORMATS = ("timm", "transformers", "onnx")  # autotransfer.export_formats.FORMATS, without importing torch for --help
MAX_CHECK_ITEMS = 32  # the first items of --data the round-trip check predicts


@click.command("export")
@click.option("--model", "model_dir", required=True, type=click.Path(), help="An exported model folder (DIR/best).")
@click.option("--format", "fmt", required=True, type=click.Choice(FORMATS),
              help="timm: a save_for_hf folder (image models); transformers: a save_pretrained folder "
                   "(text models); onnx: model.onnx + preprocessing.json (any model).")
@click.option("--out", required=True, type=click.Path(), help="New (or empty) folder to write.")
@click.option("--data", default=None, type=click.Path(),
              help=f"Items to check the export on (a folder or a table; the first {MAX_CHECK_ITEMS}) "
                   "[default: a few synthetic inputs].")
@click.option("--text-col", default=None, help="Text column of a --data table.")
def export_cmd(model_dir, fmt, out, data, text_col):
    """Hand a trained model to plain timm, transformers or ONNX, checked to predict as autotransfer does."""
    from ..export_formats import TOLERANCE, export_model
    from ..predict_io import read_items

    if not (Path(model_dir) / "config.json").exists():
        raise AutotransferError(
            f"--model {model_dir!r} is not an exported model (no config.json); expected DIR/best from a search"
        )
    inputs = {"--model": model_dir, **({"--data": data} if data else {})}
    check_out_folder(out, inputs)
    items = None
    if data:
        modality = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8")).get("modality", "")
        items = read_items(Path(data), modality, text_col)[0][:MAX_CHECK_ITEMS]
    result = export_model(model_dir, fmt, out, items=items)
    what = "items from --data" if result.real_items else "synthetic inputs"
    click.echo(f"checked on {result.items} {what}: probabilities within {result.max_abs_diff:.2g} of autotransfer's "
               f"(tolerance {TOLERANCE:g}), same predicted classes")
    click.echo(f"wrote {result.path}")
