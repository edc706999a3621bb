"""Image bytes -> pixel tensors, for training (random crop) and evaluation (centre crop).

Normalisation is the reference's (OpenAI CLIP) mean/std. Training views leave the DataLoader's
workers as uint8 (a quarter of float32's bytes to collate, send and copy to the device) and
are normalised on the device by the training loop (``normalise``); evaluation views are
normalised here. The training augmentation is
RandomResizedCrop with the reference's area scale (0.9, 1.0) and aspect ratio (3/4, 4/3),
implemented with Pillow and a seeded ``torch.Generator`` (no torchvision), so a crop is a pure
function of the generator's seed. Evaluation resizes the short side (bicubic) and centre-crops.
"""
from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
RATIO = (3 / 4, 4 / 3)


def decode(png: bytes) -> Image.Image:
    """Decode image bytes to RGB; ``ValueError`` naming the problem when they are not an image."""
    try:
        with Image.open(io.BytesIO(png)) as im:
            return im.convert("RGB")
    except (OSError, SyntaxError) as err:  # UnidentifiedImageError is an OSError
        raise ValueError(f"undecodable image ({len(png)} bytes): {err}") from None


def to_uint8(im: Image.Image) -> torch.Tensor:
    """RGB image -> uint8 tensor [3, H, W]."""
    return torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1)


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels [..., 3, H, W] -> float32 normalised with the reference mean/std, on their
    device."""
    mean = torch.tensor(MEAN, device=pixels.device).view(3, 1, 1)
    std = torch.tensor(STD, device=pixels.device).view(3, 1, 1)
    return (pixels.float() / 255.0 - mean) / std


def to_tensor(im: Image.Image) -> torch.Tensor:
    """RGB image -> float tensor [3, H, W], normalised with the reference mean/std."""
    return normalise(to_uint8(im))


def crop_box(width: int, height: int, scale: tuple[float, float],
             generator: torch.Generator) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (left, top, right, bottom): area fraction in ``scale``,
    log-uniform aspect ratio in (3/4, 4/3); after 10 misses the largest centred box that fits."""
    area = width * height
    log_lo, log_hi = math.log(RATIO[0]), math.log(RATIO[1])
    for _ in range(10):
        u = torch.rand(4, generator=generator).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        ratio = math.exp(log_lo + (log_hi - log_lo) * u[1])
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            left = int(u[2] * (width - w + 1))
            top = int(u[3] * (height - h + 1))
            return left, top, left + w, top + h
    ratio = width / height
    if ratio < RATIO[0]:
        w, h = width, round(width / RATIO[0])
    elif ratio > RATIO[1]:
        w, h = round(height * RATIO[1]), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def train_pixels(png: bytes, size: int, scale: tuple[float, float],
                 generator: torch.Generator) -> torch.Tensor:
    """Training view: random resized crop to ``size`` x ``size`` (bicubic), uint8 [3, H, W]
    (``normalise`` it before the model)."""
    im = decode(png)
    box = crop_box(im.width, im.height, scale, generator)
    return to_uint8(im.resize((size, size), Image.BICUBIC, box=box))


def eval_pixels(png: bytes, size: int) -> torch.Tensor:
    """Evaluation view: short side resized to ``size`` (bicubic), centre crop, normalised."""
    im = decode(png)
    s = size / min(im.width, im.height)
    w, h = max(size, round(im.width * s)), max(size, round(im.height * s))
    im = im.resize((w, h), Image.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    return to_tensor(im.crop((left, top, left + size, top + size)))


def eval_batch(pngs: list[bytes], size: int) -> torch.Tensor:
    """Evaluation views of several images stacked into [n, 3, size, size]."""
    return torch.stack([eval_pixels(p, size) for p in pngs])
