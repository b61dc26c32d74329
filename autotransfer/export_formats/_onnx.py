"""``--format onnx``: ``model.onnx`` (autotransfer's own graph, batch axis dynamic) and ``preprocessing.json``.

Inputs are named after what the source's preprocessing produces: ``pixel_values`` (N, C, H, W)
float32 for images; the tokenizer's outputs (``input_ids``, ``attention_mask`` and, for BERT-like
tokenizers, ``token_type_ids``; int64, N x sequence) for text. Outputs are logits, one per task:
``logits`` for a single task, ``logits_<i>`` in task order otherwise; ``preprocessing.json``
names each output's task and classes. Image preprocessing is recorded as timm's data config
and as the eval steps it means (resize, centre crop, to [0, 1], normalise); text preprocessing
as the tokenizer files in ``tokenizer/`` plus ``max_length``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from ..errors import AutotransferError
from ._check import softmax

ONNX = "model.onnx"
PREPROCESSING = "preprocessing.json"
TOKENIZER = "tokenizer"
OPSET = 17


def _require() -> None:
    """onnx writes the file, onnxruntime checks it: both or a one-line error naming the extra."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise AutotransferError(f"--format onnx needs {' and '.join(missing)}, which is not installed; "
                                "install it with pip install 'autotransfer[export]'")


def misfit(model: Any) -> str:
    if model.modality not in ("image", "text"):
        return f"its modality {model.modality!r} is neither image nor text"
    if model.modality == "image" and not (model.config.get("source_export") or {}).get("data_config"):
        return "its source does not record an image data config (input size, mean, std)"
    return ""


def _graph(model: Any, names: list[str]):
    import torch

    class Graph(torch.nn.Module):
        """Positional inputs in, a tuple of per-task logits out: the form torch.onnx.export traces."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            batch = dict(zip(names, inputs, strict=True)) if model.modality == "text" else inputs[0]
            return tuple(self.model(batch))

    return Graph().eval()


def write(model: Any, folder: Path) -> None:
    import torch

    from ._check import synthetic_items

    _require()
    src = model.source
    batch = src.collate([src.load_item(item, train=False) for item in synthetic_items(model, n=2)])
    names = list(batch) if model.modality == "text" else ["pixel_values"]
    inputs = tuple(batch[n] for n in names) if model.modality == "text" else (batch,)
    outputs = ["logits"] if len(model.tasks) == 1 else [f"logits_{i}" for i in range(len(model.tasks))]
    axes = {n: ({0: "batch", 1: "sequence"} if model.modality == "text" else {0: "batch"}) for n in names}
    axes.update({n: {0: "batch"} for n in outputs})
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shapes: the round-trip check tests other shapes
        torch.onnx.export(_graph(model, names), inputs, str(folder / ONNX), input_names=names,
                          output_names=outputs, dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    spec: dict[str, Any] = {
        "format": "autotransfer-onnx", "modality": model.modality, "inputs": names,
        "outputs": [{"name": o, "task": t.name, "classes": list(t.classes), "apply": "softmax"}
                    for o, t in zip(outputs, model.tasks, strict=True)],
    }
    spec.update(_image_spec(model) if model.modality == "image" else _text_spec(model, folder))
    (folder / PREPROCESSING).write_text(json.dumps(spec, indent=2) + "\n")


def _image_spec(model: Any) -> dict[str, Any]:
    from timm.data import create_transform

    data_config = model.config["source_export"]["data_config"]
    steps = []
    for step in create_transform(**data_config, is_training=False).transforms:
        kind = type(step).__name__
        if kind == "Resize":
            steps.append({"resize": step.size, "interpolation": step.interpolation.value,
                          "note": "an int resizes the shorter side to it, keeping the aspect ratio"})
        elif kind == "CenterCrop":
            steps.append({"center_crop": list(step.size)})
        elif kind in ("ToTensor", "MaybeToTensor"):
            steps.append({"to_tensor": "HWC uint8 -> CHW float32 / 255"})
        elif kind == "Normalize":
            steps.append({"normalize": {"mean": [float(v) for v in step.mean], "std": [float(v) for v in step.std]}})
        else:
            steps.append({type(step).__name__: repr(step)})
    mode = "L" if data_config["input_size"][0] == 1 else "RGB"
    return {"image": {"mode": mode, "data_config": data_config, "steps": steps}}


def _text_spec(model: Any, folder: Path) -> dict[str, Any]:
    src = model.source
    src.tokenizer.save_pretrained(str(folder / TOKENIZER))
    return {"text": {"tokenizer": TOKENIZER, "max_length": int(src.max_length), "truncation": True,
                     "padding": "longest"}}


def predict(folder: Path, items: list[Any]) -> list:
    """Probabilities from onnxruntime, with the preprocessing ``preprocessing.json`` records; run as a
    batch of one and a batch of the rest, so both axes are seen at sizes other than the traced ones."""
    import numpy as np
    import onnxruntime

    spec = json.loads((folder / PREPROCESSING).read_text())
    session = onnxruntime.InferenceSession(str(folder / ONNX), providers=["CPUExecutionProvider"])
    feed = _image_feed(spec) if spec["modality"] == "image" else _text_feed(spec, folder)
    parts = [session.run([o["name"] for o in spec["outputs"]], feed(part)) for part in (items[:1], items[1:]) if part]
    return [softmax(np.concatenate([p[t] for p in parts])) for t in range(len(spec["outputs"]))]


def _image_feed(spec: dict[str, Any]):
    import numpy as np
    from timm.data import create_transform

    from ..pixels import open_image

    image = spec["image"]
    transform = create_transform(**image["data_config"], is_training=False)
    return lambda part: {"pixel_values": np.stack([transform(open_image(i, image["mode"])).numpy() for i in part])}


def _text_feed(spec: dict[str, Any], folder: Path):
    from transformers import AutoTokenizer

    text = spec["text"]
    tok = AutoTokenizer.from_pretrained(str(folder / text["tokenizer"]), local_files_only=True)

    def feed(part):
        enc = tok([str(t) for t in part], truncation=True, max_length=text["max_length"], padding=True,
                  return_tensors="np")
        return {n: enc[n].astype("int64") for n in spec["inputs"]}

    return feed
