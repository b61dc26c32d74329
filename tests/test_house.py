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
    long = []
    for folder in ("autotransfer", "plugins", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1  # def line to last line
                    if lines > MAX_FUNCTION_LINES:
                        long.append(f"{rel}:{node.lineno} {node.name} ({lines} lines)")
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


OPTUNA_PRIVATE = "autotransfer/_search/optuna_private.py"
PROJECT = ("autotransfer", "autotransfer_plugins")
ATTRIBUTE_BUILTINS = {"getattr", "setattr", "hasattr", "delattr"}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((a.name, a.asname or a.name.split(".")[0]) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            yield from ((f"{module}.{a.name}", a.asname or a.name) for a in node.names)


def optuna_private_uses(source: str, filename: str = "<file>") -> list[str]:
    """``x._name`` reads and writes on Optuna objects in ``source`` (a file that imports optuna).

    An AST cannot tell an object's type, so in a file that imports optuna every ``x._name`` counts
    (so do ``getattr(x, "_name")`` and its siblings, and importing a ``_name`` from optuna), except
    where ``x`` is certainly the file's own or the project's: ``self``, ``cls``, ``super()``, or a
    name bound by an import from autotransfer (``_train._Loop``, ``budget_mod._clock``). Dunders
    (``__name__``) are public. Files that do not import optuna hold no Optuna object of their own,
    and checking them would only flag the project's own private names.
    """
    tree = ast.parse(source, filename)
    imported = list(_imports(tree))
    if not any(full.lstrip(".").split(".")[0] == "optuna" and not full.startswith(".") for full, _ in imported):
        return []
    own = {"self", "cls"} | {bound for full, bound in imported
                             if full.startswith(".") or full.split(".")[0] in PROJECT}
    uses = [f"{filename}:{n.lineno} import {full}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
            for full, _ in _imports(n) if full.split(".")[0] == "optuna" and any(map(_is_private, full.split(".")))]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            base = node.value
            if isinstance(base, ast.Name) and base.id in own:
                continue
            if isinstance(base, ast.Call) and isinstance(base.func, ast.Name) and base.func.id == "super":
                continue
        elif not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id in ATTRIBUTE_BUILTINS and len(node.args) >= 2
                  and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
                  and _is_private(node.args[1].value)):
            continue
        uses.append(f"{filename}:{node.lineno} {ast.unparse(node)}")
    return uses


def test_optuna_private_names_are_used_in_one_module_only():
    """Every ``._name`` on an Optuna object sits in ``_search/optuna_private.py``, which says which
    Optuna version it was written against and why each name is needed; see ``optuna_private_uses``."""
    used: dict[str, list[str]] = {}
    for folder in ("autotransfer", "plugins", "benchmarks", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if uses := optuna_private_uses(path.read_text(), rel):
                used[rel] = uses
    assert list(used) == [OPTUNA_PRIVATE], used
    assert len(used[OPTUNA_PRIVATE]) >= 4  # _storage, _trial_id, _backend, _thread_local


def test_the_optuna_private_check_sees_each_form_and_spares_the_project():
    caught = optuna_private_uses(
        "import optuna\nfrom optuna.storages._cached_storage import _CachedStorage\n"
        "from autotransfer import _train\n\n"
        "class Mine:\n    def f(self, study):\n        self._x = super()._y\n"
        "        study._thread_local.cached_all_trials = None\n"
        "        _train._Loop.logits, study.__class__\n"
        "        return getattr(study._storage, '_backend', None), hasattr(study, '__dict__')\n")
    assert [line.split(" ", 1)[1] for line in caught] == [
        "import optuna.storages._cached_storage._CachedStorage",
        "study._thread_local", "getattr(study._storage, '_backend', None)", "study._storage"], caught
    assert optuna_private_uses("def f(study):\n    return study._storage\n") == []  # no optuna imported


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


def test_every_package_directory_is_in_the_distribution():
    """pyproject's explicit package list must name every folder with an __init__.py, or a regular (non-editable)
    install ships without it and fails at import."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "autotransfer").rglob("__init__.py")}
    found |= {".".join(("autotransfer_plugins", *p.parent.relative_to(ROOT / "plugins").parts))
              for p in (ROOT / "plugins").rglob("__init__.py")}
    assert found - listed == set(), f"add to [tool.setuptools] packages in pyproject.toml: {sorted(found - listed)}"
