"""Built-in source plugin: any timm image model, with hub weights or a local weights file.

Spec forms (prefix ``timm``)::
    timm:<model_name>                              timm's pretrained weights (hub cache / download)
    timm:<model_name>@/path/weights.safetensors    a state dict of the full timm model (or .pth/.pt/.bin,
                                                   read with torch.load(weights_only=True))
    timm:<model_name>@/path/w.safetensors?size=32  options after ``?``, joined with ``&``

A local file holds the state dict of ``timm.create_model(<model_name>, num_classes=C)``
(a ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper and DDP ``module.`` prefixes are
accepted); ``C`` is read from the classifier's weight shape, and 0 (no classifier) is fine.
When the file has a classifier it becomes the source's ``source_head`` (for LEEP/NCE).

Options, from the spec query, then ``SourceOptions.extra``, then a JSON sidecar next to the
weights file (``/path/weights.json``), then timm's pretrained config:
    size          input size, ``32`` or ``32x48`` (extra key: ``input_size``). Models with a
                  fixed input size (ViTs) are built with ``img_size=size``. A size override
                  also sets ``crop_pct=1`` (small images are usually tightly framed) and, at
                  64 px or less, training augmentation without flips and with crop scale
                  (0.5, 1) — tiny images are usually glyphs or icons where a flip changes meaning.
    crop_pct      eval centre-crop fraction
    mean, std     normalisation, comma-separated (``0.5,0.5,0.5``)
    interpolation ``bilinear`` / ``bicubic`` ...
    hflip, scale  training augmentation: flip probability; crop scale ``0.5,1``
    in_chans      input channels the model takes (1 = grayscale input), default 3

The sidecar may also hold ``model_args`` (keyword arguments for ``timm.create_model``).
Every image is converted to RGB (or L when ``in_chans=1``), so 8×8 grayscale PNGs work.

Layer groups come from timm's own coarse grouping (``model.group_matcher(coarse=True)``):
stem, then each stage / block, then the pre-logits head, in forward order.

Default image zoo (ImageNet-1k classifiers, smallest to largest)::
    mobilenetv3_large_100   5.5M params   1280-d
    efficientnet_b0         5.3M          1280-d
    vit_tiny_patch16_224    5.7M           192-d
    regnety_008             6.3M           768-d
    resnet18               11.7M           512-d
    vit_small_patch16_224  22.1M           384-d
    resnet50               25.6M          2048-d
    convnext_tiny          28.6M           768-d

Offline (``SourceOptions.offline`` or ``HF_HUB_OFFLINE=1``) nothing touches the network: hub
weights are used only if they already are in the Hugging Face cache (or torch hub's
checkpoint folder); otherwise ``available()`` says how to pass a local file.
"""

from __future__ import annotations

import difflib
import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from autotransfer import hookimpl
from autotransfer.augment import CropFlipJitter
from autotransfer.decode_cache import DecodeSpec, centre_crop
from autotransfer.errors import SourceError
from autotransfer.memo import BoundedMemo
from autotransfer.sources import (
    Source,
    SourceOptions,
    SpecResolver,
    file_sha256,
    is_offline,
    lazy_class,
    split_spec_options,
)

DEFAULT_ZOO = (
    "mobilenetv3_large_100",
    "efficientnet_b0",
    "vit_tiny_patch16_224",
    "regnety_008",
    "resnet18",
    "vit_small_patch16_224",
    "resnet50",
    "convnext_tiny",
)

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
QUERY_KEYS = ("size", "crop_pct", "mean", "std", "interpolation", "hflip", "scale", "in_chans")
TINY = 64  # at or below this input size, training augmentation is mild (see module docstring)

def load_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """A state dict from ``.safetensors`` or a torch file read with ``weights_only=True``."""
    import torch

    p = Path(path)
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(p), device="cpu")
        else:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SourceError(
            f"cannot read weights file {str(p)!r} ({type(exc).__name__}: {exc}); expected a "
            "state dict saved with safetensors.torch.save_file or torch.save(model.state_dict())"
        ) from exc
    for wrapper in ("state_dict", "model", "state_dict_ema", "model_ema"):
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise SourceError(f"weights file {str(p)!r} does not hold a state dict (name -> tensor); "
                          "save one with torch.save(model.state_dict(), path)")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


_checked: BoundedMemo[str] = BoundedMemo(1024)  # (path, size, mtime) -> weights_problem's answer


def weights_problem(path: str | os.PathLike) -> str:
    """Why the weights file cannot be read ("" when it can), memoised on (path, size, mtime).

    A safetensors file is checked from its header (cheap, and it must account for every byte);
    a torch file is read with ``weights_only=True``.
    """
    st = os.stat(path)
    return _checked.get((str(Path(path).resolve()), st.st_size, st.st_mtime_ns), lambda: _read_problem(path, st.st_size))


def _read_problem(path: str | os.PathLike, size: int) -> str:
    try:
        if Path(path).suffix == ".safetensors":
            _check_safetensors(Path(path), size)
        else:
            load_state_dict(path)
    except SourceError as exc:
        return str(exc)
    return ""


def _check_safetensors(path: Path, size: int) -> None:
    """Header and length checks of a safetensors file without reading its tensors."""

    bad = (f"weights file {str(path)!r} is corrupt or truncated; expected a safetensors file "
           "written by safetensors.torch.save_file — write it again")
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n <= 0 or 8 + n > size:
                raise SourceError(bad)
            header = json.loads(f.read(n))
    except (OSError, struct.error, ValueError, UnicodeDecodeError) as exc:
        raise SourceError(bad) from exc
    if not isinstance(header, dict):
        raise SourceError(bad)
    ends = [v.get("data_offsets", [0, 0])[1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    if 8 + n + max(ends, default=0) != size:
        raise SourceError(bad)


def _plain(value: Any) -> Any:
    """Tuples to lists (recursively) so a config round-trips through JSON."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _tuples(config: dict[str, Any]) -> dict[str, Any]:
    """Lists back to tuples, as timm's configs hold them."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}


def _floats(text: Any, what: str) -> tuple[float, ...]:
    if isinstance(text, (list, tuple)):
        return tuple(float(v) for v in text)
    try:
        return tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise SourceError(f"option {what}={text!r} is not a comma-separated list of numbers, e.g. 0.5,0.5,0.5") from None


def _size(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)):
        vals = [int(v) for v in value][-2:]
        return (vals[0], vals[-1])
    parts = str(value).lower().split("x")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise SourceError(f"input size {value!r} is not an integer or HxW, e.g. size=32 or size=32x48") from None
    if len(vals) not in (1, 2) or min(vals) < 1:
        raise SourceError(f"input size {value!r} must be one or two positive integers, e.g. size=32")
    return (vals[0], vals[-1])


class TimmSource(Source):
    """A timm model with hub weights or a local state-dict file."""

    modality = "image"

    def __init__(self, name: str, model_name: str, weights: Path | None, settings: dict[str, Any],
                 explicit: dict[str, Any], options: SourceOptions):
        self.name = name
        self.model_name = model_name  # timm name, possibly with a pretrained tag ("resnet18.a1_in1k")
        self.architecture = model_name.split(".")[0]
        self.weights = weights  # local weights file, or None for timm's pretrained weights
        self.settings = settings  # effective options: sidecar, then SourceOptions.extra, then the query
        self.options = options
        self.model_args: dict[str, Any] = dict(settings.get("model_args") or {})
        self.in_chans = int(settings.get("in_chans", self.model_args.get("in_chans", 3)))
        if self.in_chans != 3:
            self.model_args["in_chans"] = self.in_chans
        self._pcfg: dict[str, Any] | None = None
        self._data_config: dict[str, Any] | None = None
        self._transforms: dict[bool, Any] = {}
        self._train_kw: dict[str, Any] | None = None
        self._dim: int | None = None
        self.exported = False  # rebuilt from an exported model: architecture only, no pretrained weights
        if "size" in settings and self.pretrained_cfg.get("fixed_input_size"):
            self.model_args.setdefault("img_size", tuple(self.data_config["input_size"][1:]))
        query = "&".join(f"{k}={_fmt(v)}" for k, v in explicit.items())
        # rebuilds this source anywhere: absolute weights path, options not in the sidecar
        self.spec = f"timm:{model_name}" + (f"@{weights}" if weights else "") + (f"?{query}" if query else "")

    # --- configuration ---

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        if self._pcfg is None:
            from timm.models import get_pretrained_cfg

            cfg = get_pretrained_cfg(self.model_name)
            self._pcfg = cfg.to_dict() if cfg is not None else {}
        return self._pcfg

    @property
    def data_config(self) -> dict[str, Any]:
        """timm's data config with this source's overrides (input_size, crop_pct, mean, std ...)."""
        if self._data_config is None:
            from timm.data import resolve_data_config

            s = self.settings
            args: dict[str, Any] = {}
            if "size" in s:
                h, w = _size(s["size"])
                args["input_size"] = (self.in_chans, h, w)
                args["crop_pct"] = 1.0
            elif self.in_chans != 3:
                size = self.pretrained_cfg.get("input_size", (3, 224, 224))
                args["input_size"] = (self.in_chans, *size[1:])
            if "crop_pct" in s:
                args["crop_pct"] = float(s["crop_pct"])
            if "interpolation" in s:
                args["interpolation"] = str(s["interpolation"])
            for key in ("mean", "std"):
                if key in s:
                    args[key] = _floats(s[key], key)
            if self.in_chans == 1:
                for key in ("mean", "std"):
                    if key not in args:
                        vals = self.pretrained_cfg.get(key, (0.5,))
                        args[key] = (float(sum(vals) / len(vals)),)
            cfg = resolve_data_config(args, pretrained_cfg=self.pretrained_cfg or None, verbose=False)
            self._data_config = dict(cfg)
        return self._data_config

    def _train_kwargs(self) -> dict[str, Any]:
        """Training-augmentation overrides for ``create_transform`` (see the module docstring)."""
        if self._train_kw is None:
            kwargs: dict[str, Any] = {}
            size = self.data_config["input_size"][-1]
            if "size" in self.settings and size <= TINY:
                kwargs.update(hflip=0.0, scale=(0.5, 1.0))
            if "hflip" in self.settings:
                kwargs["hflip"] = float(self.settings["hflip"])
            if "scale" in self.settings:
                kwargs["scale"] = _floats(self.settings["scale"], "scale")
            self._train_kw = kwargs
        return self._train_kw

    def _transform(self, train: bool):
        if train not in self._transforms:
            from timm.data import create_transform

            kwargs = self._train_kwargs() if train else {}
            self._transforms[train] = create_transform(**self.data_config, is_training=train, **kwargs)
        return self._transforms[train]

    # --- export: architecture and input pipeline, no weights file needed ---

    def export(self, folder: Path) -> dict[str, Any]:
        """Everything ``TimmResolver.from_export`` needs: timm name, model_args, resolved data config.

        Works for subclasses that read pretrained weights differently: it records only what
        ``build(pretrained=False)`` and ``load_item`` use, never the weights file.
        """
        return {"resolver": "timm", "model_name": self.model_name, "model_args": _plain(self.model_args),
                "in_chans": self.in_chans, "data_config": _plain(self.data_config),
                "train_transform": _plain(self._train_kwargs())}

    @staticmethod
    def from_export(export: dict[str, Any], name: str, spec: str, options: SourceOptions) -> TimmSource:
        """An inference source from ``export()``'s dict: builds the architecture, never pretrained weights.

        Always a plain ``TimmSource``, whichever subclass was exported: only the weights differ.
        """
        src = TimmSource(name, str(export["model_name"]), None, {}, {}, options)
        src.model_args = _tuples(dict(export.get("model_args") or {}))
        src.in_chans = int(export.get("in_chans", 3))
        src._data_config = _tuples(dict(export["data_config"]))
        src._train_kw = _tuples(dict(export.get("train_transform") or {}))
        src.spec = spec
        src.exported = True
        return src

    # --- weights ---

    def _hub_file(self) -> str | None:
        """The cached pretrained weights file, found without any network access."""
        cfg = self.pretrained_cfg
        hub_id = cfg.get("hf_hub_id")
        if hub_id:
            from huggingface_hub import try_to_load_from_cache

            repo, _, revision = hub_id.partition("@")
            names = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else []
            names += ["model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"]
            for fname in names:
                try:
                    hit = try_to_load_from_cache(repo, fname, cache_dir=self.options.cache_dir,
                                                 revision=revision or None)
                except Exception:  # an unusual cache layout is a miss, never a crash
                    hit = None
                if isinstance(hit, str) and os.path.isfile(hit):
                    return hit
        if cfg.get("url"):
            import torch.hub

            p = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg["url"].split("?")[0])
            if p.is_file():
                return str(p)
        if cfg.get("file") and os.path.isfile(cfg["file"]):
            return str(cfg["file"])
        return None

    def _hint(self) -> str:
        return (f"pass timm:{self.model_name}@/path/to/weights.safetensors (a state dict of "
                f"timm.create_model({self.model_name!r}), .pth also works)")

    def available(self) -> tuple[bool, str]:
        if self.exported:
            return False, f"{self.name!r} was rebuilt from an exported model and has no pretrained weights"
        if self.weights is not None:
            if not self.weights.is_file():
                return False, f"weights file {str(self.weights)!r} does not exist; check the path after '@'"
            problem = weights_problem(self.weights)
            if problem:
                return False, problem
            return True, f"local weights {self.weights}"
        cfg = self.pretrained_cfg
        if not (cfg.get("hf_hub_id") or cfg.get("url") or cfg.get("file")):
            return False, f"timm has no pretrained weights for {self.model_name!r}; {self._hint()}"
        hit = self._hub_file()
        if hit:
            return True, f"cached weights {hit}"
        where = cfg.get("hf_hub_id") or cfg.get("url")
        if is_offline(self.options):
            return False, (f"{where} is not in the local hub cache and offline mode is on; "
                           f"{self._hint()}, or run once online to cache it")
        return True, f"downloads {where} on first use"

    def identity(self) -> str:
        args = json.dumps(self.model_args, sort_keys=True, default=str)
        if self.weights is not None:
            if not self.weights.is_file():
                raise SourceError(f"weights file {str(self.weights)!r} does not exist; check the path after '@'")
            return f"timm:{self.model_name}|sha256:{file_sha256(self.weights)}|{args}"
        cfg = self.pretrained_cfg
        return f"timm:{self.model_name}|{cfg.get('hf_hub_id') or cfg.get('url') or ''}|{args}"

    def transform_key(self, train: bool = False) -> str:
        from autotransfer.pixels import DECODE_VERSION

        return f"{self.identity()}|{self.in_chans}|{self._transform(train)!r}|train={train}|decode={DECODE_VERSION}"

    @property
    def feature_dim(self) -> int:
        if self._dim is None:
            import timm
            import torch

            with torch.device("meta"):
                model = timm.create_model(self.model_name, pretrained=False, num_classes=0, **self.model_args)
                x = torch.empty(1, *self.data_config["input_size"])
                try:
                    self._dim = int(model.forward_head(model.forward_features(x), pre_logits=True).shape[-1])
                except Exception:  # an op without a meta kernel: timm's own attribute is right for most
                    self._dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
        return self._dim

    def _classifier_key(self, sd: dict[str, Any]) -> str | None:
        name = self.pretrained_cfg.get("classifier")
        if isinstance(name, (list, tuple)):
            name = name[0] if name else None
        if name and f"{name}.weight" in sd:
            return f"{name}.weight"
        return None

    def _load_exactly(self, model, sd: dict[str, Any]) -> None:
        """Load ``sd`` into ``model``; any missing, unexpected or mis-shaped tensor is a SourceError."""
        own = model.state_dict()
        missing = [k for k in own if k not in sd]
        unexpected = [k for k in sd if k not in own]
        shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                  if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
        if missing or unexpected or shapes:
            raise SourceError(
                f"weights file {str(self.weights)!r} does not fit timm model {self.model_name!r} "
                f"(missing {len(missing)} keys, e.g. {missing[:2]}; unexpected {len(unexpected)}, e.g. "
                f"{unexpected[:2]}; wrong shape {len(shapes)}, e.g. {shapes[:2]}); save the state dict of "
                f"timm.create_model({self.model_name!r}), or fix the model name, size or model_args"
            )
        model.load_state_dict(sd, strict=True)

    def build(self, pretrained: bool = True):
        import timm
        import torch

        args = dict(self.model_args)
        if not pretrained:
            seed = self.options.extra.get("seed")
            with torch.random.fork_rng(enabled=seed is not None):
                if seed is not None:
                    torch.manual_seed(int(seed))
                model = timm.create_model(self.model_name, pretrained=False, num_classes=0, **args)
            return _backbone_cls()(model, None)
        if self.exported:
            raise SourceError(f"source {self.name!r}: {self.available()[1]}")
        if self.weights is not None:
            ok, why = self.available()
            if not ok:
                raise SourceError(f"source {self.name!r}: {why}")
            sd = load_state_dict(self.weights)
            key = self._classifier_key(sd)
            num_classes = int(sd[key].shape[0]) if key else 0
            model = timm.create_model(self.model_name, pretrained=False, num_classes=num_classes, **args)
            self._load_exactly(model, sd)
        else:
            hit = self._hub_file()
            if hit is None and is_offline(self.options):
                raise SourceError(f"source {self.name!r}: {self.available()[1]}")
            try:
                if hit is not None:
                    overlay = {"file": hit, "source": "", "hf_hub_id": None, "url": None}
                    model = timm.create_model(self.model_name, pretrained=True, pretrained_cfg_overlay=overlay, **args)
                else:
                    model = timm.create_model(self.model_name, pretrained=True, cache_dir=self.options.cache_dir,
                                              **args)
            except SourceError:
                raise
            except Exception as exc:
                raise SourceError(f"source {self.name!r}: could not load timm's pretrained weights "
                                  f"({type(exc).__name__}: {exc}); {self._hint()}") from exc
        head = None
        if getattr(model, "num_classes", 0):
            head = model.get_classifier()
            if isinstance(head, (tuple, list)):  # distilled models: the first is the class head
                head = head[0]
            model.reset_classifier(0)
        return _backbone_cls()(model, head)

    def load_item(self, item: Any, train: bool = False):
        from autotransfer.pixels import open_image

        return self._transform(train)(open_image(item, "L" if self.in_chans == 1 else "RGB"))

    def decode_spec(self):
        """The decoded-image cache geometry of the eval pipeline, when it is Resize(short side) + CenterCrop.

        Other eval pipelines (aspect-changing resizes, crop modes) stream from the files.
        """
        if "_dspec" in self.__dict__:
            return self._dspec
        from torchvision import transforms as T

        self._dspec = None
        steps = list(getattr(self._transform(False), "transforms", []))
        if len(steps) != 4 or not isinstance(steps[0], T.Resize) or not isinstance(steps[1], T.CenterCrop):
            return None
        resize, crop = steps[0], steps[1]
        side = resize.size if isinstance(resize.size, int) else (resize.size[0] if len(resize.size) == 1 else None)
        if side is None or resize.max_size is not None or not isinstance(steps[3], T.Normalize):
            return None
        h, w = crop.size
        if h > side or w > side:
            return None
        self._dspec = DecodeSpec(int(side), (int(h), int(w)), resize.interpolation.value,
                                 "L" if self.in_chans == 1 else "RGB")
        return self._dspec

    def eval_normalization(self):
        if self.decode_spec() is None:
            return None
        norm = self._transform(False).transforms[-1]
        return tuple(float(m) for m in norm.mean), tuple(float(s) for s in norm.std)

    def load_decoded(self, image, train: bool = False):
        """Eval: the centre crop of the cached square; train: the augmentation (random-resized crop, flip ...)
        of the cached square. Both end in ``_normalised``, the same numbers as ToTensor + Normalize."""

        if not train:
            return self._normalised(centre_crop(image, self.decode_spec().crop))
        steps = self._transform(True).transforms
        if len(steps) < 2 or type(steps[-2]).__name__ not in ("MaybeToTensor", "ToTensor"):
            return super().load_decoded(image, train=True)
        from PIL import Image

        img = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        for step in steps[:-2]:  # the PIL-side augmentation
            img = step(img)
        arr = np.asarray(img)
        return self._normalised(arr[..., None] if arr.ndim == 2 else arr, steps[-1])

    def decoded_augmentation(self):
        """The batch form (``autotransfer.augment.CropFlipJitter``) of this source's training transform
        when it is timm's default shape: random-resized crop, optional horizontal flip, optional
        colour jitter without hue, to-tensor, normalise. Other transforms (hue, RandAugment, random
        erasing, vertical flips ...) return None and run per image through ``load_decoded``."""
        if "_batch_aug" not in self.__dict__:
            self._batch_aug = _batch_augmentation(self._transform(True).transforms) \
                if self.decode_spec() is not None else None
        return self._batch_aug

    def _normalised(self, image, norm=None):
        """uint8 HWC -> float CHW tensor: torchvision's ToTensor + Normalize arithmetic (float32 /255, -mean,
        /std, bit for bit), done in numpy: one pass per image instead of several small torch ops, whose
        dispatch and threading overhead dominated per-image time on a busy 2-core CPU."""
        import torch

        norm = norm or self._transform(False).transforms[-1]
        x = image.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
        x -= np.asarray(norm.mean, np.float32).reshape(-1, 1, 1)
        x /= np.asarray(norm.std, np.float32).reshape(-1, 1, 1)
        return torch.from_numpy(x)

    def collate(self, inputs: list[Any]):
        import torch

        return torch.stack(inputs)


def _batch_augmentation(steps: list[Any]) -> CropFlipJitter | None:
    """``CropFlipJitter`` equal to a timm training ``Compose``'s steps, or None when they are another shape.

    A flip and a colour jitter commute (the jitter is per pixel, its contrast mean is flip-invariant),
    so their order between the crop and the to-tensor step does not matter."""
    names = [type(step).__name__ for step in steps]
    if len(steps) < 3 or names[0] not in ("RandomResizedCropAndInterpolation", "RandomResizedCrop") \
            or names[-2] not in ("MaybeToTensor", "ToTensor") or names[-1] != "Normalize":
        return None
    rrc, norm = steps[0], steps[-1]
    kwargs: dict[str, Any] = {}
    for step, name in zip(steps[1:-2], names[1:-2], strict=True):
        if name == "RandomHorizontalFlip" and "hflip" not in kwargs:
            kwargs["hflip"] = float(step.p)
        elif name == "ColorJitter" and "brightness" not in kwargs and (step.hue is None or not any(step.hue)):
            for op in ("brightness", "contrast", "saturation"):
                value = getattr(step, op)
                kwargs[op] = None if value is None else (float(value[0]), float(value[1]))
        else:  # an augmentation the batch form does not have (hue, RandAugment, vertical flip ...)
            return None
    interp = rrc.interpolation if isinstance(rrc.interpolation, (tuple, list)) else (rrc.interpolation,)
    size = tuple(rrc.size) if isinstance(rrc.size, (tuple, list)) else (rrc.size, rrc.size)
    return CropFlipJitter(size=(int(size[0]), int(size[1])), mean=tuple(float(m) for m in norm.mean),
                          std=tuple(float(v) for v in norm.std), scale=tuple(float(v) for v in rrc.scale),
                          ratio=tuple(float(v) for v in rrc.ratio),
                          interpolations=tuple(getattr(m, "value", str(m)) for m in interp), **kwargs)


def _timm_groups(model) -> list[list[str]]:
    """Parameter names of ``model`` grouped by timm's coarse matcher, input -> output."""
    names = [n for n, _ in model.named_parameters()]
    groups: list[list[str]] = []
    try:
        from timm.models import group_parameters

        grouped = group_parameters(model, model.group_matcher(coarse=True))
        groups = [list(v) for _, v in sorted(grouped.items(), key=lambda kv: kv[0]) if v]
    except (AttributeError, NotImplementedError, TypeError):
        pass
    if not groups:  # no matcher: one group per top-level child, in definition order
        by_child: dict[str, list[str]] = {}
        for n in names:
            by_child.setdefault(n.split(".")[0], []).append(n)
        groups = list(by_child.values())
    seen: set[str] = set()
    out: list[list[str]] = []
    for g in groups:
        g = [n for n in g if n not in seen]
        seen.update(g)
        if g:
            out.append(g)
    left = [n for n in names if n not in seen]
    if left:
        out[-1].extend(left)
    return out


def _make_backbone_class():
    import torch.nn as nn

    class TimmBackbone(nn.Module):
        """timm model -> pooled pre-logits features (``forward_head(..., pre_logits=True)``).

        ``source_head`` (the pretrained classifier, or None) is deliberately not a submodule:
        it is not trained and not in ``parameters()`` / ``state_dict()``, yet it follows the
        backbone's ``.to()`` / ``.half()`` so ``source_head(backbone(x))`` just works.
        """

        def __init__(self, model: nn.Module, source_head: nn.Module | None):
            super().__init__()
            self.model = model
            if source_head is not None:
                source_head.eval().requires_grad_(False)
            object.__setattr__(self, "source_head", source_head)
            self._groups = [["model." + n for n in g] for g in _timm_groups(model)]

        def forward(self, x):
            return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

        def layer_groups(self) -> list[list[str]]:
            """Parameter names, input -> output, disjoint, covering every parameter."""
            return [list(g) for g in self._groups]

        def _apply(self, fn, recurse=True):
            super()._apply(fn, recurse)
            if self.source_head is not None:
                self.source_head._apply(fn, recurse)
            return self

    return TimmBackbone


# made on first use, so importing this plugin does not import torch; picklable as
# autotransfer_plugins.sources.timm_source.TimmBackbone
_backbone_cls = lazy_class(globals(), "TimmBackbone", _make_backbone_class)


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _read_sidecar(weights: Path, model_name: str) -> dict[str, Any]:
    """Options saved next to a weights file as ``<weights stem>.json`` (see the module docstring)."""
    sidecar = weights.with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        data = json.loads(sidecar.read_text())
    except ValueError as exc:
        raise SourceError(f"sidecar {str(sidecar)!r} is not valid JSON ({exc}); fix or delete it") from exc
    if not isinstance(data, dict):
        raise SourceError(f"sidecar {str(sidecar)!r} must hold a JSON object, e.g. {{\"input_size\": 32}}")
    arch = data.get("architecture")
    if arch and arch.split(".")[0] != model_name.split(".")[0]:
        raise SourceError(f"sidecar {str(sidecar)!r} says the weights are for {arch!r}, not {model_name!r}; "
                          f"use timm:{arch}@{weights}")
    if "input_size" in data:
        data["size"] = data.pop("input_size")
    return data


class TimmResolver(SpecResolver):
    """``timm:<model>[@weights][?options]``."""

    name = "timm"
    modality = "image"
    description = (f"any timm model: timm:<model>[@/path/weights.safetensors][?size=32]; "
                   f"default zoo: {len(DEFAULT_ZOO)} ImageNet models")

    def resolve(self, rest: str, options: SourceOptions) -> TimmSource:
        import timm

        body, query = split_spec_options("timm", rest, QUERY_KEYS)
        model_name, at, path = body.partition("@")
        model_name = model_name.strip()
        if not timm.is_model(model_name):
            names = timm.list_models()
            close = (difflib.get_close_matches(model_name, names, n=5, cutoff=0.6)
                     or difflib.get_close_matches(model_name, names, n=5, cutoff=0.4))
            hint = f"close matches: {', '.join(close)}" if close else f"e.g. {', '.join(DEFAULT_ZOO[:4])}"
            raise SourceError(f"timm has no model {model_name!r}; {hint} (see timm.list_models())")
        if "." in model_name and not self._known_tag(model_name):
            tags = timm.list_models(model_name.split(".")[0], pretrained=True)[:8]
            raise SourceError(f"timm model {model_name!r} has no such pretrained tag; "
                              f"known: {', '.join(tags) or 'none'} (see timm.list_models(pretrained=True))")
        weights = None
        settings: dict[str, Any] = {}
        if at:
            if not path:
                raise SourceError(f"source spec 'timm:{rest}' has '@' but no weights path after it; "
                                  "expected timm:<model>@/path/weights.safetensors")
            weights = Path(path).expanduser().resolve()
            settings.update(_read_sidecar(weights, model_name))
        explicit = {("size" if k == "input_size" else k): v for k, v in options.extra.items()
                    if k in QUERY_KEYS or k == "input_size"}
        explicit.update(query)
        settings.update(explicit)
        if "size" in settings:
            _size(settings["size"])  # a bad size fails at resolve time, naming the value
        name = f"timm:{rest.strip()}"
        return TimmSource(name, model_name, weights, settings, explicit, options)

    @staticmethod
    def _known_tag(name: str) -> bool:
        from timm.models import get_pretrained_cfg

        try:
            return get_pretrained_cfg(name) is not None
        except RuntimeError:  # timm: "Invalid pretrained tag"
            return False

    def defaults(self) -> list[str]:
        return [f"timm:{m}" for m in DEFAULT_ZOO]

    def from_export(self, export: dict[str, Any], folder: Path, name: str, spec: str,
                    options: SourceOptions) -> TimmSource:
        return TimmSource.from_export(export, name, spec, options)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "modality": self.modality, "description": self.description,
                "default_zoo": len(DEFAULT_ZOO)}


@hookimpl
def register_source_resolvers(register):
    register(TimmResolver())
