"""The edits trainers make to their images, as functions of (PIL RGB image, rng) -> (image, save format, params).

Used by the duplicate tests (``tests/test_dupes.py``) and the duplicate benchmark (``bench/bench_dupes.py``), so
both judge kiln on the same near copies: resized, re-encoded between JPEG/PNG/WebP, brightened, darkened,
contrast changed, mirrored, cropped (up to 10 % per side), rotated a few degrees (straightened: cropped to the
largest same-shape window, as photo editors do) and with a caption/watermark drawn over it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

Edit = Callable[[Image.Image, random.Random], tuple[Image.Image, str, dict[str, object]]]


def resize(image: Image.Image, rng: random.Random) -> tuple[Image.Image, str, dict[str, object]]:
    scale = rng.uniform(0.5, 0.8)
    size = (max(32, round(image.width * scale)), max(32, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS), "JPEG", {"quality": 92}


def jpeg(image: Image.Image, rng: random.Random) -> tuple[Image.Image, str, dict[str, object]]:
    return image, "JPEG", {"quality": rng.randint(55, 80)}


def png(image: Image.Image, rng: random.Random) -> tuple[Image.Image, str, dict[str, object]]:
    return image, "PNG", {"compress_level": 6}


def webp(image: Image.Image, rng: random.Random) -> tuple[Image.Image, str, dict[str, object]]:
    return image, "WEBP", {"quality": rng.randint(60, 85)}


def brighten(image: Image.Image, rng: random.Random) -> tuple[Image.Image, str, dict[str, object]]:
    return ImageEnhance.Brightness(image).enhance(rng.uniform(1.12, 1.3)), "JPEG", {"quality": 92}


def darken(image: Image.Image, rng: random.Random) -> tuple[Image.Image, str, dict[str, object]]:
    return ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 0.85)), "JPEG", {"quality": 92}


def contrast(image: Image.Image, rng: random.Random) -> tuple[Image.Image, str, dict[str, object]]:
    factor = rng.choice([rng.uniform(1.2, 1.4), rng.uniform(0.7, 0.82)])
    return ImageEnhance.Contrast(image).enhance(factor), "JPEG", {"quality": 92}


def flip(image: Image.Image, rng: random.Random) -> tuple[Image.Image, str, dict[str, object]]:
    return ImageOps.mirror(image), "JPEG", {"quality": 92}


def crop(image: Image.Image, rng: random.Random) -> tuple[Image.Image, str, dict[str, object]]:
    w, h = image.size
    left, right, top, bottom = (rng.uniform(0.0, 0.10) for _ in range(4))
    box = (round(left * w), round(top * h), round(w - right * w), round(h - bottom * h))
    return image.crop(box), "JPEG", {"quality": 92}


def rotate(image: Image.Image, rng: random.Random) -> tuple[Image.Image, str, dict[str, object]]:
    angle = rng.choice([-1, 1]) * rng.uniform(1.0, 5.0)
    w, h = image.size
    turned = image.rotate(angle, resample=Image.Resampling.BICUBIC)
    a = math.radians(abs(angle))
    scale = min(w / (w * math.cos(a) + h * math.sin(a)), h / (w * math.sin(a) + h * math.cos(a)))
    cw, ch = w * scale, h * scale
    box = (round((w - cw) / 2), round((h - ch) / 2), round((w + cw) / 2), round((h + ch) / 2))
    return turned.crop(box).resize((w, h), Image.Resampling.LANCZOS), "JPEG", {"quality": 92}


def watermark(image: Image.Image, rng: random.Random) -> tuple[Image.Image, str, dict[str, object]]:
    out = image.convert("RGBA")
    layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    w, h = out.size
    size = max(12, round(h * rng.uniform(0.05, 0.09)))
    font = ImageFont.load_default(size=size)
    text = rng.choice(["© kiln photo", "@my_art_account", "SAMPLE", "www.example-photos.net"])
    x, y = round(w * rng.uniform(0.03, 0.45)), round(h * rng.uniform(0.05, 0.85))
    alpha = rng.randint(140, 230)
    draw.text((x, y), text, font=font, fill=(255, 255, 255, alpha), stroke_width=max(1, size // 14),
              stroke_fill=(0, 0, 0, alpha // 2))  # fmt: skip
    return Image.alpha_composite(out, layer).convert("RGB"), "JPEG", {"quality": 92}


EDITS: dict[str, Edit] = {
    "resize": resize,
    "jpeg": jpeg,
    "png": png,
    "webp": webp,
    "brighten": brighten,
    "darken": darken,
    "contrast": contrast,
    "flip": flip,
    "crop": crop,
    "rotate": rotate,
    "watermark": watermark,
}

EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


def save_edit(image: Image.Image, name: str, rng: random.Random, folder: Path, stem: str) -> str:
    """Apply edit ``name`` and save it as ``<stem>.<ext>`` in ``folder``; returns the file name."""
    edited, fmt, params = EDITS[name](image, rng)
    file_name = f"{stem}.{EXTENSIONS[fmt]}"
    edited.save(folder / file_name, fmt, **params)
    return file_name
