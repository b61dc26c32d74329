"""curves.png: every trial's validation curve by epoch, against the scratch baselines and their margin.

Read from the study alone (each trial's intermediate values, one per epoch, and its user attributes),
so a rebuilt report draws the same picture. Colour is the source, line style the strategy; the
scratch baselines are black, with the ``--margin`` band below the best of them at each epoch (a trial
that stays under the band for ``--patience`` epochs is pruned); a pruned trial ends in a marker that
names its reason in the legend; probes, solved rather than trained by epoch, are points at x = 0;
the answer is drawn thick and starred at the epoch it keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optuna.trial import FrozenTrial

from .plots import figure, fit_height, plain
from .record import SCRATCH, TrialRecord

LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2)))
REASON_MARKERS = ("X", "v", "s", "D", "P", "<", ">")


def _curve(t: FrozenTrial) -> tuple[list[int], list[float]]:
    """Epochs (1-based) and validation scores of a trial's reported curve."""
    epochs = sorted(t.intermediate_values)
    return [e + 1 for e in epochs], [float(t.intermediate_values[e]) for e in epochs]


def _is_probe(t: FrozenTrial) -> bool:
    return bool(TrialRecord.from_frozen(t).fixed)


class _Styles:
    """One colour per source and one line style per strategy, in the order they first appear."""

    def __init__(self, lines: Sequence[dict[str, Any]]):
        """``lines``: the transfer trials drawn as curves; a source only probed is drawn grey, so the
        legend grows with the sources fine-tuned (the top-k), not with every source ranked."""
        from matplotlib import colormaps

        palette = colormaps["tab10"].colors
        sources = list(dict.fromkeys(r["source"] for r in lines if r["source"]))  # probe-only ones: grey
        strategies = list(dict.fromkeys(r["strategy"] for r in lines if r["strategy"]))
        self.colour = {s: palette[i % len(palette)] for i, s in enumerate(sources)}
        self.style = {s: LINESTYLES[i % len(LINESTYLES)] for i, s in enumerate(strategies)}
        self.reasons: dict[str, str] = {}

    def reason_marker(self, reason: str) -> str:
        return self.reasons.setdefault(reason, REASON_MARKERS[len(self.reasons) % len(REASON_MARKERS)])


def _draw_baselines(ax: Any, trials: Sequence[FrozenTrial], rows: dict[int, dict[str, Any]], margin: float) -> None:
    """Each baseline's curve in black, and the band from the best of them (epoch by epoch) down by ``margin``."""
    best: dict[int, float] = {}
    for i, t in enumerate(x for x in trials if x.number in rows and rows[x.number]["role"] == SCRATCH
                          and x.intermediate_values):
        xs, ys = _curve(t)
        ax.plot(xs, ys, color="black", lw=1.8, ls=LINESTYLES[i % len(LINESTYLES)], marker=".",
                gid=f"baseline-{t.number}", label=f"{plain(rows[t.number]['source'])} (trial {t.number})", zorder=2)
        for x, y in zip(xs, ys, strict=True):
            best[x] = max(best.get(x, y), y)
    if best:
        xs = sorted(best)
        top = [best[x] for x in xs]
        ax.fill_between(xs, [y - margin for y in top], top, color="grey", alpha=0.25, lw=0, gid="margin-band",
                        label=f"--margin {margin:g} below the best scratch", zorder=1)


def _draw_trials(ax: Any, trials: Sequence[FrozenTrial], rows: dict[int, dict[str, Any]], styles: _Styles,
                 answer: int | None) -> None:
    """The transfer trials' curves; a pruned one ends in its reason's marker; probes as points at x = 0."""
    for t in trials:
        r = rows.get(t.number)
        if r is None or r["role"] == SCRATCH:
            continue
        colour = styles.colour.get(r["source"], "darkgrey")
        if _is_probe(t):
            if r["val_score"] is not None:
                ax.scatter([0], [r["val_score"]], color=colour, marker="o", s=36, edgecolors="white", zorder=4,
                           gid=f"probe-{t.number}")
            continue
        if not t.intermediate_values:
            continue
        xs, ys = _curve(t)
        ax.plot(xs, ys, color=colour, ls=styles.style.get(r["strategy"], "-"), lw=3.0 if t.number == answer else 1.3,
                alpha=1.0 if t.number == answer else 0.85, gid=f"trial-{t.number}", zorder=3)
        if r["state"] == "PRUNED":
            ax.plot([xs[-1]], [ys[-1]], ls="none", marker=styles.reason_marker(r["prune_reason"] or "pruned"),
                    color=colour, markeredgecolor="black", markersize=8, gid=f"pruned-{t.number}", zorder=5)


def _draw_answer(ax: Any, trials: Sequence[FrozenTrial], rows: dict[int, dict[str, Any]], answer: int | None) -> None:
    """A star at the answer's kept epoch (its point at x = 0 when a probe is the answer)."""
    t = next((x for x in trials if x.number == answer), None)
    if t is None or rows.get(answer, {}).get("val_score") is None:
        return
    if _is_probe(t) or not t.intermediate_values:
        x = 0
    else:
        xs, ys = _curve(t)
        kept = TrialRecord.from_frozen(t).best_epoch
        x = kept + 1 if kept is not None and kept + 1 in xs else xs[ys.index(max(ys))]
    r = rows[answer]
    ax.scatter([x], [r["val_score"]], marker="*", s=320, color="gold", edgecolors="black", linewidths=1.0,
               zorder=6, gid="answer", label=f"answer: trial {answer}, {plain(r['source'])} + {plain(r['strategy'])} "
                                              f"(val {r['val_score']:.3f})")


def _legend(fig: Any, ax: Any, styles: _Styles, has_probes: bool) -> None:
    """Sources by colour, strategies by line style, pruning reasons by marker, then the drawn labels."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, lw=2, label=plain(s)) for s, c in styles.colour.items()]
    handles += [Line2D([], [], color="dimgrey", ls=ls, lw=1.3, label=plain(s)) for s, ls in styles.style.items()]
    handles += [Line2D([], [], ls="none", marker=m, color="dimgrey", markeredgecolor="black", markersize=7,
                       label=f"pruned: {plain(reason)}") for reason, m in styles.reasons.items()]
    if has_probes:
        handles.append(Line2D([], [], ls="none", marker="o", color="dimgrey", label="solved probe at x = 0\n(grey: a source only probed)"))
    drawn, _ = ax.get_legend_handles_labels()
    entries = handles + drawn
    labels = [h.get_label() for h in entries]
    fit_height(fig, sum(label.count("\n") + 1 for label in labels), 0.6)
    fig.legend(entries, labels, loc="outside right upper", fontsize=7, frameon=False)


def curves_figure(trials: Sequence[FrozenTrial], rows: Sequence[dict[str, Any]], margin: float,
                  answer: int | None) -> Any:
    """The learning-curve figure (see the module docstring). ``rows`` are ``trial_rows`` (display
    names, states, prune reasons); ``answer`` is the chosen trial's number."""
    from matplotlib.ticker import MaxNLocator

    by_num = {r["trial"]: r for r in rows}
    transfer = [t for t in trials if t.number in by_num and by_num[t.number]["role"] != SCRATCH]
    styles = _Styles([by_num[t.number] for t in transfer if t.intermediate_values and not _is_probe(t)])
    fig, ax = figure(9.0, 4.8)
    _draw_baselines(ax, trials, by_num, margin)
    _draw_trials(ax, trials, by_num, styles, answer)
    _draw_answer(ax, trials, by_num, answer)
    has_probes = any(_is_probe(t) for t in trials if t.number in by_num)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if has_probes:
        ax.set_xlim(left=-0.5)
    ax.set_xlabel("epoch" + (" (0: solved probe)" if has_probes else ""))
    ax.set_ylabel("validation score")
    ax.set_title("Learning curves: every trial against the scratch baselines", fontsize=10)
    ax.grid(alpha=0.3)
    _legend(fig, ax, styles, has_probes)
    return fig
