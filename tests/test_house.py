"""The house rules that code review keeps forgetting: one place per default, short functions, no import cycles."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest


def test_search_takes_a_config_or_keywords_and_names_an_unknown_option(tmp_path):
    import autotransfer
    from autotransfer import AutotransferError, SearchConfig

    cfg = SearchConfig(trials=5, top_k=2)
    assert SearchConfig.from_options(cfg, top_k=1) == dataclasses.replace(cfg, top_k=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.trials = 6  # type: ignore[misc]
    with pytest.raises(AutotransferError) as err:
        autotransfer.search(tmp_path / "nothing-here", cfg, trails=3)
    msg = str(err.value)
    assert "\n" not in msg and "trails" in msg and "trials" in msg and "top_k" in msg


def test_search_command_defaults_come_from_the_search_config():
    from autotransfer._search.config import DEFAULTS
    from autotransfer.cli.search_cmd import search_cmd

    given = search_cmd.make_context("search", ["--data", "somewhere"]).params
    shared = [f.name for f in dataclasses.fields(DEFAULTS) if f.name in given]
    assert len(shared) >= 20, shared
    for name in shared:
        expected = getattr(DEFAULTS, name)
        assert given[name] == expected or (given[name] == () and expected is None), name
    assert given["no_progress"] is (not DEFAULTS.progress)


ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "autotransfer"
MAX_FUNCTION_LINES = 60


def test_no_function_is_longer_than_60_lines():
    import ast

    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1  # def line to last line
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"autotransfer/{rel}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


THIRD_PARTY_STRATEGY = '''
from autotransfer import hookimpl
from autotransfer_plugins.strategies.linear_probe import LinearProbe


class HeadOnly(LinearProbe):
    name = "head_only"


@hookimpl
def register_strategies(register):
    register(HeadOnly())
'''


def test_default_strategies_are_every_registered_one(tmp_path):
    from autotransfer import plugins
    from autotransfer.strategies import default_strategies

    try:
        plugins.configure()
        assert default_strategies() == ["linear_probe", "partial", "full", "lp_ft", "lora"]  # the built-ins' order
        (tmp_path / "head_only.py").write_text(THIRD_PARTY_STRATEGY)
        plugins.configure(plugins_dirs=[str(tmp_path)], disabled=["lora"])
        assert default_strategies() == ["linear_probe", "partial", "full", "lp_ft", "head_only"]
    finally:
        plugins.configure()


def test_default_estimators_are_the_registered_built_in_set():
    from autotransfer import plugins
    from autotransfer.estimators import DEFAULT_ESTIMATORS, default_estimators

    try:
        plugins.configure(disabled=["knn"])
        assert default_estimators() == [e for e in DEFAULT_ESTIMATORS if e != "knn"]
    finally:
        plugins.configure()


def test_optuna_private_attributes_are_used_in_one_module_only():
    import re

    private = re.compile(r"\._(storage|trial_id)\b")
    users = [p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if private.search(p.read_text())]
    assert users == ["_search/optuna_private.py"], users


def test_depth_is_a_strategy_parameter_not_a_train_argument():
    import inspect

    from autotransfer import TrainConfig, train

    assert "depth" not in inspect.signature(train).parameters
    assert "depth" not in {f.name for f in dataclasses.fields(TrainConfig)}  # it reaches the strategy


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(tree: ast.Module):
    """Every import statement that can run: at module level, in class bodies and inside functions
    (a function-level import hides a cycle from the module level, it does not remove it); only
    those under ``if TYPE_CHECKING:`` never run."""
    type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node.test)
                 for stmt in node.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in type_only:
            yield node


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module of ``package`` -> the modules of ``package`` it imports, wherever the import sits."""
    root = package.parent
    modules = {_module_name(p, root): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        parent = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = parent.split(".")
                base = base[:len(base) - node.level + 1] if node.level else []
                mod = ".".join(base + ([node.module] if node.module else []))
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_import_graph_finds_a_cycle_when_there_is_one(tmp_path):
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import c\n\n"
                              "def f():\n    from .a import g\n")  # the cycle hides in a function
    (pkg / "c.py").write_text("import pkg.b\n")  # b -> c only for type checkers: no cycle through c
    graph = import_graph(pkg)
    assert graph["pkg.b"] == {"pkg.a"} and graph["pkg.c"] == {"pkg.b"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]


def test_no_import_cycle_counting_function_level_imports():
    graph = import_graph()
    assert "autotransfer._search.runner" in graph and "autotransfer.errors" in graph["autotransfer._search.runner"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for n in graph[todo.pop()] - seen:
            seen.add(n)
            todo.append(n)
    return seen


@pytest.mark.parametrize("low", ["autotransfer.data", "autotransfer.data.tables", "autotransfer.source_contract"])
def test_the_layers_below_the_plugin_manager_never_reach_it(low):
    """The data layer and the source contract sit below ``plugins``: the manager (and what dispatches
    through it, ``datasets``/``sources``) imports them, never the reverse, counting imports in functions."""
    graph = import_graph()
    assert low in graph
    above = {"autotransfer.plugins", "autotransfer.sources", "autotransfer.datasets"}
    assert not _reachable(graph, low) & above, sorted(_reachable(graph, low) & above)
