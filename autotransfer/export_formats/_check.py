"""What every format shares: the items the round-trip check predicts, the comparison, plain weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import AutotransferError

N_SYNTHETIC = 6


def synthetic_items(model: Any, n: int = N_SYNTHETIC, seed: int = 0) -> list[Any]:
    """``n`` inputs the model's source reads: random-pixel PIL images of several shapes (so resize and
    crop are exercised), or texts of words from its tokenizer, one longer than its truncation length."""
    rng = np.random.default_rng(seed)
    if model.modality == "image":
        from PIL import Image

        # the source's input size (a source that does not say: timm's default, 224)
        _, h, w = (getattr(model.source, "data_config", None) or {}).get("input_size", (3, 224, 224))
        shapes = [(h, w), (2 * h + 3, w + 5), (h + 7, 3 * w), (h // 2 + 1, w // 2 + 1)]
        return [Image.fromarray(rng.integers(0, 256, (*shapes[i % len(shapes)], 3), dtype=np.uint8))
                for i in range(n)]
    tok = model.source.tokenizer
    # word pieces without their word-start marks (sentencepiece "▁", byte-level BPE "Ġ")
    stripped = (w.lstrip("▁Ġ") for w in tok.get_vocab())
    words = sorted({w for w in stripped if w.isalpha() and w.isascii()})
    if not words:
        raise AutotransferError("cannot build check texts: the tokenizer's vocabulary has no plain words; "
                                "pass --data with a few real items")
    lengths = [3, 12, 40, int(getattr(model.source, "max_length", 64)) + 20]
    return [" ".join(rng.choice(words, lengths[i % len(lengths)])) for i in range(n)]


def softmax(logits: Any) -> np.ndarray:
    x = np.asarray(logits, np.float64)
    x = np.exp(x - x.max(axis=1, keepdims=True))
    return (x / x.sum(axis=1, keepdims=True)).astype(np.float32)


def compare(reference: Sequence[np.ndarray], got: Sequence[np.ndarray], tol: float, what: str, real: bool,
            hint: str = "") -> float:
    """Largest abs probability difference; raises one line when it exceeds ``tol`` or a clear top class changes.

    A class counts as clear when autotransfer's top two probabilities are more than ``2 * tol`` apart:
    a near tie may flip by rounding alone, and the probability bound already covers it.
    """
    items = "given items" if real else "synthetic inputs"
    if len(got) != len(reference) or any(g.shape != r.shape for g, r in zip(got, reference, strict=False)):
        shapes = [tuple(g.shape) for g in got]
        raise AutotransferError(f"{what} outputs {shapes}, not autotransfer's {[tuple(r.shape) for r in reference]}"
                                " on the same items; nothing was written")
    diff = max(float(np.abs(np.asarray(g, np.float64) - r).max()) for g, r in zip(got, reference, strict=True))
    flipped = 0
    for g, r in zip(got, reference, strict=True):
        top2 = np.sort(r, axis=1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) > 2 * tol
        flipped += int(((g.argmax(axis=1) != r.argmax(axis=1)) & clear).sum())
    if not np.isfinite(diff) or diff > tol or flipped:
        raise AutotransferError(
            f"{what} does not reproduce autotransfer's predictions: probabilities differ by up to {diff:.3g} "
            f"(tolerance {tol:g}) and {flipped} predicted class(es) change on {len(reference[0])} {items}; "
            f"nothing was written{hint}")
    return diff


def merged_backbone_state(model: Any) -> dict[str, Any]:
    """The backbone's tensors under their plain names (``backbone.`` and the wrapper's ``model.`` cut off),
    with any LoRA adapters merged into the weights they adapt."""
    for module in model.backbone.modules():
        if hasattr(module, "base_layer") and callable(getattr(module, "merge", None)):
            module.merge()  # peft: base weight += scale * B @ A; the adapters then sit idle
    out = {}
    for name, tensor in model.backbone.state_dict().items():
        if ".lora_" in name:
            continue
        name = name.replace(".base_layer.", ".")
        out[name[len("model."):] if name.startswith("model.") else name] = tensor
    return out
