"""Plugin loading: real entry points, --plugins-dir, failures, strictness, clashes, tracing, docs."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import autotransfer.hookspecs as hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = [name for name, fn in vars(hookspecs).items()
         if callable(fn) and hasattr(fn, "autotransfer_spec")]

EST_PLUGIN = """
from autotransfer import hookimpl
from autotransfer.estimators import Estimator

def _score(features, labels, *, source_probs=None, device="cpu"):
    return float(len(labels))

@hookimpl
def register_estimators(register):
    register(Estimator(name="{name}", score=_score, description="test estimator"))
"""


def _dist_info(site: Path, dist: str, version: str, module: str, code: str) -> Path:
    """Install a tiny distribution the way pip lays it out: a module plus *.dist-info with entry points."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(code)
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[autotransfer]\n{module} = {module}\n")
    (info / "RECORD").write_text("")
    return site


def test_hooks_are_the_fixed_contract():
    assert set(HOOKS) == {"register_sources", "register_source_resolvers", "register_strategies",
                          "register_estimators", "load_dataset", "trial_finished", "search_finished"}
    assert hookspecs.load_dataset.autotransfer_spec["firstresult"] is True
    for name in HOOKS:
        fn = getattr(hookspecs, name)
        doc = inspect.getdoc(fn) or ""
        assert "Args:" in doc and "Returns:" in doc and "Called:" in doc, name
        assert all(p.annotation is not inspect.Parameter.empty for p in inspect.signature(fn).parameters.values())


def test_every_hook_is_in_the_plugin_guide():
    guide_page = (ROOT / "docs" / "plugins.md").read_text()
    assert "# Writing a plugin" in guide_page
    guide = guide_page.split("# Writing a plugin", 1)[1]
    for name in HOOKS:
        params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"def {name}({params})" in guide, f"hook {name} missing from the plugin guide, docs/plugins.md"
    assert "docs/plugins.md" in (ROOT / "README.md").read_text()  # the front page links to the guide


ALL_HOOKS_PLUGIN = """
from types import SimpleNamespace
from autotransfer import hookimpl
from autotransfer.sources import SpecResolver
CALLED = []

class FakeResolver(SpecResolver):
    name = "fake"

    def resolve(self, rest, options):
        raise NotImplementedError

@hookimpl
def register_sources(register):
    CALLED.append("register_sources")
    register(SimpleNamespace(name="fake_source", describe=lambda: {"name": "fake_source", "modality": "image"}))

@hookimpl
def register_source_resolvers(register):
    CALLED.append("register_source_resolvers")
    register(FakeResolver())

@hookimpl
def register_strategies(register):
    CALLED.append("register_strategies")
    register(SimpleNamespace(name="fake_strategy"))

@hookimpl
def register_estimators(register):
    CALLED.append("register_estimators")
    register(SimpleNamespace(name="fake_estimator"))

@hookimpl
def load_dataset(path, options):
    CALLED.append("load_dataset")
    return {"path": path, "seed": options["seed"]} if path.endswith(".fake") else None

@hookimpl
def trial_finished(trial_row):
    CALLED.append("trial_finished")

@hookimpl
def search_finished(result):
    CALLED.append("search_finished")
"""


def test_every_hook_is_called_by_the_manager(tmp_path):
    """A plugin implementing every hook sees each one called, with provenance recorded."""
    from autotransfer.plugins import PluginManager

    d = tmp_path / "plug"
    d.mkdir()
    (d / "allhooks.py").write_text(ALL_HOOKS_PLUGIN)
    pm = PluginManager([d])
    assert pm.registry("sources").provider_of("fake_source").plugin == "allhooks"
    assert pm.source_resolvers().provider_of("fake").plugin == "allhooks"
    assert "fake_strategy" in pm.registry("strategies")
    assert "fake_estimator" in pm.registry("estimators")
    assert pm.load_dataset("x.fake", {"seed": 5}) == {"path": "x.fake", "seed": 5}
    pm.notify("trial_finished", trial_row={})
    pm.notify("search_finished", result={})
    called = sys.modules["autotransfer_dirplugin_allhooks"].CALLED
    assert set(called) == set(HOOKS)
    assert pm.infos["allhooks"].hooks == sorted(HOOKS)
    assert pm.infos["allhooks"].registered == {
        "sources": ["fake_source"], "source_resolvers": ["fake"], "strategies": ["fake_strategy"],
        "estimators": ["fake_estimator"]}


WRONG_HOOK_PLUGIN = """
from autotransfer import hookimpl
from autotransfer.sources import Alias, SpecResolver

class Prefix(SpecResolver):
    name = "pfx"

    def resolve(self, rest, options):
        raise NotImplementedError

@hookimpl
def register_sources(register):
    register(Prefix())

@hookimpl
def register_source_resolvers(register):
    register(Alias("not-a-resolver", "timm:test_resnet"))
"""


def test_sources_and_resolvers_register_through_their_own_hooks(tmp_path, capsys):
    """No duck typing: a resolver given to register_sources (or an alias to register_source_resolvers)
    is an error naming the right hook, and nothing of it is registered."""
    from autotransfer.plugins import PluginManager

    d = tmp_path / "plug"
    d.mkdir()
    (d / "wrong.py").write_text(WRONG_HOOK_PLUGIN)
    pm = PluginManager([d])
    assert "pfx" not in pm.source_resolvers() and "pfx" not in pm.registry("sources")
    assert "not-a-resolver" not in pm.source_resolvers() and "timm" in pm.source_resolvers()
    err = capsys.readouterr().err
    assert "register it in register_source_resolvers(register)" in err
    assert "takes an autotransfer.sources.SpecResolver" in err and "register_sources" in err


def test_builtins_come_through_entry_points(cli):
    r = cli("plugins", "--json")
    assert r.code == 0, r.err
    rows = {p["name"]: p for p in json.loads(r.out)}
    for builtin in ("image_folder", "text_folder", "tables"):
        assert rows[builtin]["origin"] == "entry point"
        assert rows[builtin]["from"] == "autotransfer"
        assert rows[builtin]["hooks"] == ["load_dataset"]


def test_third_party_entry_point_plugin(cli_subprocess, tmp_path):
    site = _dist_info(tmp_path / "site", "autotransfer-extra", "1.2.3", "at_extra_plugin",
                      EST_PLUGIN.format(name="extra_est"))
    env = {"PYTHONPATH": str(site)}  # read when the interpreter starts: a fresh process each
    r = cli_subprocess("plugins", "--json", env=env)
    assert r.code == 0, r.err
    rows = {p["name"]: p for p in json.loads(r.out)}
    assert rows["at_extra_plugin"]["from"] == "autotransfer-extra"
    assert rows["at_extra_plugin"]["version"] == "1.2.3"
    assert rows["at_extra_plugin"]["registered"] == {"estimators": ["extra_est"]}
    r = cli_subprocess("estimators", "--json", env=env)
    est = {e["name"]: e for e in json.loads(r.out)}
    assert est["extra_est"]["provider"] == "autotransfer-extra 1.2.3"
    # and it really works through the public API
    code = ("import autotransfer, numpy as np; print(autotransfer.estimate('extra_est', "
            "np.ones((6, 2)), [0, 0, 0, 1, 1, 1]))")
    out = subprocess.run([sys.executable, "-c", code], env={**__import__("os").environ, **env},
                         capture_output=True, text=True)
    assert out.stdout.strip() == "6.0", out.stderr


def test_plugins_dir_plugin(cli, tmp_path):
    d = tmp_path / "plug"
    d.mkdir()
    (d / "my_est.py").write_text(EST_PLUGIN.format(name="dir_est"))
    r = cli("--plugins-dir", str(d), "plugins", "--json")
    assert r.code == 0, r.err
    rows = {p["name"]: p for p in json.loads(r.out)}
    assert rows["my_est"]["origin"] == "plugins dir"
    assert rows["my_est"]["from"] == str((d / "my_est.py").resolve())
    assert rows["my_est"]["registered"] == {"estimators": ["dir_est"]}
    # the environment variable works the same
    r = cli("estimators", "--json", env={"AUTOTRANSFER_PLUGINS_DIR": str(d)})
    assert "dir_est" in {e["name"] for e in json.loads(r.out)}


def test_an_in_process_run_leaves_the_process_as_it_found_it(cli, tmp_path, monkeypatch):
    """The ``cli`` fixture runs in this process: a command's plugins, environment, working directory,
    logger set-up and warning memory must not outlive it (each test sees a fresh process's state)."""
    import logging
    import os

    from autotransfer import console, plugins

    d = tmp_path / "plug"
    d.mkdir()
    (d / "my_est.py").write_text(EST_PLUGIN.format(name="dir_est"))
    (d / "broken.py").write_text("raise RuntimeError('kaboom at import')\n")
    monkeypatch.chdir(tmp_path)
    log = logging.getLogger("autotransfer")
    manager, handlers, level = plugins.get_plugin_manager(), list(log.handlers), log.level
    env, seen, mods = dict(os.environ), console.seen_warnings(), set(sys.modules)
    r = cli("--plugins-dir", str(d), "estimators", "--json", env={"AUTOTRANSFER_TRACE_PLUGINS": "1"}, cwd=str(d))
    assert r.code == 0 and "dir_est" in {e["name"] for e in json.loads(r.out)}
    assert "trace: register_estimators" in r.err and "kaboom at import" in r.err
    assert plugins.get_plugin_manager() is manager and "dir_est" not in plugins.get_registry("estimators")
    assert dict(os.environ) == env and os.getcwd() == str(tmp_path)
    assert log.handlers == handlers and log.level == level and console.seen_warnings() == seen
    assert not {m for m in set(sys.modules) - mods if m.startswith("autotransfer_dirplugin_")}


def test_broken_plugin_warns_and_is_skipped_or_fatal_when_strict(cli, tmp_path):
    d = tmp_path / "plug"
    d.mkdir()
    (d / "broken.py").write_text("raise RuntimeError('kaboom at import')\n")
    (d / "good.py").write_text(EST_PLUGIN.format(name="good_est"))
    r = cli("--plugins-dir", str(d), "estimators", "--json")
    assert r.code == 0
    warnings = [line for line in r.err_lines if "broken" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning:") and "kaboom at import" in warnings[0]
    assert "good_est" in {e["name"] for e in json.loads(r.out)}

    r = cli("--plugins-dir", str(d), "--strict-plugins", "estimators")
    assert r.code == 2
    assert len(r.err_lines) == 1 and r.err_lines[0].startswith("error:")
    assert "broken" in r.err and "kaboom at import" in r.err and "Traceback" not in r.err


def test_plugin_raising_in_hook_is_isolated(cli, tmp_path):
    d = tmp_path / "plug"
    d.mkdir()
    (d / "angry.py").write_text(textwrap.dedent("""
        from autotransfer import hookimpl
        @hookimpl
        def register_estimators(register):
            raise ValueError("no estimators today")
    """))
    r = cli("--plugins-dir", str(d), "estimators", "--json")
    assert r.code == 0
    assert any("angry" in line and "no estimators today" in line for line in r.err_lines)
    r = cli("--plugins-dir", str(d), "--strict-plugins", "estimators")
    assert r.code == 2 and "no estimators today" in r.err


def test_disable_plugins_by_name(cli, tmp_path):
    d = tmp_path / "plug"
    d.mkdir()
    (d / "my_est.py").write_text(EST_PLUGIN.format(name="dir_est"))
    r = cli("--plugins-dir", str(d), "plugins", "--json", env={"AUTOTRANSFER_DISABLE_PLUGINS": "my_est,tables"})
    names = {p["name"] for p in json.loads(r.out)}
    assert "my_est" not in names and "tables" not in names and "image_folder" in names
    r = cli("--plugins-dir", str(d), "--disable-plugin", "my_est", "plugins", "--json")
    assert "my_est" not in {p["name"] for p in json.loads(r.out)}


def test_name_clash_warns_and_keeps_both(cli, tmp_path):
    d = tmp_path / "plug"
    d.mkdir()
    (d / "first.py").write_text(EST_PLUGIN.format(name="same"))
    (d / "second.py").write_text(EST_PLUGIN.format(name="same"))
    r = cli("--plugins-dir", str(d), "estimators", "--json")
    rows = {e["name"]: e for e in json.loads(r.out)}
    assert "same" in rows and "second:same" in rows  # the later plugin is the renamed one
    assert rows["second:same"]["provider"].endswith("second.py")
    assert any("clashes" in line for line in r.err_lines)
    # a plugin cannot take over a built-in's name: the built-in keeps it
    (d / "second.py").write_text(EST_PLUGIN.format(name="logme"))
    r = cli("--plugins-dir", str(d), "estimators", "--json")
    rows = {e["name"]: e for e in json.loads(r.out)}
    assert rows["logme"]["provider"].startswith("autotransfer ") and "second:logme" in rows


def test_trace_plugins(cli, digits_dir):
    r = cli("inspect", "--data", str(digits_dir), env={"AUTOTRANSFER_TRACE_PLUGINS": "1"})
    assert r.code == 0
    assert any(line.startswith("trace: load_dataset") for line in r.err_lines)


def test_reporter_hooks_are_called_and_isolated(tmp_path, capsys):
    from autotransfer.plugins import PluginManager

    d = tmp_path / "plug"
    d.mkdir()
    (d / "rep.py").write_text(textwrap.dedent("""
        from autotransfer import hookimpl
        SEEN = []
        @hookimpl
        def trial_finished(trial_row):
            SEEN.append(dict(trial_row))
        @hookimpl
        def search_finished(result):
            raise RuntimeError("logging backend down")
    """))
    pm = PluginManager([d])
    pm.notify("trial_finished", trial_row={"trial": 0, "state": "COMPLETE"})
    pm.notify("search_finished", result={"best_source": "x"})
    assert sys.modules["autotransfer_dirplugin_rep"].SEEN == [{"trial": 0, "state": "COMPLETE"}]
    assert "logging backend down" in capsys.readouterr().err


def test_help_does_not_import_torch():
    code = textwrap.dedent("""
        import sys
        from autotransfer.cli import main
        try:
            main(["--help"])
        except SystemExit:
            pass
        assert "torch" not in sys.modules, "torch imported by --help"
        assert "timm" not in sys.modules and "transformers" not in sys.modules
        print("OK")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().endswith("OK"), out.stderr
    assert "inspect" in out.stdout and "search" in out.stdout


def test_version(cli):
    import autotransfer

    r = cli("--version")
    assert r.code == 0 and autotransfer.__version__ in r.out


def test_registry_clash_in_process_names_provider():
    from autotransfer.registry import Provider, Registry

    class Item:
        def __init__(self, name):
            self.name = name

    reg = Registry("estimator")
    reg.add(Item("x"), Provider("p1", "dist1", "1"))
    key = reg.add(Item("x"), Provider("p2", "dist2", "2"))
    assert key == "p2:x" and reg.provider_of("p2:x").distribution == "dist2"
    with pytest.raises(Exception, match="did you mean"):
        reg.get("xx")
