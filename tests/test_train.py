"""The one training loop: real learning, LP-FT, multi-task, seeds, OOM back-off, report/stop, save/load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers_training import Wrapped, make_tiny_bert, timm_spec, write_digits

import autotransfer
from autotransfer import AutotransferError
from autotransfer._train import StopTraining, auto_augment, auto_batch_size, kept_epoch, lr_factor, standard_error
from autotransfer.data.offline import digits_arrays, write_bbc_folder, write_images
from autotransfer.datasets import load
from autotransfer.monitor import TrainMonitor
from autotransfer.sources import resolve_source

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("train")


@pytest.fixture(scope="module")
def resnet(work) -> str:
    return timm_spec(work, "test_resnet")


@pytest.fixture(scope="module")
def news(work):
    """BBC news as a CSV with two label columns: topic (5 classes) and kind (hard/soft news)."""
    bbc = load(write_bbc_folder(work / "bbc", per_class=60))
    classes = bbc.tasks[0].classes
    hard = {"business", "politics", "tech"}
    rows = [{"text": t, "topic": classes[y], "kind": "hard" if classes[y] in hard else "soft"}
            for t, y in zip(bbc.items, bbc.labels[:, 0], strict=False)]
    pd.DataFrame(rows).to_csv(work / "news.csv", index=False)
    ds = load(work / "news.csv", label_col="topic,kind")
    return ds, make_tiny_bert(work / "bert128", ds.items, hidden=128)


# --- real learning: pretrain on digits 0-4, transfer to 5-9 with 20 labels per class ---


@pytest.fixture(scope="module")
def digits_a_b(work):
    """Task A: digits 0-4 (all). Task B: digits 5-9 pre-split, 20 train images per class, 50 val."""
    images, y = digits_arrays()
    a = np.flatnonzero(y < 5)
    write_images(work / "A", images[a], y[a], names=[f"{i:04d}" for i in a], size=16)
    rng = np.random.default_rng(0)
    for c in range(5, 10):
        idx = rng.permutation(np.flatnonzero(y == c))
        for split, ids in (("train", idx[:20]), ("val", idx[20:70]), ("test", idx[70:])):
            write_images(work / "B" / split, images[ids], [c] * len(ids), names=[f"{i:04d}" for i in ids], size=16)
    return work / "A", work / "B"


@pytest.mark.slow
def test_pretrained_on_0_to_4_transfers_to_5_to_9(digits_a_b, work):
    from safetensors.torch import save_file

    task_a, task_b = digits_a_b
    init = timm_spec(work, "test_resnet", size=16)
    pre = autotransfer.train(task_a, init, "full", pretrained=False, lr=2e-3, epochs=6, evaluate_test=False)
    assert pre.val_score > 0.9  # measured 0.98
    # a timm state dict with its classifier: exactly what a user's own checkpoint looks like
    sd = {k[len("model."):]: v.contiguous() for k, v in pre.model.backbone.state_dict().items()}
    head = pre.model.heads[0]
    sd["fc.weight"], sd["fc.bias"] = head.weight.detach().contiguous(), head.bias.detach().contiguous()
    save_file(sd, str(work / "digits_a.safetensors"))
    source = f"timm:test_resnet@{work / 'digits_a.safetensors'}?size=16"
    assert resolve_source(source).build(True).source_head is not None

    assert load(task_b).splits["train"].size == 100
    probe = autotransfer.train(task_b, source, "linear_probe", epochs=10, cache_dir=work / "cache")
    partial = autotransfer.train(task_b, source, "partial", depth=1, epochs=5, cache_dir=work / "cache")
    # chance is 0.2; measured: probe val 0.74 / test 0.76, partial val 0.68 / test 0.70
    for r in (probe, partial):
        assert r.val_score > 0.6 and r.test_score > 0.6, (r.strategy, r.val_score, r.test_score)


# --- LP-FT ---


def test_lp_ft_probe_stage_is_exactly_linear_probe(resnet, digits5, work):
    probe = autotransfer.train(digits5, resnet, "linear_probe", epochs=4, seed=3, cache_dir=work / "cache")
    # lr=0 freezes the fine-tune stage (AdamW moves nothing at lr 0), exposing the probe stage's heads
    frozen_ft = autotransfer.train(digits5, resnet, "lp_ft", lr=0.0, epochs=1, seed=3,
                                   cache_dir=work / "cache")
    assert frozen_ft.stage_curves["probe"] == probe.val_curve
    for a, b in zip(probe.model.heads, frozen_ft.model.heads, strict=False):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)

    lpft = autotransfer.train(digits5, resnet, "lp_ft", epochs=2, seed=3, cache_dir=work / "cache")
    assert lpft.stage_curves["probe"] == probe.val_curve
    assert len(lpft.val_curve) == 2 and lpft.trainable_params == lpft.total_params
    assert not torch.equal(lpft.model.heads[0].weight, probe.model.heads[0].weight)  # then it fine-tuned


# --- multi-task ---


@pytest.mark.slow
def test_multitask_shares_one_backbone_with_a_head_per_task(news, work):
    ds, bert = news
    assert [t.name for t in ds.tasks] == ["topic", "kind"]
    majority = {t.name: {s: np.bincount(ds.split_labels(s, i)).max() / len(ds.splits[s]) for s in ("val", "test")}
                for i, t in enumerate(ds.tasks)}
    probe = autotransfer.train(ds, bert, "linear_probe", epochs=10, cache_dir=work / "cache")
    assert [h.out_features for h in probe.model.heads] == [5, 2]
    assert set(probe.task_scores) == set(probe.test_task_scores) == {"topic", "kind"}
    assert probe.val_score == pytest.approx(np.mean(list(probe.task_scores.values())))
    # measured: topic val 0.71 / test 0.60 (chance 0.2), kind val 0.82 / test 0.89 (majority 0.6)
    for scores, split in ((probe.task_scores, "val"), (probe.test_task_scores, "test")):
        assert scores["topic"] > 0.4, scores
        assert scores["kind"] > majority["kind"][split] + 0.1, scores

    shared = autotransfer.train(ds, bert, "lp_ft", epochs=1, cache_dir=work / "cache")
    assert len(shared.model.heads) == 2 and set(shared.task_curves) == {"topic", "kind"}
    assert all(len(c) == 1 for c in shared.task_curves.values())
    assert shared.task_scores["topic"] > 0.4 and shared.task_scores["kind"] > majority["kind"]["val"]
    pred, probs = shared.predict(ds.split_items("test"))
    assert pred.shape == (len(ds.splits["test"]), 2) and [p.shape[1] for p in probs] == [5, 2]
    acc = (pred == ds.split_labels("test")).mean(axis=0)
    assert list(acc) == pytest.approx([shared.test_task_scores["topic"], shared.test_task_scores["kind"]])


# --- reproducibility ---


def test_same_seed_same_numbers_different_seed_different(digits5, work):
    vit = timm_spec(work, "test_vit")
    kw = dict(depth=2, epochs=2, augment=True, evaluate_test=False)  # augmentation: RNG in the data path too
    a = autotransfer.train(digits5, vit, "partial", seed=1, **kw)
    b = autotransfer.train(digits5, vit, "partial", seed=1, **kw)
    c = autotransfer.train(digits5, vit, "partial", seed=2, **kw)
    assert a.val_curve == b.val_curve
    sa, sb, sc = (r.model.state_dict() for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.val_curve != c.val_curve
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


# --- out of memory ---


def _oom_above(limit: int, kind: str = "cuda"):
    def hook(n: int) -> None:
        if n > limit:
            if kind == "cuda":
                raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {n} MiB")
            raise RuntimeError(f"[enforce fail] DefaultCPUAllocator: out of memory allocating {n}")
    return hook


@pytest.mark.parametrize("kind", ["cuda", "runtime"])
def test_oom_halves_the_batch_size_and_finishes(resnet, digits5, kind):
    source = Wrapped(resolve_source(resnet), on_forward=_oom_above(16, kind))
    r = autotransfer.train(digits5, source, "partial", depth=1, epochs=2, batch_size=64)
    assert r.batch_size == 16 and r.oom_retries == 2
    assert source.calls[:3] == [64, 32, 16]  # halved on each failure, then carried on
    assert max(source.calls[3:]) <= 16
    assert r.epochs_run == 2 and r.test_score is not None


def test_oom_gives_up_after_three_halvings_with_one_line(resnet, digits5):
    source = Wrapped(resolve_source(resnet), on_forward=_oom_above(4))
    with pytest.raises(AutotransferError) as err:
        autotransfer.train(digits5, source, "partial", depth=1, epochs=1, batch_size=64)
    msg = str(err.value)
    assert "\n" not in msg and "out of memory" in msg and "batch size 8" in msg and "batch_size" in msg
    assert source.calls == [64, 32, 16, 8]


# --- report / stop / best epoch ---


def test_report_stops_the_run_and_the_best_epoch_is_kept(resnet, digits5):
    seen = []

    def report(epoch, score):
        seen.append((epoch, score))
        return epoch == 1

    r = autotransfer.train(digits5, resnet, "partial", depth=2, epochs=5, report=report)
    assert [e for e, _ in seen] == [0, 1] and r.epochs_run == 2 and r.stopped_early
    assert [s for _, s in seen] == r.val_curve

    def raises(epoch, score):
        raise StopTraining

    assert autotransfer.train(digits5, resnet, "partial", depth=2, epochs=5, report=raises).epochs_run == 1

    n_val = len(digits5.split_labels("val", 0))
    for keep in ("within_se", "best"):  # the model holds the kept epoch's weights, whichever the rule
        full = autotransfer.train(digits5, resnet, "partial", depth=2, epochs=5, keep=keep)
        assert full.best_epoch == kept_epoch(full.val_curve, n_val, keep)
        assert full.val_score == full.val_curve[full.best_epoch]
        pred, _ = full.predict(digits5.split_items("val"))
        assert (pred[:, 0] == digits5.split_labels("val", 0)).mean() == pytest.approx(full.val_score)
    with pytest.raises(AutotransferError, match="keep must be one of within_se, best, last"):
        autotransfer.train(digits5, resnet, "partial", depth=2, epochs=1, keep="worst")


def test_kept_epoch_is_the_latest_within_one_standard_error_of_the_best():
    # the shape of the imagenet task's lite0 LP-FT run (150 val images): a maximum at epoch 3, the end a point below
    curve = [0.80, 0.90, 0.933, 0.913, 0.927, 0.920, 0.920, 0.920]
    assert standard_error(0.933, 150) == pytest.approx(0.0204, abs=1e-4)
    assert kept_epoch(curve, 150) == 7
    assert kept_epoch(curve, 150, "best") == 2
    assert kept_epoch(curve, 15000) == 2  # a large split measures 0.933 to +-0.002: the maximum stands
    assert kept_epoch([0.5, 0.9, 0.2], 150) == 1  # a collapse is never kept
    assert kept_epoch([0.9, 1.0, 1.0, 0.99], 150) == 2  # no error at a perfect score: the latest perfect epoch


# --- save / load ---


@pytest.mark.parametrize("strategy,params", [("partial", {"depth": 1}), ("linear_probe", {})])
def test_save_load_predict_reproduces_exactly(strategy, params, resnet, digits5, work):
    r = autotransfer.train(digits5, resnet, strategy, epochs=2, cache_dir=work / "cache", **params)
    items = digits5.split_items("test")
    pred, probs = r.predict(items)
    assert (pred[:, 0] == digits5.split_labels("test", 0)).mean() == pytest.approx(r.test_score)
    out = r.save(work / f"model-{strategy}")
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "config.json", "result.json"}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["source"] == resolve_source(resnet).spec and cfg["strategy"] == strategy
    assert cfg["modality"] == "image" and cfg["tasks"] == [{"name": "label", "classes": ["0", "1", "2", "3", "4"]}]

    model = autotransfer.load_model(out)
    assert [t.classes for t in model.tasks] == [digits5.tasks[0].classes]
    pred2, probs2 = model.predict(items)
    assert np.array_equal(pred, pred2) and np.array_equal(probs[0], probs2[0])


def test_lora_model_saves_and_loads_with_its_adapters(work):
    from helpers_training import timm_spec as spec_for

    ds = load(write_digits(work / "digits-vit", classes=range(3), per_class=20))
    vit = spec_for(work, "test_vit")
    r = autotransfer.train(ds, vit, "lora", lora_rank=4, epochs=1)
    out = r.save(work / "model-lora")
    model = autotransfer.load_model(out)
    assert any(".lora_A." in n for n, _ in model.named_parameters())
    items = ds.split_items("test")
    assert np.array_equal(r.predict(items)[1][0], model.predict(items)[1][0])


def test_load_model_errors_name_the_folder(tmp_path):
    with pytest.raises(AutotransferError, match="not a saved autotransfer model"):
        autotransfer.load_model(tmp_path)


# --- small rules ---


def test_auto_batch_size_and_schedule():
    assert auto_batch_size(100, cached_features=False) == 16
    assert auto_batch_size(10_000, cached_features=False) == 64
    assert auto_batch_size(5, cached_features=False) == 5
    assert auto_batch_size(100, cached_features=True) == 16
    assert auto_batch_size(100_000, cached_features=True) == 256
    assert lr_factor(0.0) == 0.0 and lr_factor(0.1) == pytest.approx(1.0) and lr_factor(1.0) == pytest.approx(0.0)
    assert lr_factor(0.05) == pytest.approx(0.5) and 0 < lr_factor(0.6) < 1


def test_augmentation_rule(digits5, work, news):
    assert auto_augment(digits5, None) is False  # 32 px digits: a random crop would cut strokes off
    big = load(write_digits(work / "digits64", classes=range(2), per_class=10, size=64))
    assert auto_augment(big, None) is True
    assert auto_augment(digits5, True) is True and auto_augment(big, False) is False
    assert auto_augment(news[0], None) is False


def test_bad_inputs_are_one_line_errors(resnet, digits5, news):
    with pytest.raises(AutotransferError, match="--epochs 0 is not allowed; expected a whole number, at least 1"):
        autotransfer.train(digits5, resnet, "full", epochs=0)
    with pytest.raises(AutotransferError, match="takes text input but dataset .* is image"):
        autotransfer.train(digits5, news[1], "full", epochs=1)
    with pytest.raises(AutotransferError, match="unknown strategy 'fulll'; did you mean full"):
        autotransfer.train(digits5, resnet, "fulll", epochs=1)


def test_public_functions_are_plain_functions_after_their_modules_are_imported():
    import types

    import autotransfer._search.runner
    import autotransfer._train  # noqa: F401

    for name in ("train", "search", "load_model"):
        assert isinstance(getattr(autotransfer, name), types.FunctionType), name
        assert name in autotransfer.__all__
    assert autotransfer.train is autotransfer._train.train
    assert autotransfer.search is autotransfer._search.runner.search


# --- the probe solver ---


def test_solve_probe_matches_sklearn_and_picks_l2_on_validation():
    from sklearn.linear_model import LogisticRegression

    from autotransfer import probe
    from autotransfer._train import _Split, solve_probe

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 300))
    y = rng.integers(0, 4, size=260)
    x = centres[y] + rng.normal(scale=3.0, size=(260, 300))  # n < D
    tr, va = slice(0, 60), slice(60, 260)
    split = {k: _Split(torch.as_tensor(y[s, None]), features=torch.as_tensor(x[s], dtype=torch.float32))
             for k, s in (("train", tr), ("val", va))}
    heads = torch.nn.ModuleList([torch.nn.Linear(300, 4)])
    # the same problem in sklearn's terms (C = 1 / (l2 n) for a mean loss), solved independently
    ref = LogisticRegression(C=1.0 / (1e-2 * 60), tol=1e-10, max_iter=5000).fit(x[tr], y[tr])
    xv = torch.as_tensor(x[va], dtype=torch.float32)
    # solved tightly (in float64, as the CPU probe solves: float32 stops ~1e-3 from the optimum of this
    # near-separable problem whatever the tolerance), the torch solver reaches sklearn's solution
    tight = probe.solve_path(torch.as_tensor(x[tr]), split["train"].labels, xv.double(), split["val"].labels,
                             (1e-2,), tol=1e-9, walk_tol=1e-9)
    w, b = tight.weights[0]
    assert np.abs((xv.double() @ w.T + b).softmax(1).numpy() - ref.predict_proba(x[va])).max() < 1e-3
    # at its default tolerance, the answer is the exact solver's: same val accuracy, probabilities close
    accs, l2 = solve_probe(heads, split["train"], split["val"], path=(1e-2,))
    with torch.no_grad():
        ours = heads[0](xv).softmax(1).numpy()
    assert np.abs(ours - ref.predict_proba(x[va])).max() < 5e-3
    assert l2 == 1e-2 and accs[0] == pytest.approx(ref.score(x[va], y[va]))
    # along a path, no point of it does better on validation than the one chosen
    path = (1.0, 1e-1, 1e-2, 1e-3)
    accs, l2 = solve_probe(heads, split["train"], split["val"], path=path)
    assert l2 in path
    for other in path:
        alt = LogisticRegression(C=1.0 / (other * 60), tol=1e-10, max_iter=5000).fit(x[tr], y[tr])
        assert alt.score(x[va], y[va]) <= accs[0] + 1e-9


def test_linear_probe_is_solved_in_one_report_at_the_last_epoch(resnet, digits5, work):
    seen = []
    r = autotransfer.train(digits5, resnet, "linear_probe", epochs=7, cache_dir=work / "cache",
                           report=lambda e, v: seen.append((e, v)))
    assert seen == [(6, r.val_score)] and r.epochs_run == 1 and r.params["probe_l2"] > 0
    again = autotransfer.train(digits5, resnet, "linear_probe", epochs=2, lr=0.5, weight_decay=0.3,
                               cache_dir=work / "cache")
    assert again.val_score == r.val_score  # lr, weight decay and epochs mean nothing to a solved probe


class _Deadline(TrainMonitor):
    """A monitor whose deadline falls after ``after`` checks (a fake clock: no wall time involved)."""

    def __init__(self, after: int):
        self.after, self.checks = after, 0

    def check(self) -> None:
        self.checks += 1
        if self.checks > self.after:
            raise StopTraining("the search's time budget ended")


def test_the_deadline_stops_an_extraction_and_a_probe_inside_train(resnet, digits5, work):
    # extraction: the first batch's check already falls after the deadline; nothing is cached
    monitor = _Deadline(after=0)
    with pytest.raises(StopTraining):
        autotransfer.train(digits5, resnet, "linear_probe", cache_dir=work / "cache-a", monitor=monitor)
    assert monitor.checks == 1 and not any((work / "cache-a").rglob("*.npz"))
    # features cached first, then the solve is stopped: its checks come from the solver's gradients
    autotransfer.train(digits5, resnet, "linear_probe", cache_dir=work / "cache-b")
    monitor = _Deadline(after=3)
    with pytest.raises(StopTraining):
        autotransfer.train(digits5, resnet, "linear_probe", cache_dir=work / "cache-b", monitor=monitor)
    assert monitor.checks == 4
