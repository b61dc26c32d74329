"""LoRA: low-rank adapters on the attention projections of transformer sources (``peft``).

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022. The backbone stays
frozen; ``W x`` becomes ``W x + (alpha / r) B A x`` for every ``nn.Linear`` inside an attention
block (timm ViT ``attn.qkv``/``attn.proj``, HF ``query``/``key``/``value``/``attention.output.dense``),
found structurally by ``autotransfer.strategies.attention_linears``. Sources without attention
blocks (CNNs) raise ``StrategyNotApplicable``. ``peft`` is the optional extra ``autotransfer[lora]``.
"""

from __future__ import annotations

from typing import Any

from autotransfer import hookimpl
from autotransfer.errors import AutotransferError
from autotransfer.strategies import (
    ParamSpec,
    SourceInfo,
    Strategy,
    StrategyNotApplicable,
    attention_linears,
    decay_split,
    freeze,
)


def _peft():
    try:
        import peft
    except ImportError:
        raise AutotransferError(
            "strategy 'lora' needs the 'peft' package, which is not installed; "
            "install it with pip install 'autotransfer[lora]'"
        ) from None
    return peft


class Lora(Strategy):
    name = "lora"
    description = "low-rank adapters on attention layers of transformer sources (Hu et al. 2022; needs peft)"
    default_lr = 2e-3
    lr_range = (1e-4, 1e-2)
    # lora_alpha None: 2 * lora_rank (the common scale alpha / r = 2)
    options = {"lora_alpha": None, "lora_dropout": 0.0, "head_lr_mult": 5.0}

    def search_space(self, info: SourceInfo) -> dict[str, ParamSpec]:
        return {"lora_rank": ParamSpec("categorical", choices=(4, 8, 16), default=8, help="adapter rank r")}

    def check(self, info: SourceInfo) -> None:
        if not info.lora_targets:
            raise StrategyNotApplicable(
                f"strategy 'lora' needs a transformer source (linear layers inside attention blocks); "
                f"{info.name!r} has none (e.g. a CNN), so it is skipped — use 'partial' or 'full' for it"
            )

    def prepare_model(self, model, params: dict[str, Any]) -> None:
        peft = _peft()
        targets = attention_linears(model.backbone)
        if not targets:
            raise StrategyNotApplicable("strategy 'lora' found no linear layers inside attention blocks")
        rank = int(params.get("lora_rank") or 8)
        cfg = peft.LoraConfig(
            r=rank,
            lora_alpha=params.get("lora_alpha") or 2 * rank,
            lora_dropout=float(params.get("lora_dropout") or 0.0),
            target_modules=targets,  # exact module names: no accidental match on same-named layers elsewhere
        )
        peft.inject_adapter_in_model(cfg, model.backbone)

    def param_groups(self, model, *, lr: float, weight_decay: float, head_lr_mult: float = 5.0,
                     **params: Any) -> list[dict[str, Any]]:
        freeze(model.parameters())
        adapters = [(n, p) for n, p in model.backbone.named_parameters() if ".lora_" in n]
        if not adapters:
            raise AutotransferError("strategy 'lora': the model has no adapters; prepare_model was not called")
        return (decay_split(adapters, lr, weight_decay, "lora")
                + decay_split(model.heads.named_parameters(), lr * head_lr_mult, weight_decay, "heads"))


@hookimpl
def register_strategies(register):
    register(Lora())
