"""Write docs/cli.md from click's own help, so the CLI reference cannot drift from the commands.

Run ``python docs/gen_cli.py`` after changing a command or an option; ``tests/test_docs.py`` fails
until docs/cli.md matches what this prints.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click
from click.testing import CliRunner

CLI_MD = Path(__file__).resolve().parent / "cli.md"
WIDTH = 100  # fixed, so the text does not depend on the terminal it is generated in

HEADER = """# CLI reference

Generated from the commands' own `--help` by `python docs/gen_cli.py`; do not edit by hand
(`tests/test_docs.py` fails when this page and the commands disagree).
"""


@contextlib.contextmanager
def _argv(args: list[str]):
    # The group loads a command's module (and so its full option list) only when the process's
    # argv names that command; help for the group alone lists one-line stubs.
    saved = sys.argv
    sys.argv = ["autotransfer", *args]
    try:
        yield
    finally:
        sys.argv = saved


def _help(group: click.Group, args: list[str]) -> str:
    with _argv(args):
        res = CliRunner().invoke(group, args, prog_name="autotransfer",
                                 terminal_width=WIDTH, max_content_width=WIDTH)
    if res.exit_code != 0:
        raise RuntimeError(f"autotransfer {' '.join(args)} exited {res.exit_code}: {res.output}")
    return res.output.rstrip() + "\n"


def render() -> str:
    """The text of docs/cli.md: ``autotransfer --help``, then each command's ``--help``."""
    from autotransfer.cli import cli

    parts = [HEADER, "## autotransfer\n", "```text\n" + _help(cli, ["--help"]) + "```\n"]
    with _argv(["--help"]):
        names = cli.list_commands(click.Context(cli))
    for name in names:
        parts += [f"## autotransfer {name}\n", "```text\n" + _help(cli, [name, "--help"]) + "```\n"]
    return "\n".join(parts)


def main() -> None:
    CLI_MD.write_text(render())
    print(f"wrote {CLI_MD}")


if __name__ == "__main__":
    main()
