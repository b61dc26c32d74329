"""The report's pictures, checked on their artists: the learning curves (curves.png), the optimisation
history's best-so-far line, and labels that fit the canvas (issue 25, items 2 and 3)."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState, create_trial

LONG = "rnm:test_resnet@bad.safetensors"  # a real source name that used to be clipped at the plot's edge
MARGIN = 0.05


def _trial(state, role, source, strategy, curve=(), value=None, **attrs):
    """A finished trial as the search records it: its curve as intermediate values (epoch 0 first)."""
    user = {"role": role, "config": {"source": source, "strategy": strategy, "lr": 1e-3, "weight_decay": 0.01,
                                     "params": {}}, **attrs}
    if curve:
        user.setdefault("epochs_run", len(curve))
    return create_trial(state=state, value=value, intermediate_values=dict(enumerate(curve)), user_attrs=user)


def _study() -> optuna.Study:
    """Two probes, two scratch baselines (two architectures), a complete fine-tuning, two pruned ones
    (different reasons), a failure, and a last trial that raises the best score."""
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("scores", {"a": {"logme": -0.2}, "b": {"logme": -0.5}, LONG: {"logme": -0.4}})
    study.set_user_attr("primary", "logme")
    study.set_user_attr("architectures", {"a": "test_resnet", "b": "test_vit", LONG: "test_resnet"})
    study.set_user_attr("dataset", {"modality": "image", "tasks": ["label"], "n_train": 100, "n_val": 50,
                                    "n_test": 50})
    study.set_user_attr("pruner", {"margin": MARGIN})
    fixed = {"fixed": {"source": "a", "strategy": "linear_probe"}}
    C, P, F = TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL
    for t in [
        _trial(C, "default", "a", "linear_probe", value=0.80, **fixed),                                    # 0
        _trial(C, "default", "b", "linear_probe", value=0.50, fixed={"source": "b", "strategy": "linear_probe"}),
        _trial(C, "scratch", "a", "scratch", (0.30, 0.50, 0.60, 0.70), 0.70),                              # 2
        _trial(C, "scratch", "b", "scratch", (0.20, 0.55, 0.65), 0.65),                                    # 3
        _trial(C, "default", "a", "full", (0.60, 0.80, 0.90, 0.95), 0.95, best_epoch=3),                   # 4
        _trial(P, "search", "b", "full", (0.20, 0.30, 0.35), prune_reason="behind scratch"),               # 5
        _trial(P, "search", LONG, "lp_ft", (0.50, 0.60), prune_reason="cannot catch up"),                  # 6
        _trial(F, "search", "a", "partial", fail_reason="CUDA out of memory"),                             # 7
        _trial(C, "search", "a", "partial", (0.70, 0.90, 0.973, 0.96), 0.973, best_epoch=2),               # 8
    ]:
        study.add_trial(t)
    return study


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """write_reports on the study, as a finished search calls it: trial 8 is the answer."""
    from autotransfer._search.report import write_reports

    study = _study()
    out = tmp_path_factory.mktemp("run")
    rows = write_reports(study, None, final=True, out_dir=out, extra={
        "answer": 8, "baseline": 2, "tests": {8: 0.96, 2: 0.66}, "negative": False, "seconds": 12.0, "data": "d"})
    return study, rows, out


def _by_gid(fig, kind=None):
    ax = fig.axes[0]
    arts = [*ax.lines, *ax.collections]
    return {a.get_gid(): a for a in arts if a.get_gid() and (kind is None or isinstance(a, kind))}


def _inside_canvas(fig) -> None:
    """Everything drawn (titles, tick labels, legends) lies inside the saved canvas: nothing clipped."""
    fig.canvas.draw()
    drawn = fig.get_tightbbox(fig.canvas.get_renderer())  # in inches, like the figure's own box
    w, h = fig.get_size_inches()
    assert drawn.x0 >= -0.01 and drawn.y0 >= -0.01 and drawn.x1 <= w + 0.01 and drawn.y1 <= h + 0.01, (drawn, w, h)
    legend = fig.legends[0].get_window_extent()
    axes = fig.axes[0].get_window_extent()
    assert not legend.overlaps(axes)  # the legend sits beside the data, never over it


def test_every_trained_trial_is_one_line_by_epoch_and_each_baseline_is_drawn(run):
    from matplotlib.lines import Line2D

    from autotransfer._search.curves import curves_figure

    study, rows, _ = run
    fig = curves_figure(study.get_trials(), rows, MARGIN, answer=8)
    lines = _by_gid(fig, Line2D)
    trials = {k: v for k, v in lines.items() if k.startswith("trial-")}
    assert set(trials) == {"trial-4", "trial-5", "trial-6", "trial-8"}  # no line for probes, failures
    assert list(trials["trial-5"].get_xdata()) == [1, 2, 3]
    assert list(trials["trial-8"].get_ydata()) == [0.70, 0.90, 0.973, 0.96]
    assert {k for k in lines if k.startswith("baseline-")} == {"baseline-2", "baseline-3"}
    assert list(lines["baseline-3"].get_ydata()) == [0.20, 0.55, 0.65]
    # colour is the source, line style the strategy
    assert trials["trial-4"].get_color() == trials["trial-8"].get_color() != trials["trial-5"].get_color()
    assert trials["trial-4"].get_linestyle() == trials["trial-5"].get_linestyle() != trials["trial-8"].get_linestyle()
    assert trials["trial-8"].get_linewidth() > trials["trial-4"].get_linewidth()  # the answer stands out


def test_margin_band_lies_below_the_best_baseline_at_each_epoch(run):
    import numpy as np

    from autotransfer._search.curves import curves_figure

    study, rows, _ = run
    band = _by_gid(curves_figure(study.get_trials(), rows, MARGIN, answer=8))["margin-band"]
    pts = np.round(band.get_paths()[0].vertices, 6)
    best = {1: 0.30, 2: 0.55, 3: 0.65, 4: 0.70}  # the better baseline's value at each epoch
    for epoch, top in best.items():
        ys = sorted({y for x, y in pts if x == epoch})
        assert ys == pytest.approx([top - MARGIN, top]), epoch


def test_pruned_trials_end_in_a_marker_at_their_last_epoch_with_the_reason_in_the_legend(run):
    from autotransfer._search.curves import curves_figure

    study, rows, _ = run
    fig = curves_figure(study.get_trials(), rows, MARGIN, answer=8)
    arts = _by_gid(fig)
    assert list(arts["pruned-5"].get_xydata()[0]) == pytest.approx([3, 0.35])
    assert list(arts["pruned-6"].get_xydata()[0]) == pytest.approx([2, 0.60])
    assert arts["pruned-5"].get_marker() != arts["pruned-6"].get_marker()  # one marker per reason
    assert not any(k.startswith("pruned-") and k not in ("pruned-5", "pruned-6") for k in arts)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "pruned: behind scratch" in labels and "pruned: cannot catch up" in labels
    assert LONG in labels  # the full display name, in the legend, not cut


def test_probes_are_points_at_their_score_and_the_answer_is_starred_at_its_kept_epoch(run):
    from autotransfer._search.curves import curves_figure

    study, rows, _ = run
    arts = _by_gid(curves_figure(study.get_trials(), rows, MARGIN, answer=8))
    assert list(arts["probe-0"].get_offsets()[0]) == pytest.approx([0, 0.80])
    assert list(arts["probe-1"].get_offsets()[0]) == pytest.approx([0, 0.50])
    assert list(arts["answer"].get_offsets()[0]) == pytest.approx([3, 0.973])  # best_epoch 2 -> epoch 3


def test_best_so_far_reaches_the_last_trial_at_its_score(run):
    from autotransfer._search.plots import history_figure

    _, rows, _ = run
    line = _by_gid(history_figure(rows, answer=8))["best-so-far"]
    xs, ys = list(line.get_xdata()), list(line.get_ydata())
    assert ys[-1] == pytest.approx(0.973) and xs[-1] > 8  # drawn past the last trial, at the new best
    assert ys[xs.index(7.0)] == pytest.approx(0.95)  # before it: trial 4's (pruned trials never count)


def test_every_label_fits_the_canvas_and_names_are_never_cut(run):
    from autotransfer._search.curves import curves_figure
    from autotransfer._search.plots import history_figure, transferability_figure

    study, rows, _ = run
    trans = transferability_figure(study.user_attrs["scores"], "logme", rows)
    assert not trans.axes[0].texts  # names go to the legend, not beside points where they overlap
    assert LONG in [t.get_text() for t in trans.legends[0].get_texts()]
    for fig in (trans, history_figure(rows, answer=8), curves_figure(study.get_trials(), rows, MARGIN, 8)):
        _inside_canvas(fig)


def test_report_shows_the_curves_right_under_the_answer(run):
    _, _, out = run
    report = (out / "report.md").read_text()
    assert (out / "curves.png").stat().st_size > 0
    assert report.index("**Answer:**") < report.index("![learning curves](curves.png)") < report.index("\n## ")


def test_a_dollar_in_a_source_name_is_drawn_as_text_not_parsed_as_mathtext(run):
    import io

    from autotransfer._search.curves import curves_figure
    from autotransfer._search.plots import transferability_figure

    study, rows, _ = run
    odd = "timm:m$\\frac$"  # as mathtext this does not parse, and drawing would raise
    renamed = [{**r, "source": odd if r["source"] == "a" else r["source"]} for r in rows]
    for fig in (transferability_figure({odd: {"logme": -0.2}}, "logme", renamed),
                curves_figure(study.get_trials(), renamed, MARGIN, 8)):
        fig.savefig(io.BytesIO(), format="png")


@pytest.mark.parametrize("n_sources", [1, 8, 25])
def test_many_long_source_names_still_fit_and_only_fine_tuned_sources_get_colours(n_sources):
    """Every ranked source is probed, the top 3 fine-tuned: long names wrap, the legends grow the
    figure instead of overflowing it, and the curves' legend lists the fine-tuned sources only."""
    from autotransfer._search.curves import curves_figure
    from autotransfer._search.plots import history_figure, transferability_figure
    from autotransfer._search.report import trial_rows

    study = optuna.create_study(direction="maximize")
    names = [f"timm:a_long_model_name_{i}@weights-file-number-{i}-of-the-zoo.safetensors" for i in range(n_sources)]
    for i, n in enumerate(names):
        study.add_trial(_trial(TrialState.COMPLETE, "default", n, "linear_probe", value=0.5 + i / 60,
                               fixed={"source": n, "strategy": "linear_probe"}))
    study.add_trial(_trial(TrialState.COMPLETE, "scratch", names[0], "scratch", (0.3, 0.4, 0.5), 0.5))
    for j, strategy in enumerate(["partial", "full", "lp_ft", "lora"]):
        for n in names[:3]:
            study.add_trial(_trial(TrialState.COMPLETE, "search", n, strategy, (0.5, 0.6 + j / 20), 0.6 + j / 20))
    rows = trial_rows(study)
    curves = curves_figure(study.get_trials(), rows, MARGIN, answer=len(study.trials) - 1)
    scores = {n: {"logme": -i / 10} for i, n in enumerate(names)}
    for fig in (curves, transferability_figure(scores, "logme", rows), history_figure(rows, 0)):
        _inside_canvas(fig)
    coloured = [t.get_text() for t in curves.legends[0].get_texts() if t.get_text().startswith("timm:a_long")]
    assert len(coloured) == min(3, n_sources)


@pytest.mark.parametrize("name", ["timm:test_resnet@digits-test_resnet.safetensors", LONG, "x" * 95,
                                  "timm:some_long_model_name_0@weights-file-number-0-of-the-zoo.safetensors",
                                  "hf:/very/long/path/to/a/folder/of/models/bert-base-uncased-finetuned"])
def test_a_legend_name_wraps_at_its_joints_and_loses_no_character(name):
    from autotransfer._search.plots import WRAP, plain

    lines = plain(name).split("\n")
    assert "".join(lines) == name and all(len(line) <= WRAP for line in lines)
    assert len(lines) == -(-len(name) // WRAP) or lines[0][-1] in "@/"  # cut only where it must, else at a joint
    if name.startswith("timm:test_resnet@digits"):
        assert lines == ["timm:test_resnet@", "digits-test_resnet.safetensors"]
