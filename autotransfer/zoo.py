"""The digits zoo: tiny timm sources pretrained locally, and the Yosinski-style digits A→B task.

Vision weights cannot be downloaded here, so transfer is shown the way Yosinski et al.
(2014) did: split the classes. Sources are pretrained on digits 0–4 (task A); the target
is digits 5–9 (task B) with few labels. The zoo has:
* ``digits-<arch>``: pretrained on task A (helpful sources, two architectures);
* ``shuffled-<arch>``: pretrained on task A with **shuffled labels** and a learning rate 100×
  too high — a planted harmful source, the kind of checkpoint a broken pretraining run leaves:
  its features collapsed (measured: linear probe and full fine-tuning stay at chance on the
  target while scratch learns). Shuffled labels with a sane learning rate turned out *not* to
  be harmful here: memorising noisy labels still learns stroke features that transfer;
* ``synthetic-<arch>``: pretrained on a different, synthetic task (bar orientation).

Weights are saved as safetensors with a JSON sidecar and used through the ordinary timm
source path, ``timm:<arch>@/path/weights.safetensors`` — exactly how a user's own weights load.
Everything is cached: a second call returns at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.offline import digits_arrays, write_images
from .features import default_cache_dir

ZOO_VERSION = "v2"
SIZE = 16  # input size the zoo is trained at (8x8 digits upscaled)
ARCHS = ("test_resnet", "test_vit")


@dataclass
class ZooEntry:
    """One pretrained source of the zoo."""

    name: str  # short name, e.g. "digits-test_resnet"
    spec: str  # timm:<arch>@<weights> spec that loads it
    kind: str  # "helpful", "harmful" or "unrelated"
    source_accuracy: float  # accuracy on its own pretraining task (training data)


def default_zoo_dir() -> Path:
    return Path(default_cache_dir()).parent / "zoo" / f"digits-{ZOO_VERSION}"


def _prep(images: np.ndarray, size: int):
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return ((x - 0.5) / 0.5).repeat(1, 3, 1, 1)


def synthetic_bars(n: int, seed: int, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A different task: 8×8 images of a bar at one of 4 orientations, with noise."""
    rng = np.random.default_rng(seed)
    imgs = np.zeros((n, size, size), dtype=np.float32)
    y = rng.integers(0, 4, size=n)
    for i, k in enumerate(y):
        c = rng.integers(2, size - 2)
        if k == 0:
            imgs[i, c, :] = 1
        elif k == 1:
            imgs[i, :, c] = 1
        elif k == 2:
            imgs[i] = np.eye(size)
        else:
            imgs[i] = np.fliplr(np.eye(size))
        imgs[i] += rng.normal(0, 0.3, (size, size))
    return (np.clip(imgs, 0, 1) * 255).astype(np.uint8), y


def pretrain(arch: str, images: np.ndarray, labels: np.ndarray, out: Path, *, epochs: int = 15,
             seed: int = 0, size: int = SIZE, lr: float = 3e-3, one_cycle: bool = True) -> float:
    """Train ``timm.create_model(arch)`` on (images, labels) and save weights + sidecar; return train accuracy."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    n_cls = int(labels.max()) + 1
    kwargs = {"img_size": size} if "vit" in arch else {}
    model = timm.create_model(arch, num_classes=n_cls, **kwargs)
    x, y = _prep(images, size), torch.from_numpy(labels.astype(np.int64))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(x) + 63) // 64)
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps) if one_cycle
             else torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0))
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.inference_mode():
        acc = float((model(x).argmax(1) == y).float().mean())
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
    out.with_suffix(".json").write_text(json.dumps({
        "architecture": arch, "input_size": size, "mean": [0.5] * 3, "std": [0.5] * 3,
        "crop_pct": 1.0, "interpolation": "bilinear", "num_classes": n_cls,
        "model_args": kwargs, "pretrained_on": out.stem,
    }, indent=1))
    return acc


def build_zoo(zoo_dir: Path | None = None, archs: Iterable[str] = ARCHS, epochs: int = 15,
              kinds: Iterable[str] = ("helpful", "harmful", "unrelated")) -> list[ZooEntry]:
    """Pretrain (or reuse) the digits zoo; return its entries."""
    zoo_dir = Path(zoo_dir or default_zoo_dir())
    manifest = zoo_dir / "manifest.json"
    known = {e["name"]: e for e in json.loads(manifest.read_text())} if manifest.exists() else {}
    images, y = digits_arrays()
    src = y < 5
    rng = np.random.default_rng(1234)
    entries = []
    archs = list(archs)
    for kind in kinds:
        for k, arch in enumerate(archs):
            if kind != "helpful" and k > 0:
                continue  # one harmful and one unrelated source are enough
            prefix = {"helpful": "digits", "harmful": "shuffled", "unrelated": "synthetic"}[kind]
            name = f"{prefix}-{arch}"
            path = zoo_dir / f"{name}.safetensors"
            if name in known and path.exists() and path.with_suffix(".json").exists():
                e = known[name]
                entries.append(ZooEntry(name, f"timm:{arch}@{path}", kind, e["source_accuracy"]))
                continue
            if kind == "helpful":
                imgs, labs = images[src], y[src]
            elif kind == "harmful":
                imgs, labs = images[src], rng.permutation(y[src])
            else:
                imgs, labs = synthetic_bars(900, seed=7)
            if kind == "harmful":
                acc = pretrain(arch, imgs, labs, path, epochs=8, lr=0.3, one_cycle=False)
            else:
                acc = pretrain(arch, imgs, labs, path, epochs=epochs)
            entries.append(ZooEntry(name, f"timm:{arch}@{path}", kind, acc))
            known[name] = {"name": name, "kind": kind, "source_accuracy": acc}
    zoo_dir.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(list(known.values()), indent=1))
    return entries


def write_target_task(root: Path, per_class: int | Sequence[int] = 20, seed: int = 0,
                      shift: str | None = None) -> Path:
    """Digits 5–9 as a pre-split folder: ``per_class`` train images per class, the rest half val, half test.

    ``per_class``: one count for every class, or five counts (digits 5 to 9 in order) for imbalanced
    training classes. ``shift``: ``"invert"`` or ``"rotate"`` applies a domain shift to the target images.
    """
    images, y = digits_arrays()
    if shift == "invert":
        images = 255 - images
    elif shift == "rotate":
        images = np.rot90(images, k=1, axes=(1, 2)).copy()
    elif shift is not None:
        raise ValueError(f"shift must be None, 'invert' or 'rotate', got {shift!r}")
    counts = [per_class] * 5 if isinstance(per_class, int) else [int(n) for n in per_class]
    if len(counts) != 5 or min(counts) < 1:
        raise ValueError(f"per_class must be a positive count or five of them, got {per_class!r}")
    rng = np.random.default_rng(seed)
    root = Path(root)
    for c, n in zip(range(5, 10), counts, strict=True):
        idx = rng.permutation(np.flatnonzero(y == c))
        tr, rest = idx[:n], idx[n:]
        va, te = rest[: len(rest) // 2], rest[len(rest) // 2:]
        for split, ids in (("train", tr), ("val", va), ("test", te)):
            write_images(root / split, images[ids], [str(c)] * len(ids), names=[f"{i:04d}" for i in ids])
    return root
