"""Full fine-tuning: every parameter trains, optionally with layer-wise learning-rate decay.

With ``lr_decay`` < 1 layer group i (of n, 0 = input side) gets ``lr * lr_decay ** (n - 1 - i)``:
early, generic layers move less than late ones (Howard & Ruder 2018; Clark et al. 2020).
The search's scratch baseline does not use this plugin: it is the core's own recipe
(``strategies.SCRATCH_RECIPE``, the same numbers), so the search works with this plugin disabled.
"""

from __future__ import annotations

from typing import Any

from autotransfer import hookimpl
from autotransfer.strategies import ParamSpec, SourceInfo, Strategy, layerwise_groups


class Full(Strategy):
    name = "full"
    description = "every parameter trains; optional layer-wise lr decay"
    default_lr = 5e-4
    lr_range = (1e-5, 3e-3)
    options = {"head_lr_mult": 10.0}

    def search_space(self, info: SourceInfo) -> dict[str, ParamSpec]:
        return {"lr_decay": ParamSpec("float", 0.5, 1.0, default=1.0,
                                      help="lr multiplier per layer group, from the output side")}

    def param_groups(self, model, *, lr: float, weight_decay: float, lr_decay: float = 1.0,
                     head_lr_mult: float = 10.0, **params: Any) -> list[dict[str, Any]]:
        return layerwise_groups(model, lr, weight_decay, lr_decay, lr * head_lr_mult)


@hookimpl
def register_strategies(register):
    register(Full())
