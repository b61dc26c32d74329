"""console: the warnings kept for reports are bounded."""

from __future__ import annotations

from autotransfer import console


def test_only_the_latest_warnings_are_kept(capsys):
    extra = 5
    for i in range(console.KEPT_WARNINGS + extra):
        console.warn(f"warning number {i}")
    kept = console.seen_warnings()
    assert len(kept) == console.KEPT_WARNINGS
    assert kept[0] == f"warning number {extra}" and kept[-1] == f"warning number {console.KEPT_WARNINGS + extra - 1}"
    assert capsys.readouterr().err.count("warning: warning number") == console.KEPT_WARNINGS + extra  # all shown
