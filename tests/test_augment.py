"""Batch augmentation of cached images: torchvision's numbers image by image, timm's draws, its own RNG."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from autotransfer.augment import CropFlipJitter

CPU = torch.device("cpu")
JITTER = dict(brightness=(0.6, 1.4), contrast=(0.6, 1.4), saturation=(0.6, 1.4))
ADJUST = {"brightness": F.adjust_brightness, "contrast": F.adjust_contrast, "saturation": F.adjust_saturation}


def squares(n: int, side: int, channels: int, seed: int = 0) -> np.ndarray:
    """Smooth images with structure (gradients + noise), uint8 ``(n, side, side, channels)``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    base = np.stack([np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in range(channels)], -1)
    out = (base[None] * 90 + 128 + rng.normal(0, 25, (n, side, side, channels))).clip(0, 255)
    return out.astype(np.uint8)


def torchvision_one(square: np.ndarray, d, aug: CropFlipJitter) -> torch.Tensor:
    """The same draws through torchvision, image by image: resized_crop, hflip, to_tensor, adjust_*, normalize."""
    img = Image.fromarray(square[..., 0] if square.shape[-1] == 1 else square)
    img = F.resized_crop(img, d.top, d.left, d.height, d.width, list(aug.size), InterpolationMode(d.interpolation))
    if d.flip:
        img = F.hflip(img)
    x = F.to_tensor(img)
    ops = [op for op, _ in aug.jitter]
    for k in d.order:
        x = ADJUST[ops[k]](x, d.factors[k])
    return F.normalize(x, list(aug.mean), list(aug.std))


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("jitter", [True, False])
def test_a_batch_equals_torchvision_image_by_image(channels, jitter):
    mean, std = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) if channels == 3 else ((0.5,), (0.25,))
    aug = CropFlipJitter(size=(40, 36), mean=mean, std=std, hflip=0.5, interpolations=("bicubic", "bilinear"),
                         **(JITTER if jitter else {}))
    images = squares(12, 50, channels)
    index = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8])
    draws = aug.draw(np.random.default_rng(1), len(index), 50, 50)
    assert {d.flip for d in draws} == {True, False} and len({d.interpolation for d in draws}) == 2
    if jitter and channels == 3:
        assert len({d.order for d in draws}) >= 4  # images jitter in their own orders
    out = aug.finish(aug.crop(images, index, draws), CPU)
    assert out.shape == (12, channels, 40, 36) and out.dtype == torch.float32 and out.is_contiguous()
    want = torch.stack([torchvision_one(images[i], d, aug) for i, d in zip(index, draws, strict=True)])
    torch.testing.assert_close(out, want, atol=2e-5, rtol=0)


def test_threads_give_the_same_batch():
    from concurrent.futures import ThreadPoolExecutor

    aug = CropFlipJitter(size=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, hflip=0.5, **JITTER)
    images, index = squares(20, 40, 3), np.arange(20)
    one = aug(images, index, np.random.default_rng(7), CPU)
    with ThreadPoolExecutor(3) as pool:
        three = aug.finish(aug.prepare(images, index, np.random.default_rng(7), pool=pool, threads=3), CPU)
    assert torch.equal(one, three)


def test_draws_come_from_the_generator_alone():
    aug = CropFlipJitter(size=(24, 24), mean=(0.5,) * 3, std=(0.5,) * 3, hflip=0.5, **JITTER)
    images, index = squares(8, 32, 3), np.arange(8)
    outs = []
    for g in (0, 1):  # the global generators differ between the two calls
        random.seed(g)
        np.random.seed(g)
        torch.manual_seed(g)
        outs.append(aug(images, index, np.random.default_rng(5), CPU))
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], aug(images, index, np.random.default_rng(6), CPU))


@pytest.mark.slow  # thousands of draws from both implementations
def test_draws_follow_timms_distribution():
    """Crop area within ``scale``, aspect ratio within ``ratio``, inside the square; flips at ``hflip``;
    factors within their ranges; all six jitter orders."""
    aug = CropFlipJitter(size=(16, 16), mean=(0.5,) * 3, std=(0.5,) * 3, scale=(0.3, 0.9), ratio=(0.8, 1.25),
                         hflip=0.3, **JITTER)
    side, n = 168, 4000
    draws = aug.draw(np.random.default_rng(0), n, side, side)
    area = np.array([d.height * d.width for d in draws]) / side**2
    aspect = np.array([d.width / d.height for d in draws])
    assert area.min() >= 0.3 - 0.02 and area.max() <= 0.9 + 0.02  # rounding to whole pixels
    assert aspect.min() >= 0.8 - 0.02 and aspect.max() <= 1.25 + 0.02
    assert all(0 <= d.top <= side - d.height and 0 <= d.left <= side - d.width for d in draws)
    flips = sum(d.flip for d in draws)
    assert abs(flips - 0.3 * n) < 4 * math.sqrt(n * 0.3 * 0.7)
    factors = np.array([d.factors for d in draws])
    assert factors.min() >= 0.6 and factors.max() <= 1.4 and abs(factors.mean() - 1.0) < 0.02
    assert len({d.order for d in draws}) == 6
    # timm's own draw, for comparison: the same mean crop area within sampling error
    rrc = T.RandomResizedCrop(16, scale=(0.3, 0.9), ratio=(0.8, 1.25))
    torch.manual_seed(0)
    timm_area = np.mean([np.prod(rrc.get_params(torch.zeros(3, side, side), rrc.scale, rrc.ratio)[2:]) / side**2
                         for _ in range(n)])
    assert abs(area.mean() - timm_area) < 4 * area.std() / math.sqrt(n) * math.sqrt(2)


def test_a_square_smaller_than_every_crop_falls_back_to_the_centre():
    aug = CropFlipJitter(size=(8, 8), mean=(0.5,), std=(0.5,), scale=(2.0, 3.0), ratio=(1.0, 1.0))
    d = aug.draw(np.random.default_rng(0), 1, 20, 10)[0]
    assert (d.top, d.left, d.height, d.width) == (5, 0, 10, 10)  # the centred square of a 20 x 10 image
