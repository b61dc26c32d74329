"""Run folders (autotransfer.runs): the default one is named once, and ranking reaches its checks
without importing the search."""

from __future__ import annotations

from pathlib import Path

from test_house import import_graph

from autotransfer.runs import RUNS, run_dir


def test_the_default_run_folder_is_autotransfer_runs_and_the_name():
    assert run_dir(None, "digits") == Path("autotransfer-runs") / "digits" == RUNS / "digits"
    assert run_dir("elsewhere", "digits") == Path("elsewhere")


def test_ranking_imports_nothing_from_the_search_package():
    graph = import_graph()
    seen, todo = set(), ["autotransfer._rank"]
    while todo:  # everything ranking imports, directly or not, wherever the import sits
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph[module])
    assert "autotransfer.runs" in seen
    assert not [m for m in seen if m.startswith("autotransfer._search")], sorted(seen)
