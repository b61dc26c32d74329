"""The ``autotransfer`` command line. Commands load lazily so ``--help`` never imports torch."""

from __future__ import annotations

import importlib
import sys

import click

from .. import __version__
from ..console import use_console
from ..errors import AutotransferError
from ..plugins import configure

# command name -> "module:function"; one module per command
COMMANDS = {
    "inspect": "autotransfer.cli.inspect_cmd:inspect_cmd",
    "plugins": "autotransfer.cli.listing:plugins_cmd",
    "sources": "autotransfer.cli.listing:sources_cmd",
    "strategies": "autotransfer.cli.listing:strategies_cmd",
    "estimators": "autotransfer.cli.listing:estimators_cmd",
    "rank": "autotransfer.cli.search_cmd:rank_cmd",
    "search": "autotransfer.cli.search_cmd:search_cmd",
    "train": "autotransfer.cli.train_cmd:train_cmd",
    "leaderboard": "autotransfer.cli.leaderboard_cmd:leaderboard_cmd",
    "predict": "autotransfer.cli.predict_cmd:predict_cmd",
    "evaluate": "autotransfer.cli.evaluate_cmd:evaluate_cmd",
    "demo": "autotransfer.cli.demo_cmd:demo_cmd",
    "export": "autotransfer.cli.export_cmd:export_cmd",
}

HELP = {
    "inspect": "Check a dataset: modality, tasks, classes, counts per split, warnings.",
    "plugins": "List loaded plugins and what each registered.",
    "sources": "List registered source models.",
    "strategies": "List registered transfer strategies.",
    "estimators": "List registered transferability estimators.",
    "rank": "Score source models for a dataset with transferability estimators.",
    "search": "Rank sources, search source × strategy × depth × lr, export the best model.",
    "train": "Fine-tune one source with one strategy and save the model.",
    "leaderboard": "Print (or, with --storage, rebuild) a search's leaderboards.",
    "predict": "Predict labels (and probabilities) for new items with an exported model.",
    "evaluate": "Score an exported model on labelled data: accuracy, balanced accuracy, macro-F1, per class.",
    "demo": "Run a complete search offline on digits (or BBC news with --text).",
    "export": "Export a trained model to plain timm, transformers or ONNX, checked against autotransfer.",
}


class LazyGroup(click.Group):
    """Imports a command's module only when that command runs; prints user errors as one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        if ctx.resilient_parsing or "--help" in sys.argv[1:2] or not sys.argv[1:]:
            # listing help: a stub with the short help, no import
            return click.Command(name, help=HELP.get(name, ""), short_help=HELP.get(name, ""))
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AutotransferError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="autotransfer")
@click.option("--plugins-dir", multiple=True, type=click.Path(),
              help="Load every *.py in this folder as a plugin (repeatable; also AUTOTRANSFER_PLUGINS_DIR).")
@click.option("--strict-plugins", is_flag=True, help="A plugin that fails to load is an error (exit 2), not a warning.")
@click.option("--disable-plugin", multiple=True,
              help="Do not load this plugin (repeatable; also AUTOTRANSFER_DISABLE_PLUGINS=a,b).")
def cli(plugins_dir: tuple[str, ...], strict_plugins: bool, disable_plugin: tuple[str, ...]) -> None:
    """Pick the pretrained model to start from, and how to transfer it.

    \b
    Start with:  autotransfer demo
    Your data:   autotransfer search --data ./mydata
    """

    use_console()  # notes and warnings on stderr, as lines between progress bars
    configure(plugins_dirs=plugins_dir, strict=strict_plugins, disabled=disable_plugin)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        cli.main(args=argv, prog_name="autotransfer", standalone_mode=True)
    except AutotransferError as exc:  # raised outside a command (e.g. while parsing)
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
