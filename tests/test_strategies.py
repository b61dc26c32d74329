"""Every built-in strategy on a tiny CNN, a tiny ViT and a tiny BERT: exactly the right parameters train."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from helpers_training import Wrapped, make_tiny_bert, snapshot, timm_spec

import autotransfer
from autotransfer import AutotransferError
from autotransfer.data.offline import write_bbc_folder
from autotransfer.datasets import load
from autotransfer.sources import resolve_source
from autotransfer.strategies import ParamSpec, StrategyNotApplicable, attention_linears, get_strategy, source_info

STRATEGIES = ("linear_probe", "partial", "full", "lp_ft", "lora")

pytestmark = pytest.mark.usefixtures("one_thread")


# --- fixtures ---


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("strategies")


@pytest.fixture(scope="module")
def bbc(work):
    return load(write_bbc_folder(work / "bbc", per_class=20))


@pytest.fixture(scope="module")
def sources(work, bbc) -> dict[str, str]:
    return {
        "resnet": timm_spec(work, "test_resnet"),
        "vit": timm_spec(work, "test_vit"),
        "bert": make_tiny_bert(work / "bert", bbc.items),
    }


def _data(name, digits5, bbc):
    return bbc if name == "bert" else digits5


# --- the registry and the declared spaces ---


def test_every_builtin_strategy_is_registered_through_entry_points():
    from autotransfer.plugins import get_plugin_manager

    pm = get_plugin_manager()
    reg = pm.registry("strategies")
    for name in STRATEGIES:
        strat = reg.get(name)
        assert strat.name == name
        assert reg.provider_of(name).distribution == "autotransfer"
        assert pm.infos[name].registered["strategies"] == [name]
        row = strat.describe()
        assert row["name"] == name and row["description"] and row["default_lr"] > 0
    assert reg.get("linear_probe").can_use_cached_features
    assert not reg.get("full").can_use_cached_features


def test_search_spaces_are_data_derived_from_the_source(sources):
    resnet, vit, bert = (source_info(resolve_source(sources[k])) for k in ("resnet", "vit", "bert"))
    assert resnet.n_groups >= 3 and not resnet.lora_targets
    assert vit.lora_targets and all(t.endswith(("attn.qkv", "attn.proj")) for t in vit.lora_targets)
    assert {t.rsplit(".", 1)[-1] for t in bert.lora_targets} == {"query", "key", "value", "dense"}

    for info in (resnet, vit, bert):
        depth = get_strategy("partial").search_space(info)["depth"]
        assert (depth.kind, depth.low, depth.high) == ("int", 1, info.n_groups - 1)
        assert depth.low <= depth.default <= depth.high
    assert get_strategy("linear_probe").search_space(resnet) == {}
    decay = get_strategy("full").search_space(resnet)["lr_decay"]
    assert (decay.kind, decay.low, decay.high, decay.default) == ("float", 0.5, 1.0, 1.0)
    assert get_strategy("lora").search_space(vit)["lora_rank"].choices == (4, 8, 16)
    for name in STRATEGIES:
        strat = get_strategy(name)
        lr = strat.lr_spec()
        assert lr.log and lr.low < strat.default_lr < lr.high
        for spec in strat.search_space(vit).values():
            assert ParamSpec(**{**spec.to_dict(), "choices": tuple(spec.choices)}) == spec


def test_param_validation_names_the_bad_value(sources, digits5):
    info = source_info(resolve_source(sources["resnet"]))
    with pytest.raises(AutotransferError, match=r"depth=99 is outside \[1, \d+\]"):
        get_strategy("partial").resolve_params(info, {"depth": 99})
    with pytest.raises(AutotransferError, match="does not take depth"):
        autotransfer.train(digits5, sources["resnet"], "full", depth=1, epochs=1)
    with pytest.raises(AutotransferError, match="does not take bogus .*accepts: head_lr_mult, lr_decay"):
        autotransfer.train(digits5, sources["resnet"], "full", bogus=3, epochs=1)
    with pytest.raises(ValueError):
        ParamSpec("int", 5, 1)


def test_lora_is_not_applicable_to_a_cnn(sources, digits5):
    with pytest.raises(StrategyNotApplicable, match="'lora' needs a transformer source") as err:
        autotransfer.train(digits5, sources["resnet"], "lora", epochs=1)
    assert isinstance(err.value, AutotransferError) and "\n" not in str(err.value)
    assert attention_linears(resolve_source(sources["resnet"]).build(False)) == []


def test_lora_without_peft_says_what_to_install(sources, digits5, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft -> ImportError
    with pytest.raises(AutotransferError, match=r"pip install 'autotransfer\[lora\]'"):
        autotransfer.train(digits5, sources["vit"], "lora", epochs=1)


# --- what trains, what stays frozen ---


def _expected_trainable(strategy: str, backbone, params: dict, n_heads_params: int) -> int:
    sizes = [sum(dict(backbone.named_parameters())[n].numel() for n in g) for g in backbone.layer_groups()]
    if strategy == "linear_probe":
        return n_heads_params
    if strategy == "partial":
        return sum(sizes[-params["depth"]:]) + n_heads_params
    if strategy in ("full", "lp_ft"):
        return sum(sizes) + n_heads_params
    rank = params["lora_rank"]
    mods = dict(backbone.named_modules())
    adapters = sum(rank * (mods[t].in_features + mods[t].out_features) for t in attention_linears(backbone))
    return adapters + n_heads_params


def _used_params(backbone, source, items) -> set[str]:
    """Backbone parameters that get a non-zero gradient (BERT's pooler does not: mean pooling skips it)."""
    backbone.train()
    backbone(source.collate([source.load_item(it) for it in items[:8]])).square().sum().backward()
    return {n for n, p in backbone.named_parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)}


CASES = [(src, strat) for src in ("resnet", "vit", "bert") for strat in STRATEGIES
         if (src, strat) != ("resnet", "lora")]  # LoRA on a CNN: test_lora_is_not_applicable_to_a_cnn


@pytest.mark.parametrize("src_name,strategy", CASES, ids=[f"{s}-{t}" for s, t in CASES])
def test_exactly_the_strategy_parameters_train(src_name, strategy, sources, digits5, bbc, work):
    ds = _data(src_name, digits5, bbc)
    source = resolve_source(sources[src_name])
    before = source.build(pretrained=True)
    init = snapshot(before)
    params = {"depth": 2} if strategy == "partial" else {"lora_rank": 4} if strategy == "lora" else {}
    r = autotransfer.train(ds, source, strategy, epochs=1, cache_dir=work / "cache", evaluate_test=False, **params)

    n_classes = ds.tasks[0].num_classes
    heads = source.feature_dim * n_classes + n_classes
    assert r.trainable_params == _expected_trainable(strategy, before, r.params, heads)
    assert r.total_params == sum(p.numel() for p in r.model.parameters())
    assert [h.out_features for h in r.model.heads] == [n_classes]
    assert r.epochs_run == 1 and len(r.val_curve) == 1 and r.val_score == r.val_curve[0]

    # the backbone, by the original parameter names (LoRA's wrapper renames x.weight to x.base_layer.weight)
    after = {k.replace(".base_layer.", "."): v for k, v in r.model.backbone.state_dict().items() if ".lora_" not in k}
    assert set(after) == set(init)
    groups = before.layer_groups()
    trainable = {"partial": {n for g in groups[-2:] for n in g}, "full": {n for g in groups for n in g},
                 "lp_ft": {n for g in groups for n in g}}.get(strategy, set())
    used = _used_params(source.build(pretrained=True), source, ds.split_items("train"))
    param_names = {n for n, _ in before.named_parameters()}
    for name, value in init.items():
        if name in param_names:
            if name in trainable and name in used:
                assert not torch.equal(after[name], value), f"{name} should have trained"
            elif name not in trainable:
                assert torch.equal(after[name], value), f"frozen {name} changed"
        elif strategy == "lp_ft" or not any(p.startswith(name.rsplit(".", 1)[0] + ".") for p in trainable):
            # LP-FT keeps every running statistic: its probe was solved on features computed with them
            assert torch.equal(after[name], value), f"buffer {name} (BatchNorm statistics) changed"
    if strategy in ("partial", "full") and src_name == "resnet":  # trained groups' BatchNorm statistics move
        moved = [n for n in init if n.endswith("running_mean") and n.rsplit(".", 1)[0] + ".weight" in trainable]
        assert moved and all(not torch.equal(after[n], init[n]) for n in moved)
    if strategy == "lora":
        adapters = {k: v for k, v in r.model.backbone.named_parameters() if ".lora_B." in k}
        assert adapters and all(v.abs().sum() > 0 for v in adapters.values())  # B starts at zero


def test_frozen_norm_layers_stay_in_eval_mode(sources, digits5):
    from autotransfer.model import TransferModel

    source = resolve_source(sources["resnet"])
    model = TransferModel(source.build(True), source.feature_dim, digits5.tasks, source=source)
    get_strategy("partial").param_groups(model, lr=1e-3, weight_decay=0.0, depth=1)
    model.train()
    bns = {n: m for n, m in model.backbone.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    last = {n.rsplit(".", 1)[0] for n in model.backbone_groups[-1]}
    assert any(m.training for n, m in bns.items() if n in last)
    assert all(not m.training for n, m in bns.items() if n not in last)
    model.eval()
    assert not any(m.training for m in bns.values())


def test_linear_probe_never_runs_the_backbone_once_features_are_cached(sources, digits5, work):
    cache = work / "probe-cache"
    first = Wrapped(resolve_source(sources["resnet"]))
    r1 = autotransfer.train(digits5, first, "linear_probe", epochs=3, cache_dir=cache)
    n = {s: len(digits5.splits[s]) for s in ("train", "val", "test")}
    assert sum(first.calls) == sum(n.values())  # one extraction pass per split, nothing per epoch
    assert r1.features_from_cache is False

    second = Wrapped(resolve_source(sources["resnet"]))
    r2 = autotransfer.train(digits5, second, "linear_probe", epochs=3, cache_dir=cache)
    assert second.calls == []  # training, validation and the test score all ran on cached features
    assert r2.features_from_cache is True
    assert r2.val_curve == r1.val_curve and r2.test_score == r1.test_score
    assert r2.val_score > 0.5  # 5 classes: the probe learned something from random conv features


def test_scratch_recipe_trains_like_full_at_its_defaults(sources, digits5):
    """The core's scratch recipe is ``full``'s numbers at its defaults: same lr, same parameter groups."""
    from autotransfer.model import TransferModel
    from autotransfer.strategies import SCRATCH_RECIPE

    full = get_strategy("full")
    assert get_strategy("scratch") is SCRATCH_RECIPE and SCRATCH_RECIPE.default_lr == full.default_lr
    assert SCRATCH_RECIPE.stages({})[0].cached_features is False
    source = resolve_source(sources["resnet"])
    model = TransferModel(source.build(False), source.feature_dim, digits5.tasks, source=source)
    ours = SCRATCH_RECIPE.param_groups(model, lr=1e-3, weight_decay=0.01, **SCRATCH_RECIPE.options)
    theirs = full.param_groups(model, lr=1e-3, weight_decay=0.01, lr_decay=1.0, **full.options)
    assert [(g["name"], g["lr"], g["weight_decay"], [id(p) for p in g["params"]]) for g in ours] == \
        [(g["name"], g["lr"], g["weight_decay"], [id(p) for p in g["params"]]) for g in theirs]
