"""Partial fine-tuning: the last ``depth`` backbone layer groups and the heads train; the rest is frozen.

Frozen groups keep their BatchNorm running statistics too (``TransferModel.train`` keeps norm
layers whose parameters are all frozen in eval mode), so "frozen" means bit-for-bit unchanged.
Yosinski et al., "How transferable are features in deep neural networks?", NeurIPS 2014.
"""

from __future__ import annotations

from typing import Any

from autotransfer import hookimpl
from autotransfer.strategies import (
    ParamSpec,
    SourceInfo,
    Strategy,
    StrategyNotApplicable,
    decay_split,
    freeze,
    group_params,
)


class Partial(Strategy):
    name = "partial"
    description = "unfreeze the last `depth` layer groups plus the heads (Yosinski et al. 2014)"
    default_lr = 1e-3
    lr_range = (1e-4, 1e-2)
    options = {"head_lr_mult": 10.0}  # the fresh heads learn faster than pretrained layers

    def search_space(self, info: SourceInfo) -> dict[str, ParamSpec]:
        top = max(1, info.n_groups - 1)
        return {"depth": ParamSpec("int", 1, top, default=min(top, max(1, info.n_groups // 2)),
                                   help=f"layer groups unfrozen from the output side (of {info.n_groups})")}

    def check(self, info: SourceInfo) -> None:
        if info.n_groups < 2:
            raise StrategyNotApplicable(
                f"strategy 'partial' needs a source with at least 2 layer groups; {info.name!r} has {info.n_groups}"
            )

    def param_groups(self, model, *, lr: float, weight_decay: float, depth: int, head_lr_mult: float = 10.0,
                     **params: Any) -> list[dict[str, Any]]:
        n = len(model.backbone_groups)
        freeze(model.parameters())
        groups = decay_split(group_params(model, range(n - depth, n)), lr, weight_decay, "body")
        return groups + decay_split(model.heads.named_parameters(), lr * head_lr_mult, weight_decay, "heads")


@hookimpl
def register_strategies(register):
    register(Partial())
