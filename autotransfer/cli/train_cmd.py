"""``autotransfer train``: one source, one strategy, no search."""

from __future__ import annotations

import click

from .._train import train
from .._train_config import DEFAULTS, TrainConfig
from ..datasets import load
from ..metrics import get_metric
from ..outputs import check_out_folder
from ..runs import run_dir
from ..sources import SourceOptions, resolve_source
from .options import checked_precision, data_options, metric_option, positive, precision_option


@click.command("train")
@data_options
@click.option("--source", "source_spec", required=True,
              help="Source spec: a registered name, timm:<model>[@weights] or hf:<id-or-folder>.")
@click.option("--strategy", default="linear_probe", show_default=True, help="A registered strategy.")
@click.option("--epochs", type=int, default=DEFAULTS.epochs, show_default=True, help="Training epochs.")
@click.option("--lr", type=float, default=None, callback=positive, help="Peak learning rate [default: the strategy's].")
@click.option("--depth", type=int, default=None, help="Layer groups to unfreeze (partial).")
@click.option("--batch-size", type=int, default=None, help="Batch size [default: by data size].")
@click.option("--device", default=DEFAULTS.device, show_default=True, help="auto, cpu or cuda.")
@precision_option
@click.option("--cache-dir", default=None, help="Cache of features and decoded images [default: ~/.cache/autotransfer].")
@click.option("--offline", is_flag=True, help="Never touch the network; use local weights only.")
@click.option("--out", default=None, help="Folder for the trained model [default: ./autotransfer-runs/<data-name>/train].")
@metric_option(DEFAULTS.metric)
def train_cmd(data, text_col, label_col, split, seed, source_spec, strategy, epochs, lr, depth, batch_size, device,
              precision, cache_dir, offline, out, metric):
    """Fine-tune one source with one strategy and save the model."""

    config = TrainConfig(lr=lr, epochs=epochs, seed=seed, device=device, batch_size=batch_size,  # checked here
                         cache_dir=cache_dir, precision=precision, verbose=True, metric=metric)
    precision = checked_precision(precision, device)
    ds = load(data, text_col=text_col, label_col=label_col, split=split, seed=seed)
    out = check_out_folder(out or run_dir(None, ds.name) / "train", {"--data": data})
    src = resolve_source(source_spec, SourceOptions(offline=offline))
    strategy_params = {"depth": depth} if depth is not None else {}  # a strategy parameter like any other
    result = train(ds, src, strategy, config, **strategy_params)
    path = result.save(out)
    title = "" if result.metric == "accuracy" else f" ({get_metric(result.metric).score_title})"
    click.echo(f"{src.name} {result.strategy}: val {result.val_score:.4f}, test {result.test_score:.4f}{title} "
               f"(precision {precision}, {result.seconds:.1f}s)")
    click.echo(f"wrote {path}")
