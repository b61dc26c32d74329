"""``autotransfer leaderboard``."""

from __future__ import annotations

from pathlib import Path

import click

from .._leaderboard import read_leaderboards
from .._search.report import md_table, write_reports
from .._search.storage import open_storage
from ..csvsafe import write_csv
from ..errors import AutotransferError
from ..runs import run_dir
from ..textable import format_table


def print_leaderboards(out_dir: Path, fmt: str) -> None:
    import pandas as pd

    lb = Path(out_dir) / "leaderboards"
    tables = read_leaderboards(out_dir)
    for name in [n for n in ("summary", "transferability", "trials") if n in tables]:
        df = tables[name]
        if fmt == "csv":
            click.echo(f"# {name}.csv")
            click.echo(write_csv(df).rstrip())
        elif fmt == "markdown":
            click.echo(f"## {name}\n")

            click.echo(md_table(df.to_dict("records"), list(df.columns)) + "\n")
        else:
            if name == "summary":
                click.echo("summary")
                for k, v in df.iloc[0].items():
                    click.echo(f"  {k:26} {'' if pd.isna(v) else v}")
            else:
                cols = [c for c in df.columns if c not in ("provider", "notes", "fail_reason")
                        and not c.startswith("rank_")][:16]
                click.echo(f"\n{name}")
                click.echo(format_table(df.where(df.notna(), None).to_dict("records"), cols))
        click.echo("")
    if not tables:
        raise AutotransferError(
            f"no leaderboards in {str(out_dir)!r}; expected DIR/leaderboards/*.csv from 'autotransfer search --out DIR'"
        )
    click.echo(f"reports: {lb}/ and {Path(out_dir) / 'report.md'}")


@click.command("leaderboard")
@click.argument("out_dir", required=False, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "csv"]), default="table", show_default=True)
@click.option("--storage", default=None, help="Rebuild the leaderboards from this shared study storage.")
@click.option("--study-name", default=None, help="The study's name (with --storage).")
def leaderboard_cmd(out_dir, fmt, storage, study_name):
    """Print (or, with --storage, rebuild) a search's leaderboards."""
    if storage:
        import optuna

        if not study_name:
            raise AutotransferError("--storage needs --study-name; pass the name the workers used")
        try:
            study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
        except KeyError:
            raise AutotransferError(f"no study {study_name!r} in that --storage; check --study-name") from None
        out_dir = run_dir(out_dir, study_name)
        write_reports(study, None, final=True, out_dir=out_dir)
    if not out_dir:
        raise AutotransferError("give the run directory (autotransfer leaderboard DIR) or --storage and --study-name")
    print_leaderboards(Path(out_dir), fmt)
