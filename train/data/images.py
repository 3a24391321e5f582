"""Loading an image for training: EXIF rotation, first frame, alpha over white, CMYK/16-bit to RGB, then the
bucket's resize and crop (centre, or random with ``random_crop``) and an optional horizontal flip; kohya's
color augmentation; loss masks from the alpha channel or a same-named mask image, placed like the image."""

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


def color_augment(img: Image.Image, rng: random.Random) -> Image.Image:
    """kohya's ``color_aug`` (``AugHelper``): a third of the time, half a hue shift of up to 8 (of cv2's 180) and
    half kohya's gamma, ``pixel ** g`` on the 0-255 values with g in [0.95, 1.05], clipped (as kohya computes
    it, which darkens or brightens strongly)."""
    import numpy as np

    if rng.random() > 0.33:
        return img
    if rng.random() > 0.5:
        shift = rng.uniform(-8, 8) / 180 * 256  # PIL's hue runs 0-255
        hsv = np.asarray(img.convert("HSV")).astype(np.float64)
        hsv[:, :, 0] = (hsv[:, :, 0] + shift) % 256
        return Image.fromarray(hsv.astype(np.uint8), mode="HSV").convert("RGB")
    gamma = rng.uniform(0.95, 1.05)
    values = np.asarray(img, dtype=np.float64) ** gamma
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))


MASK_EXTENSIONS = (".png", ".webp", ".jpg", ".jpeg", ".bmp")


def mask_source(path: Path, conditioning_dir: Path | None) -> Image.Image | None:
    """The loss mask of an image as an 'L' image of the image's own size: the same-named image in
    ``conditioning_dir`` (its red channel, kohya's masked loss), else the image's alpha channel; None when
    the image has no alpha (it counts fully)."""
    size = None
    with Image.open(path) as opened:
        opened.seek(0)
        img = ImageOps.exif_transpose(opened)
        size = img.size
        if conditioning_dir is None:
            has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
            return img.convert("RGBA").getchannel("A") if has_alpha else None
    for ext in MASK_EXTENSIONS:
        candidate = conditioning_dir / (path.stem + ext)
        if candidate.is_file():
            with Image.open(candidate) as mask:
                red = ImageOps.exif_transpose(mask).convert("RGB").getchannel("R")
            return red if red.size == size else red.resize(size, Image.Resampling.BILINEAR)
    raise FileNotFoundError(f"no mask image for {path.name} in {conditioning_dir} (kohya's masked loss needs one "
                            "per image, same name)")


def mask_tensor(mask: Image.Image | None, placement: Placement) -> torch.Tensor:
    """(H, W) float32 in [0, 1] at the bucket size: the mask resized, cropped and flipped like its image
    (all ones without a mask)."""
    import numpy as np
    import torch

    if mask is None:
        return torch.ones((placement.bucket[1], placement.bucket[0]), dtype=torch.float32)
    placed = render(mask, placement)
    return torch.from_numpy(np.asarray(placed, dtype=np.uint8).copy()).float().div(255.0)
