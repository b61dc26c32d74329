"""Example third-party strategy: BitFit — train only the backbone's biases plus the heads.

Ben Zaken, Ravfogel and Goldberg, "BitFit: Simple Parameter-efficient Fine-tuning for
Transformer-based Masked Language-models", ACL 2022. A complete plugin: drop this file in a
folder and run ``autotransfer --plugins-dir FOLDER search ... --strategies bitfit,linear_probe``,
or ship it in a distribution with an ``[project.entry-points.autotransfer]`` line.
It declares one searchable knob, so the search picks it up with no change to the core.
"""

from __future__ import annotations

from typing import Any

from autotransfer import hookimpl
from autotransfer.strategies import ParamSpec, SourceInfo, Strategy, decay_split, freeze


class BitFit(Strategy):
    name = "bitfit"
    description = "train only biases (and norm shifts) of the backbone plus the heads (Ben Zaken et al. 2022)"
    default_lr = 3e-3
    lr_range = (3e-4, 3e-2)
    options = {}

    def search_space(self, info: SourceInfo) -> dict[str, ParamSpec]:
        return {"head_lr_mult": ParamSpec("categorical", choices=(1.0, 10.0), default=10.0,
                                          help="head learning rate as a multiple of the bias lr")}

    def param_groups(self, model, *, lr: float, weight_decay: float, head_lr_mult: float = 10.0,
                     **params: Any) -> list[dict[str, Any]]:
        freeze(model.parameters())
        biases = [(n, p) for n, p in model.backbone.named_parameters() if n.endswith(".bias")]
        groups = decay_split(biases, lr, 0.0, "biases")
        return groups + decay_split(model.heads.named_parameters(), lr * head_lr_mult, weight_decay, "heads")


@hookimpl
def register_strategies(register):
    register(BitFit())
