"""Loading an image for training: EXIF rotation, first frame, alpha over white, CMYK/16-bit to RGB, then the
bucket's resize and crop (centre, or random with ``random_crop``) and an optional horizontal flip."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageOps

if TYPE_CHECKING:
    import torch


def load_rgb(path: Path) -> Image.Image:
    """The image as 8-bit RGB the way a viewer shows it."""
    with Image.open(path) as opened:
        opened.seek(0)  # first frame of animations
        img = ImageOps.exif_transpose(opened)  # also detaches from the file
        if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            img = img.point(lambda v: v / 256).convert("L") if img.mode != "F" else img.convert("L")
        has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
        if has_alpha:
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return img.convert("RGB")


@dataclass(frozen=True, slots=True)
class Placement:
    """How an image lands in its bucket: size after resize, crop origin (left, top) and flip."""

    original: tuple[int, int]
    resized: tuple[int, int]
    crop: tuple[int, int]
    bucket: tuple[int, int]
    flip: bool = False

    @property
    def crop_top_left(self) -> tuple[int, int]:
        """SDXL crop conditioning (top, left), measured in the (possibly mirrored) resized image."""
        left, top = self.crop
        if self.flip:
            left = self.resized[0] - left - self.bucket[0]
        return (top, left)


def place(
    original: tuple[int, int], resized: tuple[int, int], centre_crop: tuple[int, int], bucket: tuple[int, int],
    *, random_crop: bool, flip: bool, rng: random.Random,
) -> Placement:
    crop = centre_crop
    if random_crop:
        crop = (rng.randint(0, max(resized[0] - bucket[0], 0)), rng.randint(0, max(resized[1] - bucket[1], 0)))
    return Placement(original=original, resized=resized, crop=crop, bucket=bucket, flip=flip)


def render(img: Image.Image, placement: Placement) -> Image.Image:
    """Resize (Lanczos), crop to the bucket, mirror if asked."""
    if img.size != placement.resized:
        img = img.resize(placement.resized, Image.Resampling.LANCZOS)
    left, top = placement.crop
    w, h = placement.bucket
    img = img.crop((left, top, left + w, top + h))
    if placement.flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img


def to_tensor(img: Image.Image) -> torch.Tensor:
    """(3, H, W) float32 in [-1, 1]."""
    import numpy as np
    import torch

    array = np.asarray(img, dtype=np.uint8).copy()
    return torch.from_numpy(array).permute(2, 0, 1).float().div(127.5).sub(1.0)
