"""The benchmark suite's --quick run end to end: CSVs with the expected columns and sane values.

One subprocess run of ``python benchmarks/suite.py --quick`` (digits A→B at 10 labels per class,
the resnet zoo, a tiny grid, 1 seed, 6 epochs, 6 search trials): about 1–2 minutes on a 2-core
CPU once the digits zoo is cached (its first build adds ~30 s).
"""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "suite.py"

def _suite():
    """benchmarks/suite.py as a module (benchmarks/ is no package)."""
    spec = importlib.util.spec_from_file_location("benchmark_suite", SUITE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    env = dict(os.environ)
    try:
        spec.loader.exec_module(module)
    finally:  # the script sets HF_HUB_OFFLINE for its own runs: no other test in this process may see it
        os.environ.clear()
        os.environ.update(env)
    return module


SUITE_MODULE = _suite()
# the columns the README section's tables and definitions read (see suite.section): a CSV without
# one of them would leave the leaderboard README describing a number that is not there
README_ESTIMATOR_COLUMNS = ["task", "estimator", "weighted_tau", "ground_truth_test"]
README_SEARCH_COLUMNS = [
    "task", "grid_best", "grid_best_test", "grid_best_test_std", "search_source", "search_strategy", "search_depth",
    "search_test", "search_scratch_test", "grid_scratch_test", "regret_pp", "regret_same_seed_pp",
    "regret_oracle_pp", "regret_reachable_pp", "search_seconds", "grid_seconds", "cost_ratio", "cost_ratio_cpu",
    "cost_ratio_trials", "meets_regret_target", "meets_cost_target", "worse_than_scratch",
    "worse_than_grid_scratch", "worse_than_grid_scratch_same_seed",
]


def test_the_csv_columns_include_every_column_the_readme_reads():
    assert set(README_ESTIMATOR_COLUMNS) <= set(SUITE_MODULE.ESTIMATOR_COLUMNS)
    assert set(README_SEARCH_COLUMNS) <= set(SUITE_MODULE.SEARCH_COLUMNS)
    for columns in (SUITE_MODULE.ESTIMATOR_COLUMNS, SUITE_MODULE.SEARCH_COLUMNS):
        assert len(set(columns)) == len(columns), columns


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def quick_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("suite-out")
    work = tmp_path_factory.mktemp("suite-work")
    (out / "README.md").write_text("# Leaderboards\n\n## Other table\n\nkept\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(SUITE), "--quick", "--out", str(out), "--work", str(work)],
                          capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + "\n" + proc.stderr[-3000:]
    return out


@pytest.mark.slow  # the quick benchmark suite, run in a subprocess
def test_estimator_csv(quick_out):
    cols, rows = _read(quick_out / "benchmark_estimators.csv")
    assert cols == SUITE_MODULE.ESTIMATOR_COLUMNS
    tasks = [r for r in rows if r["task"] != "mean"]
    means = [r for r in rows if r["task"] == "mean"]
    assert {r["task"] for r in tasks} == {"digits10"}
    assert "logme" in {r["estimator"] for r in tasks}
    assert {r["estimator"] for r in means} == {r["estimator"] for r in tasks}
    for r in tasks:
        assert int(r["seeds"]) == 1
        if r["weighted_tau"]:  # empty only where the estimator applied to fewer than 2 sources
            assert -1.0 <= float(r["weighted_tau"]) <= 1.0
        for pair in filter(None, r["ground_truth_test"].split(";")):
            assert 0.0 <= float(pair.split("=")[1]) <= 1.0
    logme = next(r for r in tasks if r["estimator"] == "logme")
    assert int(logme["n_sources"]) == 3 and logme["weighted_tau"]
    for r in means:
        if r["weighted_tau"]:
            assert -1.0 <= float(r["weighted_tau"]) <= 1.0


@pytest.mark.slow  # the quick benchmark suite, run in a subprocess
def test_search_csv(quick_out):
    cols, rows = _read(quick_out / "benchmark_search.csv")
    assert cols == SUITE_MODULE.SEARCH_COLUMNS
    assert [r["task"] for r in rows] == ["digits10", "mean"]
    r = rows[0]
    for k in ("grid_best_test", "grid_oracle_test", "grid_scratch_test", "search_test", "search_scratch_test",
              "grid_best_reachable_test"):
        assert 0.0 <= float(r[k]) <= 1.0, (k, r[k])
    assert float(r["grid_oracle_test"]) >= float(r["grid_best_test"])
    regret = float(r["regret_pp"])
    assert math.isfinite(regret) and -100.0 <= regret <= 100.0
    assert math.isclose(regret, 100 * (float(r["grid_best_test"]) - float(r["search_test"])), abs_tol=0.02)
    # one seed: the same-seed columns are the seed-0 runs, so they equal the means
    assert float(r["grid_best_test_same_seed"]) == pytest.approx(float(r["grid_best_test"]), abs=1e-4)
    assert float(r["regret_same_seed_pp"]) == pytest.approx(regret, abs=0.02)
    assert float(r["grid_scratch_test_same_seed"]) == pytest.approx(float(r["grid_scratch_test"]), abs=1e-4)
    assert r["grid_best_test_std"] == ""  # undefined with one seed
    assert float(r["cost_ratio"]) > 0 and float(r["cost_ratio_trials"]) > 0 and float(r["cost_ratio_cpu"]) > 0
    assert math.isfinite(float(r["regret_reachable_pp"])) and r["grid_best_reachable"]
    assert float(r["grid_seconds"]) > 0 and float(r["search_seconds"]) > 0
    assert int(r["grid_runs"]) == int(r["grid_configs"]) >= 7  # 3 sources × 3 strategies + scratch, 1 seed
    assert int(r["search_trials"]) == 6 and int(r["epochs"]) == 6
    assert r["worse_than_scratch"] in ("True", "False")
    assert r["search_source"]
    assert rows[1]["worse_than_scratch"] in ("0", "1")


@pytest.mark.slow  # the quick benchmark suite, run in a subprocess
def test_readme_section(quick_out):
    text = (quick_out / "README.md").read_text()
    assert "## Other table\n\nkept" in text  # only our section is written
    assert text.count("## Benchmark suite") == 1
    section = text.split("## Benchmark suite", 1)[1]
    assert "python benchmarks/suite.py --quick" in section
    assert "logme" in section and "regret" in section
    assert "torch threads" in section or "thread(s)" in section


def test_the_imbalanced_task_trains_and_validates_at_its_counts_and_auto_resolves_to_balanced_accuracy(tmp_path):
    from autotransfer.data.offline import digits_arrays
    from autotransfer.datasets import load
    from autotransfer.metrics import resolve_metric
    from autotransfer.zoo import write_target_task

    counts = SUITE_MODULE.IMBALANCED
    root = write_target_task(tmp_path / "t", per_class=counts, seed=0)
    SUITE_MODULE._shrink_val(root, {str(c): n for c, n in zip(range(5, 10), counts, strict=True)})
    for split, expected in (("train", counts), ("val", counts)):
        got = tuple(len(list((root / split / str(c)).iterdir())) for c in range(5, 10))
        assert got == expected, split
    ds = load(root)
    _, y = digits_arrays()
    assert len(ds.split_items("test")) == int((y >= 5).sum()) - 2 * sum(counts)  # every other image of digits 5-9
    metric, why = resolve_metric("auto", ds.split_labels("train"), [5])
    assert metric == "balanced_accuracy" and "13" in why  # 40 / 3
    with pytest.raises(ValueError, match="five"):
        write_target_task(tmp_path / "bad", per_class=(10, 10))
