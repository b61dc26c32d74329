"""``autotransfer inspect``."""

from __future__ import annotations

import json

import click

from ..datasets import load
from ..textable import format_table
from .options import data_options, json_option


@click.command("inspect")
@data_options
@json_option
def inspect_cmd(data, text_col, label_col, split, seed, as_json):
    """Check a dataset: modality, tasks, classes, counts per split, warnings."""

    ds = load(data, text_col=text_col, label_col=label_col, split=split, seed=seed)
    info = ds.summary()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"dataset     {info['name']}  ({info['path']})")
    click.echo(f"modality    {info['modality']}")
    click.echo(f"items       {info['n_items']}  " + "  ".join(f"{s}={n}" for s, n in info["splits"].items())
               + ("  (pre-split)" if info["presplit"] else ""))
    click.echo(f"fingerprint {info['fingerprint'][:16]}")
    if info.get("meta", {}).get("columns"):
        click.echo(f"columns     {info['meta']['columns']}")
    for t in ds.tasks:
        click.echo(f"\ntask {t.name!r}: {t.num_classes} classes")
        counts = info["counts"]
        rows = [{"class": c, **{s: counts[s][t.name][c] for s in counts},
                 "total": sum(counts[s][t.name][c] for s in counts)} for c in t.classes]
        click.echo(format_table(rows))
    if info["warnings"]:
        click.echo(f"\n{len(info['warnings'])} warning(s):")
        for w in info["warnings"]:
            click.echo(f"  - {w}")
