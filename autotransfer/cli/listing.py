"""``autotransfer plugins|sources|strategies|estimators``."""

from __future__ import annotations

import json

import click

from ..plugins import get_plugin_manager
from ..registry import describe
from ..textable import format_table
from .options import json_option


def _emit(rows, as_json, columns=None):
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
    else:
        click.echo(format_table(rows, columns))


@click.command("plugins")
@json_option
def plugins_cmd(as_json):
    """List loaded plugins and what each registered."""

    pm = get_plugin_manager()
    pm.load_all()
    rows = []
    for info in pm.infos.values():
        rows.append({
            "name": info.name,
            "version": info.version if info.origin == "entry point" else "",
            "from": info.distribution,
            "origin": info.origin,
            "hooks": info.hooks,
            "registered": {k: v for k, v in info.registered.items() if v},
            "error": info.error,
        })
    if as_json:
        _emit(rows, True)
        return
    flat = [{**r, "registered": "; ".join(f"{k}: {','.join(v)}" for k, v in r["registered"].items()),
             "error": r["error"] or ""} for r in rows]
    _emit(flat, False, ["name", "version", "from", "hooks", "registered", "error"])


def _registry_rows(kind):
    pm = get_plugin_manager()
    reg = pm.registry(kind)
    rows = []
    for key, item in reg.items():
        row = describe(item)
        row["name"] = key
        row["provider"] = str(reg.provider_of(key))
        rows.append(row)
    if kind == "sources":
        for key, item in pm.source_resolvers().items():
            rows.append({"name": f"{key}:<spec>", "provider": str(pm.source_resolvers().provider_of(key)),
                         **{k: v for k, v in describe(item).items() if k not in ("name", "provider")}})
    return rows


@click.command("sources")
@json_option
def sources_cmd(as_json):
    """List registered source models."""
    _emit(_registry_rows("sources"), as_json)


@click.command("strategies")
@json_option
def strategies_cmd(as_json):
    """List registered transfer strategies."""
    _emit(_registry_rows("strategies"), as_json)


@click.command("estimators")
@json_option
def estimators_cmd(as_json):
    """List registered transferability estimators."""
    _emit(_registry_rows("estimators"), as_json, ["name", "provider", "higher_is_better", "requires", "description"])
