"""Numeric precision of forward (and backward) passes: ``auto``, ``bf16``, ``fp16``, ``fp32``.

``auto`` is bf16 on CUDA cards that support it (compute capability >= 8.0), fp16 with a gradient
scaler on older cards, fp32 on CPU. bf16 / fp16 run under ``torch.autocast`` (weights stay fp32);
fp16 training scales the loss (``torch.amp.GradScaler``) so small gradients do not flush to zero.
Asking for bf16 or fp16 on CPU is an error: CPU autocast is slower than fp32 on most CPUs and
changes the numbers, so it is never chosen silently.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from .errors import AutotransferError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def check_precision(precision: str) -> str:
    """``precision`` lower-cased, or a one-line error naming the choices."""
    value = str(precision).strip().lower()
    if value not in PRECISIONS:
        raise AutotransferError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}; "
                                "use --precision auto to pick the fastest the device supports")
    return value


def resolve_precision(precision: str, device: torch.device) -> str:
    """The concrete precision (bf16 / fp16 / fp32) for ``precision`` on ``device``."""
    import torch

    value = check_precision(precision)
    if device.type != "cuda":
        if value in ("bf16", "fp16"):
            raise AutotransferError(f"precision {value!r} needs a CUDA device but this run is on {device}; "
                                    "use --precision fp32 (or auto) on CPU")
        return "fp32"
    if value == "auto":
        return "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp16"
    if value == "bf16" and not torch.cuda.is_bf16_supported():
        raise AutotransferError(f"precision 'bf16' is not supported by {torch.cuda.get_device_name(device)}; "
                                "use --precision fp16 (or auto)")
    return value


def autocast(precision: str, device: torch.device) -> Any:
    """The autocast context for a resolved ``precision`` (a no-op for fp32)."""
    import torch

    if precision == "fp32" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 training, None otherwise."""
    import torch

    return torch.amp.GradScaler("cuda") if precision == "fp16" and device.type == "cuda" else None
