"""How much ranking a search can afford: time a few batches per source, then size the work to fit.

Ranking (every source's training features, the estimators, then each source's probe, which also
needs its validation features) gets ``RANK_SHARE`` of the search's ``--timeout``. Before any
extraction, each source's cost per item is timed on a few batches (``features.seconds_per_item``;
a source whose features are already cached costs nothing). When extracting every training and
validation item of every source would take more than ``PLAN_FILL`` of the share, the training
split is ranked and probed on a stratified, seeded subsample sized to fit; when even
``min_items`` training items per source do not fit, the costliest sources are left out, each with
a note. The share itself is the hard stop: an extraction still running at its end is stopped
and its source left out (``RankDeadline``).

Why a quarter: after ranking, a search must still afford a scratch baseline and a fine-tuning
trial of at least two epochs each. An epoch costs about three forward passes (forward, backward,
the weights' update) over the training split plus one over validation, so those two trials cost
about 14 forward passes of one source, against K (the sources) for ranking: K = 3 is 3 of ~17,
and a quarter leaves room for the probes and the test of the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .data import Dataset
from .errors import AutotransferError
from .features import is_cached, seconds_per_item

RANK_SHARE = 0.25  # of --timeout, for extraction, estimators and probes (the reason is above)
PLAN_FILL = 0.8  # the plan aims at this much of the share: the timing of a few batches is an estimate
MIN_ITEMS_PER_CLASS = 25  # a subsample keeps at least this many training items per class (bench_rank_subsample)
MIN_ITEMS = 500  # ... and at least this many in all, when the split has them


class RankDeadline(AutotransferError):
    """Ranking's share of the time budget ended (raised by the plan's check)."""


@dataclass
class RankPlan:
    """What ranking will do within its share."""

    items: int | None  # training items to rank and probe on (None: every one)
    sources: list[Any]  # the sources to rank, in the order given
    left_out: dict[str, str] = field(default_factory=dict)  # source name -> why it is not ranked
    seconds: dict[str, float] = field(default_factory=dict)  # source name -> predicted extraction seconds
    share: float = 0.0  # seconds of ranking's share

    def describe(self, n_train: int) -> str:
        """One line for the console and the summary."""
        total = sum(self.seconds.values())
        what = (f"every one of the {n_train} training items" if self.items is None
                else f"a stratified subsample of {self.items} of the {n_train} training items")
        text = (f"ranking {len(self.sources)} source(s) on {what}: about {total:.0f} s of extraction planned "
                f"in ranking's {self.share:.0f} s ({RANK_SHARE:.0%} of --timeout)")
        if self.left_out:
            text += "; left out: " + "; ".join(f"{k} ({v})" for k, v in self.left_out.items())
        return text


def min_items(dataset: Dataset) -> int:
    """The smallest training subsample ranking uses (``MIN_ITEMS_PER_CLASS`` per class, ``MIN_ITEMS`` in all)."""
    n_train = len(dataset.splits["train"])
    return min(n_train, max(MIN_ITEMS, MIN_ITEMS_PER_CLASS * dataset.tasks[0].num_classes))


def plan_ranking(dataset: Dataset, sources: Sequence[Any], share: float, *, device: str = "auto",
                 precision: str = "auto", cache_dir: Any = None, check: Callable[[], None] | None = None,
                 timer: Callable[[Any], float] | None = None) -> RankPlan:
    """Time each source on a few batches and size ranking to ``PLAN_FILL`` of ``share`` seconds.

    ``timer(source) -> seconds per item`` replaces the timing (tests drive the plan with it).
    """
    n_train, n_val = len(dataset.splits["train"]), len(dataset.splits.get("val", []))
    per_item: dict[str, float] = {}
    for src in sources:
        cached = all(is_cached(src, dataset, s, device=device, precision=precision, cache_dir=cache_dir)
                     for s in ("train", "val") if s in dataset.splits)
        if cached:
            per_item[src.name] = 0.0
        elif timer is not None:
            per_item[src.name] = float(timer(src))
        else:
            per_item[src.name] = seconds_per_item(src, dataset, device=device, precision=precision, check=check)
    target = PLAN_FILL * share

    def cost(names: Sequence[str], n: int) -> float:
        return sum(per_item[s] for s in names) * (n + n_val)

    names = [s.name for s in sources]
    if cost(names, n_train) <= target:
        return RankPlan(None, list(sources), {}, {s: cost([s], n_train) for s in names}, share)
    rate = sum(per_item.values())
    floor = min_items(dataset)
    n = int(target / rate - n_val) if rate else n_train
    if n >= floor:
        return RankPlan(n, list(sources), {}, {s: cost([s], n) for s in names}, share)
    keep = sorted(names, key=lambda s: per_item[s])
    left: dict[str, str] = {}
    while len(keep) > 1 and cost(keep, floor) > target:
        gone = keep.pop()
        left[gone] = (f"its extraction, {per_item[gone] * 1000:.0f} ms per item, does not fit ranking's share "
                      "even on a subsample; raise --timeout or name fewer --sources")
    kept = [s for s in sources if s.name in keep]
    return RankPlan(floor, kept, left, {s: cost([s], floor) for s in keep}, share)
