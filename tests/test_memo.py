"""BoundedMemo: the bound every process-wide memo keeps."""

from __future__ import annotations

import pytest

from autotransfer.memo import BoundedMemo


def test_the_least_recently_used_entry_goes_first_and_a_failed_make_keeps_nothing():
    memo: BoundedMemo[int] = BoundedMemo(2)
    made = []

    def make(v):
        return lambda: made.append(v) or v

    assert memo.get("a", make(1)) == 1 and memo.get("b", make(2)) == 2
    assert memo.get("a", make(10)) == 1  # kept: not made again, and now the most recent
    assert memo.get("c", make(3)) == 3 and len(memo) == 2  # "b" went
    assert memo.get("a", make(11)) == 1 and memo.get("b", make(20)) == 20
    assert made == [1, 2, 3, 20]
    with pytest.raises(ZeroDivisionError):
        memo.get("d", lambda: 1 / 0)
    assert len(memo) == 2 and memo.get("d", make(4)) == 4
    memo.clear()
    assert len(memo) == 0


def test_a_memo_holds_at_least_one_entry():
    with pytest.raises(ValueError, match="size=0"):
        BoundedMemo(0)
