"""A default strategy that cannot apply to a source is skipped without a warning and listed in the
report; a strategy the user named that cannot apply still warns (issue 25, item 5)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # searches of the digits zoo


def _search(zoo, target_dir, tmp_path, **kw):
    import autotransfer

    return autotransfer.search(target_dir, out=tmp_path / "run", sources=[zoo["digits-test_resnet"].spec],
                               trials=2, epochs=1, estimators=["logme"], progress=False,
                               cache_dir=str(tmp_path / "cache"), **kw)


def test_default_search_on_a_cnn_skips_lora_quietly_and_the_report_lists_it(zoo, target_dir, tmp_path, capsys):
    from autotransfer.strategies import default_strategies

    assert "lora" in default_strategies()
    res = _search(zoo, target_dir, tmp_path)
    err = capsys.readouterr().err
    assert "lora" not in err and "skipped for source" not in err
    report = (res.out_dir / "report.md").read_text()
    section = report.split("## What was searched", 1)[1].split("\n## ", 1)[0]
    assert "`linear_probe`, `partial`, `full`, `lp_ft`; `lora` not applicable: needs a transformer source" in section
    assert "`timm:test_resnet@digits-test_resnet.safetensors` (fine-tuned)" in section


def test_a_named_strategy_that_cannot_apply_still_warns(zoo, target_dir, tmp_path, capsys):
    res = _search(zoo, target_dir, tmp_path, strategies=["linear_probe", "lora"])
    err = capsys.readouterr().err
    assert err.count("strategy 'lora' skipped for source") == 1
    assert "needs a transformer source" in err
    assert "`linear_probe`; `lora` not applicable" in (res.out_dir / "report.md").read_text()
