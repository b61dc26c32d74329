"""The house rules that code review keeps forgetting: one place per default, short functions, no import cycles."""

from __future__ import annotations

import dataclasses

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
