"""Linear probe: the backbone stays frozen; one linear head per task, solved on cached features.

The backbone runs once per item (``autotransfer.features.extract``, cached on disk and shared
with ranking). The heads are then a multinomial logistic regression on the standardised
features, solved to convergence by full-batch L-BFGS along an L2 path whose strength is chosen
on validation (``autotransfer._train.solve_probe``): a second or two, and no lr or epochs to get
wrong. A few dozen SGD steps on 100 images, what an epoch budget gives, stop far short of it.
"""

from __future__ import annotations

from typing import Any

from autotransfer import hookimpl
from autotransfer.strategies import Strategy, decay_split, freeze


class LinearProbe(Strategy):
    name = "linear_probe"
    description = "frozen backbone, logistic-regression heads solved on cached features (L2 chosen on val)"
    can_use_cached_features = True
    converges = True
    default_lr = 1e-2
    lr_range = (1e-3, 1e-1)
    options: dict[str, Any] = {}

    def param_groups(self, model, *, lr: float, weight_decay: float, **params: Any) -> list[dict[str, Any]]:
        freeze(model.parameters())
        return decay_split(model.heads.named_parameters(), lr, weight_decay, "heads")


@hookimpl
def register_strategies(register):
    register(LinearProbe())
