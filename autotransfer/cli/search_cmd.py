"""``autotransfer rank`` and ``autotransfer search``."""

from __future__ import annotations

from pathlib import Path

import click

from .._rank import rank_columns, rank_into
from .._search.config import DEFAULTS, EFFICIENCY_PRUNERS, REFIT_MODES, SearchConfig
from .._search.runner import search
from ..datasets import load
from ..features import resolve_device
from ..precision import resolve_precision
from ..runs import RUNS, refuse_inside_data, run_dir
from ..textable import format_table
from .leaderboard_cmd import print_leaderboards
from .options import data_options, metric_option, precision_option


def _split_list(value):
    if not value:
        return None
    out = []
    for v in value:
        out += [p.strip() for p in v.split(",") if p.strip()]
    return out or None


def source_options(f):
    f = click.option("--trust-remote-code", is_flag=True, help="Allow Hugging Face models with custom code.")(f)
    f = click.option("--offline", is_flag=True, help="Never touch the network; use local weights only.")(f)
    f = precision_option(f)
    f = click.option("--device", default=DEFAULTS.device, show_default=True, help="auto, cpu or cuda.")(f)
    f = click.option("--cache-dir", default=DEFAULTS.cache_dir, help="Cache of features and decoded images "
                     "[default: ~/.cache/autotransfer].")(f)
    f = click.option("--max-samples", type=int, default=DEFAULTS.max_samples, help="Score on a stratified subsample of this size.")(f)
    f = click.option("--primary", default=DEFAULTS.primary, show_default=True, help="Estimator that orders the ranking.")(f)
    f = click.option("--estimators", multiple=True, help="Estimators to run (comma-separated or repeated) [default: the built-in set that is registered].")(f)
    f = click.option("--sources", multiple=True,
                     help="Source specs: registered names, timm:<model>[@weights], hf:<id-or-folder> "
                          "(comma-separated or repeated) [default: the modality's zoo].")(f)
    f = click.option("--out", default=DEFAULTS.out, help="Run directory [default: ./autotransfer-runs/<data-name>].")(f)
    return f


@click.command("rank")
@data_options
@source_options
def rank_cmd(data, text_col, label_col, split, seed, out, sources, estimators, primary, max_samples, cache_dir,
             device, precision, offline, trust_remote_code):
    """Score source models for a dataset with transferability estimators."""

    # the options ranking shares with the search, checked where the search checks them
    cfg = SearchConfig(out=out, sources=_split_list(sources), estimators=_split_list(estimators), primary=primary,
                       max_samples=max_samples, cache_dir=cache_dir, device=device, precision=precision,
                       offline=offline, trust_remote_code=trust_remote_code, label_col=label_col, text_col=text_col,
                       split=split, seed=seed)
    resolved = resolve_precision(cfg.precision, resolve_device(cfg.device))  # before any data or model is loaded
    refuse_inside_data(Path(cfg.out or RUNS), data, default=not cfg.out)  # before reading the data
    ds = load(data, text_col=text_col, label_col=label_col, split=split, seed=seed)
    rows, est, path = rank_into(run_dir(cfg.out, ds.name), ds, data, cfg.sources, cfg.estimators, primary=primary,
                                max_samples=max_samples, device=device, cache_dir=cache_dir, seed=seed,
                                precision=resolved, offline=offline, trust_remote_code=trust_remote_code)
    cols = [c for c in rank_columns(rows, est) if c not in ("provider", "modality", "notes")
            and not c.startswith("rank_")]
    click.echo(format_table(rows, cols))
    click.echo(f"\nwrote {path}")


@click.command("search")
@data_options
@source_options
@click.option("--trials", type=int, default=DEFAULTS.trials, help="Total trials of the study (a rerun tops it up) "
              "[default: 4 + 4 × top-k for < 10k training items, else 2 + 3 × top-k].")
@click.option("--timeout", type=float, default=DEFAULTS.timeout, help="Seconds for the search [default: 3600; 4 h for ≥ 10k items].")
@click.option("--top-k", type=int, default=DEFAULTS.top_k, show_default=True, help="Sources fine-tuned: every ranked source's linear probe is solved first, and the "
              "top-k by probe validation score are searched (the estimators' order where no probe applies).")
@click.option("--strategies", multiple=True, help="Strategies to search (comma-separated or repeated) [default: every registered one, "
              "a third-party plugin's included; see 'autotransfer strategies'].")
@click.option("--epochs", type=int, default=DEFAULTS.epochs, help="Epochs per trial [default: 12 / 8 / 5 by data size].")
@click.option("--storage", default=DEFAULTS.storage, help="Optuna storage URL shared by workers, e.g. postgresql://host/db "
              "[default: sqlite in the run directory].")
@click.option("--study-name", default=DEFAULTS.study_name, help="Study name [default: autotransfer-<data-name>].")
@click.option("--warmup-epochs", type=int, default=DEFAULTS.warmup_epochs, show_default=True, help="Epochs before scratch pruning.")
@click.option("--patience", type=int, default=DEFAULTS.patience, show_default=True,
              help="Consecutive epochs behind scratch before a trial is pruned.")
@click.option("--margin", type=float, default=DEFAULTS.margin, show_default=True, help="How far behind scratch (or, for an optimistically extrapolated curve, behind the best finished "
              "trial) counts as behind.")
@click.option("--efficiency-pruner", type=click.Choice(EFFICIENCY_PRUNERS),
              default=DEFAULTS.efficiency_pruner,
              show_default=True, help="Pruner chained after the scratch check.")
@click.option("--scratch-baselines", type=int, default=DEFAULTS.scratch_baselines,
              help="Scratch baselines: one per architecture family among the top-k sources (its cheapest member), "
              "best-ranked family first, "
              "at most this many [default: all].")
@click.option("--stall-trials", type=int, default=DEFAULTS.stall_trials, show_default=True,
              help="End the search early when this many sampled trials in a row finish without raising the best "
              "validation score (0: always run --trials).")
@click.option("--refit", type=click.Choice(REFIT_MODES), default=DEFAULTS.refit, show_default=True,
              help="Retrain the chosen trial on train + val (same seed, parameters and schedule, for its kept "
              "epochs), test it beside the trial, and export it (auto: when the smallest class has fewer than 50 "
              "training items; see docs/concepts.md).")
@click.option("--ensemble", type=int, default=DEFAULTS.ensemble, show_default=True,
              help="Greedy ensemble selection (at most N picks) over the completed trials on validation; "
              "exported when it beats the chosen trial there; refit member by member with --refit (0: off).")
@metric_option(DEFAULTS.metric)
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def search_cmd(data, text_col, label_col, split, seed, out, sources, estimators, primary, max_samples, cache_dir,
               device, precision, offline, trust_remote_code, trials, timeout, top_k, strategies, epochs, storage, study_name,
               warmup_epochs, patience, margin, efficiency_pruner, scratch_baselines, stall_trials, refit, ensemble,
               metric, no_progress):
    """Rank sources, search source × strategy × depth × lr, export the best model."""

    config = SearchConfig(  # checks every option, before any work
        out=out, trials=trials, timeout=timeout, sources=_split_list(sources), top_k=top_k,
        strategies=_split_list(strategies), estimators=_split_list(estimators), primary=primary, epochs=epochs,
        storage=storage, study_name=study_name, seed=seed, device=device, offline=offline,
        trust_remote_code=trust_remote_code, label_col=label_col, text_col=text_col, split=split,
        max_samples=max_samples, cache_dir=cache_dir, warmup_epochs=warmup_epochs, patience=patience,
        margin=margin, efficiency_pruner=efficiency_pruner, scratch_baselines=scratch_baselines,
        progress=not no_progress, precision=precision, stall_trials=stall_trials, metric=metric,
        refit=refit, ensemble=ensemble,
    )
    result = search(data, config)
    print_leaderboards(result.out_dir, "table")
    if result.best_dir:
        click.echo(f"\nbest model: {result.best_dir}   (autotransfer predict --model {result.best_dir} --data NEW)")
