"""Tiny models saved to disk the way a user's weights would be, plus checks on layer groups."""

from __future__ import annotations

import socket
from pathlib import Path

WORDS = ("the a an of to and in on is was for with cat dog sat mat news sport film market "
         "government election team match goal music movie actor bank shares profit phone computer").split()


def save_timm(arch: str, path: Path, num_classes: int = 5, seed: int = 0, **kwargs) -> dict:
    """A randomly initialised timm model's state dict, saved to ``path`` (.safetensors or torch)."""
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model(arch, num_classes=num_classes, **kwargs)
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save(sd, str(path))
    return sd


def save_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """A 2-layer, 32-wide BERT with a small vocabulary, saved with save_pretrained."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tok = BertTokenizer(vocab=str(vocab))
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def check_groups(module) -> list[list[str]]:
    """Assert ``module.layer_groups()`` is ordered, disjoint and covers every parameter; return it."""
    groups = module.layer_groups()
    names = [n for n, _ in module.named_parameters()]
    flat = [n for g in groups for n in g]
    assert len(groups) >= 3, groups
    assert all(groups), "empty group"
    assert len(flat) == len(set(flat)), "groups overlap"
    assert set(flat) == set(names), f"not covered: {set(names) - set(flat)}; unknown: {set(flat) - set(names)}"
    # input -> output: each group starts after the previous one in definition (= forward) order
    first = [min(names.index(n) for n in g) for g in groups]
    assert first == sorted(first), first
    return groups


def block_network(monkeypatch) -> list:
    """Make every socket connection fail loudly; returns the list of attempted addresses."""
    attempts: list = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise AssertionError(f"network access attempted: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


class Payload:
    """An arbitrary Python object: a pickle holding one must be refused by weights_only loading."""
