"""``--format transformers``: a ``save_pretrained`` folder for ``AutoModelForSequenceClassification``.

autotransfer's text head reads the pooled encoder output: the attention-masked mean of the last
hidden states (``pooling=mean``, the default) or the first token (``pooling=cls``). transformers'
sequence-classification heads read the first token only, so a mean-pooled model has no faithful
form here (use onnx). For the first token, BERT and RoBERTa-family heads put a ``dense`` +
``tanh`` layer before the classifier; the export makes it the identity to float precision:
``dense = s * I`` and ``classifier = W / s`` with ``s = 2**-20`` (powers of two scale exactly),
so ``tanh(s * h) / s = h (1 - (s h)^2 / 3 ...)`` differs from ``h`` by under 1e-6 relative for any
``|h| < 1000``. Fine-tuning the export further in transformers starts from that scaled head.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..console import quiet_transformers as _quiet
from ..errors import AutotransferError
from ._check import merged_backbone_state, softmax

SCALE = 2.0 ** -20
# model_type -> (the dense layer before tanh, the classifier), as named inside *ForSequenceClassification
HEADS = {
    "bert": ("bert.pooler.dense", "classifier"),
    "roberta": ("classifier.dense", "classifier.out_proj"),
    "xlm-roberta": ("classifier.dense", "classifier.out_proj"),
    "camembert": ("classifier.dense", "classifier.out_proj"),
}


def misfit(model: Any) -> str:
    export = model.config.get("source_export") or {}
    if model.modality != "text" or export.get("resolver") != "hf":
        return "its source is not a transformers text encoder"
    if len(model.tasks) != 1:
        return f"it has {len(model.tasks)} tasks and a sequence-classification model has one classifier"
    if export.get("pooling") != "cls":
        return (f"it pools the encoder by {export.get('pooling')!r} and transformers' sequence-classification "
                "heads read the first token only (train with a ?pooling=cls source to export it here)")
    kind = model.source.config_json().get("model_type")
    if kind not in HEADS:
        return (f"transformers' head for model type {kind!r} has no exact mapping here "
                f"(model types with one: {', '.join(HEADS)})")
    return ""


def write(model: Any, folder: Path) -> None:
    from transformers import AutoTokenizer

    src = model.source
    with _quiet():
        _build(model).save_pretrained(str(folder))
        # truncation at autotransfer's length: tokenizer(texts, truncation=True) then cuts where training did
        tok = AutoTokenizer.from_pretrained(src.location, local_files_only=True, model_max_length=src.max_length)
        tok.save_pretrained(str(folder))


def predict(folder: Path, items: list[Any]) -> list:
    """Probabilities from the plain transformers model and tokenizer saved in ``folder``."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    with _quiet():
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        net = AutoModelForSequenceClassification.from_pretrained(str(folder), local_files_only=True).eval()
    with torch.no_grad():
        enc = tok([str(t) for t in items], truncation=True, padding=True, return_tensors="pt")
        return [softmax(net(**enc).logits.numpy())]


def _build(model: Any):
    """The sequence-classification model holding autotransfer's encoder and head."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    src = model.source
    classes = list(model.tasks[0].classes)
    config = AutoConfig.from_pretrained(src.location, local_files_only=True)
    config.num_labels = len(classes)
    config.id2label = dict(enumerate(classes))
    config.label2id = {c: i for i, c in enumerate(classes)}
    net = AutoModelForSequenceClassification.from_config(config)
    missing, unexpected = net.base_model.load_state_dict(merged_backbone_state(model), strict=False)
    stray = [k for k in (*missing, *unexpected) if not k.startswith("pooler.")]
    if stray:
        raise AutotransferError(f"the trained encoder does not fit {type(net).__name__} ({len(stray)} tensors "
                                f"differ, e.g. {stray[0]!r}); use --format onnx")
    dense_name, out_name = HEADS[config.model_type]
    dense, out = net.get_submodule(dense_name), net.get_submodule(out_name)
    head = model.heads[0]
    with torch.no_grad():
        dense.weight.copy_(torch.eye(dense.weight.shape[0]) * SCALE)
        dense.bias.zero_()
        out.weight.copy_(head.weight / SCALE)
        out.bias.copy_(head.bias)
    return net.eval()
