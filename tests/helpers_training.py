"""Tiny sources and data written to disk for the strategy and training tests.

Random-init timm weights saved as safetensors, a BERT with its own vocabulary saved with
``save_pretrained``, sklearn digits as an image folder, and a test-double source that counts
(or fails) backbone calls.
"""

from __future__ import annotations

import collections
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autotransfer.data.offline import digits_arrays, write_images
from autotransfer.sources import Source


def write_digits(root: Path, classes=range(10), per_class: int = 40, size: int = 32, seed: int = 0) -> Path:
    """``per_class`` sklearn digits of each class as ``root/<digit>/*.png`` upscaled to ``size``."""
    images, y = digits_arrays()
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in classes])
    return write_images(root, images[idx], y[idx], names=[f"{i:04d}" for i in idx], size=size)


def timm_spec(folder: Path, arch: str, size: int = 32, seed: int = 0) -> str:
    """Random-init ``arch`` saved as safetensors; the spec that loads it like user weights."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    kwargs = {"img_size": size} if "vit" in arch else {}
    model = timm.create_model(arch, num_classes=0, **kwargs)
    path = folder / f"{arch}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return f"timm:{arch}@{path}?size={size}"


def make_tiny_bert(folder: Path, texts: list[str], vocab_size: int = 3000, seed: int = 0, hidden: int = 32) -> str:
    """A 2-layer, ``hidden``-wide (32) BERT with a word vocabulary built from ``texts``; returns its ``hf:`` spec."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = collections.Counter(w for t in texts for w in re.findall(r"[a-z]+|[0-9]+|[^\sa-z0-9]", t.lower()))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [w for w, _ in words.most_common(vocab_size - 5)]
    folder.mkdir(parents=True, exist_ok=True)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(folder)
    return f"hf:{folder}?max_length=128"


class Wrapped(Source):
    """A test double around a real source; ``on_forward(batch)`` runs before every backbone call."""

    def __init__(self, inner: Source, on_forward=None):
        self.inner = inner
        self.on_forward = on_forward
        self.calls: list[int] = []  # batch size of every backbone forward
        self.name, self.modality, self.spec = inner.name, inner.modality, inner.spec
        self.architecture = inner.architecture

    @property
    def feature_dim(self) -> int:
        return self.inner.feature_dim

    def identity(self) -> str:
        return self.inner.identity()

    def transform_key(self, train: bool = False) -> str:
        return self.inner.transform_key(train)

    def available(self):
        return self.inner.available()

    def build(self, pretrained: bool = True):
        from autotransfer.model import batch_len

        backbone = self.inner.build(pretrained)
        forward = backbone.forward

        def counted(batch):
            n = batch_len(batch)
            self.calls.append(n)
            if self.on_forward is not None:
                self.on_forward(n)
            return forward(batch)

        backbone.forward = counted  # an instance attribute: nn.Module.__call__ finds it first
        return backbone

    def load_item(self, item: Any, train: bool = False):
        return self.inner.load_item(item, train)

    def collate(self, inputs):
        return self.inner.collate(inputs)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
