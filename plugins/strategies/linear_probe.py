"""Linear probe: the backbone stays frozen; one linear head per task trains on cached features.

The backbone runs once per item (``autotransfer.features.extract``, cached on disk and shared
with ranking); every epoch after that is a pass over a (n, D) float32 matrix: seconds, not minutes.
"""

from __future__ import annotations

from typing import Any

from autotransfer import hookimpl
from autotransfer.strategies import Strategy, decay_split, freeze


class LinearProbe(Strategy):
    name = "linear_probe"
    description = "frozen backbone, linear heads trained on cached features (fast baseline)"
    can_use_cached_features = True
    default_lr = 1e-2
    lr_range = (1e-3, 1e-1)
    options: dict[str, Any] = {}

    def param_groups(self, model, *, lr: float, weight_decay: float, **params: Any) -> list[dict[str, Any]]:
        freeze(model.parameters())
        return decay_split(model.heads.named_parameters(), lr, weight_decay, "heads")


@hookimpl
def register_strategies(register):
    register(LinearProbe())
