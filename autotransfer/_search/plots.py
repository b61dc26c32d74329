"""The report's pictures: transferability vs validation, the optimisation history, the learning curves.

Each is drawn on an Agg figure without pyplot (a notebook's backend is neither switched nor handed
figures to show). Sources appear under their display names, in legends rather than beside their
points, so a long name is never clipped at the edge nor laid over another.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from .record import SCRATCH
from .rundir import replace_file

DPI = 150  # the report shows the PNGs at their own size: 150 dpi keeps 8-pt text legible
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*", "<", ">")


WRAP = 40  # characters per legend line: a long source name wraps onto more lines rather than squeeze the plot
LINE_INCHES = 0.2  # height of one legend line at 7-8 pt, with its share of the spacing between entries


def plain(text: Any, width: int = WRAP) -> str:
    """``text`` as a label shows it: wrapped at ``width`` characters, and a ``$`` escaped (in a
    source's name it would otherwise start matplotlib mathtext)."""
    return "\n".join(_wrap(str(text), width)).replace("$", r"\$")


def _wrap(text: str, width: int) -> list[str]:
    """Lines of at most ``width`` characters, broken after a space, ``@``, ``/``, ``?`` or ``:`` where
    one is near (a source spec's natural joints), else at ``width``."""
    lines, line = [], ""
    for part in re.split(r"(?<=[ @/?:])", text):
        if line and len(line) + len(part) > width:
            lines.append(line)
            line = ""
        while len(part) > width:  # a part longer than a line: cut it
            lines.append(part[:width])
            part = part[width:]
        line += part
    return [x.rstrip() for x in [*lines, line] if x.strip()] or [""]


def fit_height(fig: Any, lines: int, room: float) -> None:
    """Grow the figure so that ``lines`` legend lines fit beside (or below) ``room`` inches of plot."""
    width, height = fig.get_size_inches()
    fig.set_size_inches(width, max(height, room + LINE_INCHES * lines))


def figure(width: float = 6.4, height: float = 4.2) -> tuple[Any, Any]:
    """A figure with one axes on the Agg canvas, laid out so that outside legends get room."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def save(fig: Any, path: Path) -> None:
    replace_file(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format="png"))


def legend_below(fig: Any, ax: Any, ncols: int = 2) -> Any:
    """The axes' legend under the plot, across the figure (outside the data, inside the canvas)."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    longest = max(len(line) for label in labels for line in label.split("\n"))
    ncols = min(ncols if longest <= 32 else 1, len(handles))  # two columns of 40 characters overflow the width
    per_col = [sum(label.count("\n") + 1 for label in labels[i::ncols]) for i in range(ncols)]
    fit_height(fig, max(per_col), fig.get_size_inches()[1] - LINE_INCHES * 3)  # the default fits 3 lines
    return fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=8,
                      frameon=False)


def transferability_figure(scores: dict[str, dict[str, float]], primary: str,
                           rows: list[dict[str, Any]]) -> Any:
    """Each source's best validation score over its transferability score, one marker per source
    (named in the legend), and the best scratch baseline as a dashed line."""
    best: dict[str, float] = {}
    for r in rows:
        if r["role"] != SCRATCH and r["val_score"] is not None:
            best[r["source"]] = max(best.get(r["source"], -1.0), r["val_score"])
    fig, ax = figure()
    for i, (s, v) in enumerate(sorted(best.items(), key=lambda kv: -kv[1])):
        x = scores.get(s, {}).get(primary)
        if x is not None and not math.isnan(x):
            ax.scatter([x], [v], marker=MARKERS[(i + i // 10) % len(MARKERS)], s=50, label=plain(s), zorder=3)
    base = [r for r in rows if r["role"] == SCRATCH and r["val_score"] is not None]
    if base:
        top = max(base, key=lambda r: r["val_score"])
        ax.axhline(top["val_score"], color="grey", ls="--", label=f"best scratch ({plain(top['source'])})")
    ax.set_xlabel(f"transferability ({primary})")
    ax.set_ylabel("best validation score")
    ax.set_title("Transferability vs best validation score", fontsize=10)
    ax.grid(alpha=0.3)
    legend_below(fig, ax)
    return fig


def history_figure(rows: list[dict[str, Any]], answer: int | None = None) -> Any:
    """Every trial's validation score by trial number (x: pruned, a square on the axis: failed), the
    best complete score so far as a step line that runs through the last trial, and the answer starred."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = figure()
    for state, scratch, marker, colour, label in (
            ("COMPLETE", False, "o", "tab:blue", "complete"), ("COMPLETE", True, "o", "black", "scratch baseline"),
            ("PRUNED", None, "x", "tab:red", "pruned (its best epoch)")):
        pts = [(r["trial"], r["val_score"]) for r in rows if r["state"] == state and r["val_score"] is not None
               and scratch in (None, r["role"] == SCRATCH)]
        if pts:
            ax.scatter(*zip(*pts, strict=True), marker=marker, c=colour, label=label, zorder=3)
    failed = [r["trial"] for r in rows if r["state"] == "FAIL" or (r["state"] != "COMPLETE" and r["val_score"] is None)]
    if failed:  # no score: on the x axis, whatever the y range
        ax.scatter(failed, [0.0] * len(failed), marker="s", c="black", label="failed or no score",
                   transform=ax.get_xaxis_transform(), clip_on=False, zorder=3)
    xs, ys = best_so_far(rows)
    if xs:
        ax.step(xs, ys, where="post", color="tab:green", lw=1.5, label=f"best so far ({ys[-1]:.3f})", gid="best-so-far")
    star = [r for r in rows if r["trial"] == answer and r["val_score"] is not None]
    if star:
        ax.scatter([answer], [star[0]["val_score"]], marker="*", s=220, facecolors="none", edgecolors="goldenrod",
                   linewidths=1.5, label=f"answer (trial {answer})", zorder=4)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel("validation score")
    ax.set_title("Optimisation history", fontsize=10)
    ax.grid(alpha=0.3)
    legend_below(fig, ax)
    return fig


def best_so_far(rows: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """The best complete validation score after each trial, from the first complete one on; the
    line is carried half a trial past the last so its final level shows beyond the last marker."""
    run_best, xs, ys = -math.inf, [], []
    for r in sorted(rows, key=lambda r: r["trial"]):
        if r["state"] == "COMPLETE" and r["val_score"] is not None:
            run_best = max(run_best, r["val_score"])
        if run_best > -math.inf:
            xs.append(float(r["trial"]))
            ys.append(run_best)
    if xs:
        xs.append(xs[-1] + 0.5)
        ys.append(ys[-1])
    return xs, ys
