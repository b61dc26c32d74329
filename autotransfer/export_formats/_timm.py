"""``--format timm``: a ``save_for_hf`` folder that ``timm.create_model("local-dir:OUT", pretrained=True)`` loads.

The timm model is built with ``num_classes`` = the task's classes and the same ``model_args``;
its classifier gets autotransfer's head (autotransfer's backbone ends in the pre-logits
features, which is exactly what timm's classifier reads). ``config.json`` records the
architecture, ``num_classes``, ``label_names`` and the model's own preprocessing
(input_size, mean, std, crop_pct, interpolation) in ``pretrained_cfg``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import AutotransferError
from ._check import merged_backbone_state, softmax


def misfit(model: Any) -> str:
    if model.modality != "image":
        return f"it is a {model.modality or 'non-image'} model and timm holds image models"
    if len(model.tasks) != 1:
        return f"it has {len(model.tasks)} tasks and a timm model has one classifier"
    if (model.config.get("source_export") or {}).get("resolver") != "timm":
        return "its source is not a timm model"
    return ""


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def write(model: Any, folder: Path) -> None:
    import timm
    import torch
    from timm.models import save_for_hf

    export = model.config["source_export"]
    args = _tuples(dict(export.get("model_args") or {}))
    classes = list(model.tasks[0].classes)
    net = timm.create_model(export["model_name"], pretrained=False, num_classes=len(classes), **args)
    head = net.get_classifier()
    if not isinstance(head, torch.nn.Module) or not hasattr(head, "weight"):
        raise AutotransferError(f"timm model {export['model_name']!r} has no single classifier layer to hold "
                                "the trained head; use --format onnx")
    prefix = next(n for n, m in net.named_modules() if m is head)
    state = merged_backbone_state(model)
    trained = model.heads[0]
    state[f"{prefix}.weight"] = trained.weight.detach().reshape(head.weight.shape)
    state[f"{prefix}.bias"] = trained.bias.detach()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise AutotransferError(f"the trained weights do not fit timm's {export['model_name']!r} with "
                                f"{len(classes)} classes ({str(exc).splitlines()[0]}); use --format onnx") from None
    data_config = _tuples(dict(export["data_config"]))
    save_for_hf(net, str(folder), model_config={"label_names": classes}, model_args=args,
                data_config=data_config, safe_serialization=True)
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"].pop("tag", None)  # the source checkpoint's tag: these weights are not that checkpoint
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def load_plain(folder: Path, local_dir: bool = True):
    """The exported model with plain timm: ``create_model("local-dir:<folder>", pretrained=True)``, or, with
    ``local_dir=False`` or a timm that predates ``local-dir:``, the route any timm 1.0 takes:
    ``create_model(architecture, pretrained=True, pretrained_cfg_overlay=dict(file=<folder>/model.safetensors,
    ...), num_classes=..., **model_args)``."""
    import timm

    if local_dir:
        try:
            return timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        except (AssertionError, RuntimeError):  # a timm before local-dir: (an assert or "Unknown model")
            pass  # a folder that is really broken fails the route below as well, with its own message
    cfg = json.loads((Path(folder) / "config.json").read_text())
    overlay = {**_tuples(cfg["pretrained_cfg"]), "file": str(Path(folder) / "model.safetensors")}
    args = {**_tuples(cfg.get("model_args") or {}), "num_classes": cfg["num_classes"]}
    return timm.create_model(cfg["architecture"], pretrained=True, pretrained_cfg_overlay=overlay, **args).eval()


def predict(folder: Path, items: list[Any], local_dir: bool = True) -> list:
    """Probabilities from the plain timm model and the preprocessing its config.json records."""
    import torch
    from timm.data import create_transform, resolve_data_config

    from ..pixels import open_image

    net = load_plain(folder, local_dir)
    cfg = resolve_data_config(model=net)
    transform = create_transform(**cfg, is_training=False)
    mode = "L" if cfg["input_size"][0] == 1 else "RGB"
    with torch.no_grad():
        x = torch.stack([transform(open_image(item, mode)) for item in items])
        return [softmax(net(x).numpy())]
