"""``autotransfer.ensemble``: greedy ensemble selection on validation only, weight-space averages, and
an ensemble exported as one folder that ``predict`` and ``evaluate`` load like any other model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from helpers_models import tiny_image_model
from helpers_training import timm_spec, write_digits
from sklearn import metrics as skm

import autotransfer
from autotransfer.datasets import load
from autotransfer.ensemble import average_models, greedy_ensemble, greedy_soup, save_ensemble, weight_space_average
from autotransfer.errors import AutotransferError
from autotransfer.model import EnsembleModel

SKLEARN = {"accuracy": lambda y, p: skm.accuracy_score(y, p.argmax(1)),
           "balanced_accuracy": lambda y, p: skm.balanced_accuracy_score(y, p.argmax(1)),
           "macro_f1": lambda y, p: skm.f1_score(y, p.argmax(1), average="macro", zero_division=0),
           "log_loss": lambda y, p: -skm.log_loss(y, y_proba=p, labels=range(p.shape[1]))}  # negated: max is best


def _candidates(seed: int, k: int = 6, n: int = 90, classes: int = 3, skill=(0.2, 2.0)):
    """``k`` noisy classifiers of varying skill on the same items: (labels, [probabilities])."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    out = []
    for s in np.linspace(*skill, k):
        logits = rng.normal(size=(n, classes))
        logits[np.arange(n), y] += s
        out.append(np.exp(logits) / np.exp(logits).sum(1, keepdims=True))
    return y, out


def _reference(cands, y, metric, rounds):
    """Caruana's selection written plainly with sklearn: each round adds the candidate that scores best,
    the earliest on a tie; keep the best prefix, the shortest on a tie."""
    score = SKLEARN[metric]
    picks, total, traj = [], np.zeros_like(cands[0]), []
    for _ in range(rounds):
        scores = [score(y, (total + c) / (len(picks) + 1)) for c in cands]
        best = int(np.argmax(scores))  # argmax: the first of equal maxima
        picks.append(best)
        total = total + cands[best]
        traj.append(scores[best])
    keep = int(np.argmax(traj))
    return np.bincount(picks[:keep + 1], minlength=len(cands)), traj[keep]


@pytest.mark.parametrize("metric", ["accuracy", "balanced_accuracy", "macro_f1", "log_loss"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_selection_equals_a_plain_reference_with_sklearn(metric, seed):
    y, cands = _candidates(seed)
    sel = greedy_ensemble(cands, y, metric=metric, max_members=8)
    counts, best = _reference(cands, y, metric, 8)
    assert sel.counts.tolist() == counts.tolist()
    assert sel.score == pytest.approx(-best if metric == "log_loss" else best, abs=1e-12)
    assert sel.counts.sum() <= 8 and sel.weights.sum() == pytest.approx(1.0)
    assert sel.order[0] == int(np.argmax([SKLEARN[metric](y, c) for c in cands]))  # the best single first
    assert [i for i, _ in sel.members()] == list(dict.fromkeys(sel.order))


def _select_on_val_score_on_test(val, test, y_val, y_test, metric="accuracy"):
    """The harness a search runs: selection sees validation only; test scores the chosen mix once."""
    sel = greedy_ensemble(val, y_val, metric=metric, max_members=10)
    mix = sum(w * t for w, t in zip(sel.weights, test, strict=True))
    return sel, skm.accuracy_score(y_test, mix.argmax(1))


def test_a_candidate_perfect_on_test_but_poor_on_validation_is_never_chosen():
    y_val, val = _candidates(3, k=4, skill=(0.8, 2.0))
    y_test, test = _candidates(4, k=4, skill=(0.8, 2.0))
    rng = np.random.default_rng(5)
    planted_val = rng.dirichlet(np.ones(3), len(y_val))  # chance on validation
    planted_test = np.eye(3)[y_test] * 0.98 + 0.01  # perfect on test
    sel, test_acc = _select_on_val_score_on_test(val + [planted_val], test + [planted_test], y_val, y_test)
    assert sel.counts[4] == 0 and 4 not in sel.order
    assert test_acc < 1.0  # what picking by test would have reached instead
    assert skm.accuracy_score(y_test, planted_test.argmax(1)) == 1.0


def test_ties_go_to_the_earlier_candidate_and_to_fewer_members():
    y = np.array([0, 1, 2, 0, 1, 2])
    perfect = np.eye(3)[y] * 0.9 + 0.1 / 3
    sel = greedy_ensemble([perfect * 0.5 + 0.5 / 3, perfect, perfect.copy()], y, max_members=5)
    assert sel.counts.tolist() == [1, 0, 0] and sel.order == [0] and sel.score == 1.0
    assert len(sel.trajectory) == 5  # every round ran; the first pick was already as good as any mix


def test_complementary_members_beat_the_best_single_and_log_loss_is_minimised():
    y = np.repeat([0, 1], 20)
    a = np.where(np.arange(40)[:, None] < 30, np.eye(2)[y] * 0.98 + 0.01, np.eye(2)[1 - y] * 0.98 + 0.01)
    b = np.where(np.arange(40)[:, None] >= 10, np.eye(2)[y] * 0.98 + 0.01, np.eye(2)[1 - y] * 0.98 + 0.01)
    single = min(skm.log_loss(y, y_proba=a), skm.log_loss(y, y_proba=b))
    sel = greedy_ensemble([a, b], y, metric="log_loss", max_members=10)
    assert sel.counts.tolist() == [1, 1] and sel.score < single
    assert sel.score == pytest.approx(skm.log_loss(y, y_proba=(a + b) / 2))


def test_multi_task_candidates_are_scored_per_task_and_averaged():
    y0, c0 = _candidates(6, k=3)
    y1, c1 = _candidates(7, k=3, classes=4)
    labels = np.stack([y0, y1], axis=1)
    sel = greedy_ensemble([[a, b] for a, b in zip(c0, c1, strict=True)], labels, metric="macro_f1", max_members=4)
    w = sel.weights
    mix = [sum(wi * c for wi, c in zip(w, cs, strict=True)) for cs in (c0, c1)]
    assert sel.score == pytest.approx((SKLEARN["macro_f1"](y0, mix[0]) + SKLEARN["macro_f1"](y1, mix[1])) / 2)


def test_selection_inputs_are_checked_in_one_line():
    y, cands = _candidates(0, k=2)
    with pytest.raises(AutotransferError, match="candidate 1's validation probabilities have shape"):
        greedy_ensemble([cands[0], cands[1][:-1]], y)
    with pytest.raises(AutotransferError, match="max_members=0"):
        greedy_ensemble(cands, y, max_members=0)
    with pytest.raises(AutotransferError, match="unknown metric 'auc'"):
        greedy_ensemble(cands, y, metric="auc")


def test_weight_space_average_averages_floats_and_refuses_other_architectures():
    import torch

    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)) for _ in range(3)]
    for i, n in enumerate(nets):
        n[1].num_batches_tracked.fill_(10 * (i + 1))
    sds = [n.state_dict() for n in nets]
    avg = weight_space_average(sds, [2, 1, 1])
    for key in sds[0]:
        if sds[0][key].is_floating_point():
            by_hand = (2 * sds[0][key].double() + sds[1][key].double() + sds[2][key].double()) / 4
            assert torch.allclose(avg[key].double(), by_hand, atol=1e-7) and avg[key].dtype == sds[0][key].dtype
    assert int(avg["1.num_batches_tracked"]) == 10  # not a float: the first member's
    other = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5)).state_dict()
    with pytest.raises(AutotransferError) as e:
        weight_space_average([sds[0], other], [1, 1])
    assert "\n" not in str(e.value) and "'0.weight' is (5, 4)" in str(e.value) and "one architecture" in str(e.value)
    fewer = {k: v for k, v in sds[1].items() if k != "0.bias"}
    with pytest.raises(AutotransferError, match="other keys than state dict 0"):
        weight_space_average([sds[0], fewer], [1, 1])
    with pytest.raises(AutotransferError, match="non-negative numbers with a positive sum"):
        weight_space_average(sds[:2], [0, 0])


def test_greedy_soup_keeps_only_ingredients_that_help_on_validation():
    import torch

    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(200, 5)), dtype=torch.float32)
    true = torch.tensor(rng.normal(size=(5, 2)), dtype=torch.float32)
    y = (x @ true).argmax(1).numpy()
    noisy = [{"w": true + 0.8 * torch.tensor(rng.normal(size=(5, 2)), dtype=torch.float32)} for _ in range(4)]
    bad = {"w": -true}  # opposite: averaging it in cancels the others

    def val_acc(sd):
        return float(((x @ sd["w"]).argmax(1).numpy() == y).mean())

    sds = noisy + [bad]
    scores = [val_acc(sd) for sd in sds]
    soup, best = greedy_soup(sds, scores, val_acc)
    assert 4 not in soup and soup[0] == int(np.argmax(scores))
    assert best >= max(scores) and best == val_acc(weight_space_average([sds[i] for i in soup], [1] * len(soup)))


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Three tiny exported image models of digits 0–2 (test_resnet linear probes from three random inits)."""
    work = tmp_path_factory.mktemp("ensemble")
    first, data = tiny_image_model(work, per_class=15, epochs=2)
    folders = [first]
    for seed in (1, 2):
        src = work / f"source{seed}"
        src.mkdir()
        r = autotransfer.train(load(data), timm_spec(src, "test_resnet", size=16, seed=seed), "linear_probe",
                               epochs=1, seed=seed, device="cpu")
        folders.append(r.save(work / f"member{seed}"))
    return folders, data


def _bare_env(home):
    """HOME and every cache location pointed at an empty folder (read by torch and huggingface_hub when
    imported, so commands given it run through ``cli_subprocess``)."""
    home.mkdir(parents=True, exist_ok=True)
    return {"HOME": str(home), "AUTOTRANSFER_CACHE_DIR": str(home / "at-cache"), "XDG_CACHE_HOME": str(home / ".c"),
            "HF_HOME": str(home / "hf"), "HF_HUB_CACHE": str(home / "hf" / "hub"), "TORCH_HOME": str(home / "t"),
            "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow  # two fresh processes
def test_an_ensemble_folder_moves_and_predicts_the_weighted_average_through_the_cli(cli_subprocess, members, tmp_path):
    folders, data = members
    single = autotransfer.load_model(folders[0])
    weights = [3, 2, 1]
    # members given as folders and as a loaded model alike
    out = save_ensemble([folders[0], folders[1], autotransfer.load_model(folders[2])], weights,
                        tmp_path / "run" / "best", extra={"metric": "accuracy"})
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["format"] == "autotransfer-ensemble" and cfg["metric"] == "accuracy"
    assert [m["path"] for m in cfg["members"]] == ["members/0", "members/1", "members/2"]
    assert [m["weight"] for m in cfg["members"]] == pytest.approx([0.5, 1 / 3, 1 / 6])
    assert cfg["single_parameters"] == single.param_counts()[1] and cfg["inference_cost"] == pytest.approx(3.0)
    assert str(tmp_path) not in (out / "config.json").read_text()

    moved = tmp_path / "elsewhere" / "best"
    shutil.copytree(out, moved)
    shutil.rmtree(tmp_path / "run")
    items = sorted(str(p) for p in data.rglob("*.png"))
    by_hand = sum(w / 6 * autotransfer.load_model(f).predict(items)[1][0].astype(np.float64)
                  for w, f in zip(weights, folders, strict=True))
    env = _bare_env(tmp_path / "empty-home")
    res = cli_subprocess("predict", "--model", str(moved), "--data", str(data), "--out", str(tmp_path / "p.csv"), env=env)
    assert res.code == 0, res.err
    df = pd.read_csv(tmp_path / "p.csv", dtype={"prediction": str})
    classes = single.tasks[0].classes
    row = {str(data / name): i for i, name in enumerate(df["item"])}
    assert sorted(row) == items
    order = [row[it] for it in items]
    got = df[[f"p[{c}]" for c in classes]].to_numpy(np.float64)[order]
    assert np.allclose(got, by_hand, atol=1e-5, rtol=0)
    assert [classes.index(c) for c in df["prediction"].to_numpy()[order]] == by_hand.argmax(1).tolist()
    # the three members disagree somewhere, so the average is not any one of them
    assert not np.allclose(by_hand, autotransfer.load_model(folders[0]).predict(items)[1][0], atol=1e-3)

    ev = cli_subprocess("evaluate", "--model", str(moved), "--data", str(data), "--json", "--out", str(tmp_path / "c.csv"),
             env=env)
    assert ev.code == 0, ev.err
    [task] = json.loads(ev.out)["tasks"]
    ds = load(data, split="1,0,0")
    y = np.array([classes.index(ds.tasks[0].classes[k]) for k in ds.labels[:, 0]])
    hand = dict(zip(items, by_hand.argmax(1), strict=True))
    pred = np.array([hand[str(it)] for it in ds.items])
    assert task["n"] == 45 and task["accuracy"] == pytest.approx((pred == y).mean())
    assert task["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))


def test_load_model_returns_an_ensemble_with_the_model_interface(members, tmp_path):
    folders, data = members
    out = save_ensemble(folders[:2], [1, 1], tmp_path / "best")
    ens = autotransfer.load_model(out)
    assert isinstance(ens, EnsembleModel) and ens.modality == "image"
    assert [t.classes for t in ens.tasks] == [["0", "1", "2"]]
    items = sorted(str(p) for p in (data / "1").iterdir())[:5]
    a, b = (autotransfer.load_model(f).predict(items)[1][0] for f in folders[:2])
    pred, probs = ens.predict(items)
    assert np.allclose(probs[0], (a + b) / 2, atol=1e-6) and pred[:, 0].tolist() == ((a + b) / 2).argmax(1).tolist()
    names = ens.predict_names(items)
    assert names == [[ens.tasks[0].classes[k]] for k in pred[:, 0]]
    rows_pred, rows_probs, errors = ens.predict_rows(items + [str(tmp_path / "missing.png")])
    assert errors[:5] == [None] * 5 and errors[5] and rows_pred[5, 0] == -1 and np.isnan(rows_probs[0][5]).all()
    assert np.allclose(rows_probs[0][:5], probs[0], atol=1e-6)
    assert ens.param_counts()[1] == 2 * autotransfer.load_model(folders[0]).param_counts()[1]


def test_ensemble_mistakes_are_one_line(cli, members, tmp_path):
    folders, data = members
    two = write_digits(tmp_path / "two", classes=range(2), per_class=6, size=16)
    other = autotransfer.train(load(two), timm_spec(tmp_path, "test_resnet", size=16), "linear_probe", epochs=1,
                               device="cpu").save(tmp_path / "other")
    with pytest.raises(AutotransferError) as e:
        save_ensemble([folders[0], other], [1, 1], tmp_path / "mixed")
    assert "\n" not in str(e.value) and "same tasks and classes" in str(e.value)
    assert not (tmp_path / "mixed").exists() and not list(tmp_path.glob(".mixed.partial-*"))
    with pytest.raises(AutotransferError, match="one weight per member"):
        save_ensemble(folders, [1, 1], tmp_path / "x")
    with pytest.raises(AutotransferError, match="expected positive numbers"):
        save_ensemble(folders[:2], [1, 0], tmp_path / "x")
    with pytest.raises(AutotransferError, match="not a saved autotransfer model"):
        save_ensemble([folders[0], data], [1, 1], tmp_path / "x")
    good = save_ensemble(folders[:2], [1, 1], tmp_path / "good")
    with pytest.raises(AutotransferError, match="already exists and is not empty"):
        save_ensemble(folders[:2], [1, 1], good)
    with pytest.raises(AutotransferError, match="an ensemble cannot hold another ensemble"):
        save_ensemble([good, folders[0]], [1, 1], tmp_path / "nested")
    cfg = json.loads((good / "config.json").read_text())
    cfg["members"][1]["path"] = "../member1"
    (good / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(AutotransferError) as e:
        autotransfer.load_model(good)
    assert "\n" not in str(e.value) and "outside the ensemble's folder" in str(e.value)
    cfg["members"][1]["path"] = "members/1"
    (good / "config.json").write_text(json.dumps(cfg))
    assert autotransfer.load_model(good).weights.tolist() == [0.5, 0.5]
    shutil.rmtree(good / "members" / "1")
    r = cli("predict", "--model", str(good), "--data", str(data / "0"), "--out", str(tmp_path / "p.csv"))
    assert r.code == 2 and len(r.err_lines) == 1 and "Traceback" not in r.err
    assert "names member 'members/1', which is missing" in r.err and not (tmp_path / "p.csv").exists()


def test_a_soup_of_one_architecture_saves_and_loads_as_one_model(members, tmp_path):
    import torch

    folders, data = members
    a, b = (autotransfer.load_model(f) for f in folders[:2])
    soup = average_models([a, b], [3, 1])
    for key, t in soup.state_dict().items():
        if t.is_floating_point():
            assert torch.allclose(t, (3 * a.state_dict()[key] + b.state_dict()[key]) / 4, atol=1e-6), key
    assert soup.param_counts() == a.param_counts() and soup.config["soup"] == {"members": 2, "weights": [0.75, 0.25]}
    assert a.source is not None and soup.source is a.source  # the first model is left as it was
    items = sorted(str(p) for p in (data / "2").iterdir())[:6]
    _, probs = soup.predict(items)
    saved = autotransfer.load_model(soup.save(tmp_path / "soup"))
    assert np.allclose(saved.predict(items)[1][0], probs[0], atol=1e-6)
    assert not np.allclose(probs[0], a.predict(items)[1][0], atol=1e-3)


def test_exporting_an_ensemble_to_a_one_network_format_is_one_line_naming_a_member(members, tmp_path):
    from autotransfer.export_formats import export_model

    folders, _ = members
    out = save_ensemble(folders[:2], [2, 1], tmp_path / "best")
    for fmt in ("timm", "onnx"):
        with pytest.raises(AutotransferError) as err:
            export_model(out, fmt, tmp_path / f"exported-{fmt}")
        msg = str(err.value)
        assert "\n" not in msg and "ensemble of 2 models" in msg and str(out / "members" / "0") in msg
        assert not (tmp_path / f"exported-{fmt}").exists()
