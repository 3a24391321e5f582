"""Image -> model input, exactly as SmilingWolf's wd-tagger expects it.

Steps: decode (first frame, EXIF orientation applied), alpha composited on white, padded to a square on
white with the image centred, resized to the model's input size with BICUBIC, RGB -> BGR, float32 in
0..255 (no normalisation; the WD14 models do that themselves), HWC. The batch axis is added by the runner.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

WHITE = (255, 255, 255)


class ImageDecodeError(ValueError):
    """The file could not be decoded as an image."""


def to_rgb_on_white(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparency (alpha, palette transparency, LA) is composited on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bit by the type's range (PIL's own convert clips instead)
        arr = np.asarray(image, dtype=np.float64)
        scale = 255.0 / 65535.0 if image.mode.startswith("I;16") or arr.max(initial=0) > 255 else 1.0
        image = Image.fromarray(np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info or image.mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        canvas = Image.new("RGBA", image.size, WHITE + (255,))
        canvas.alpha_composite(image)
        return canvas.convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


def pad_square(image: Image.Image) -> Image.Image:
    """Pad to a square of the longer side on white, image centred (extra pixel goes right/bottom)."""
    w, h = image.size
    side = max(w, h)
    if w == h:
        return image
    canvas = Image.new("RGB", (side, side), WHITE)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def prepare_pil(image: Image.Image, width: int, height: int) -> np.ndarray:
    """A decoded PIL image -> HWC float32 BGR array of the model's size."""
    square = pad_square(to_rgb_on_white(image))
    if square.size != (width, height):
        square = square.resize((width, height), Image.Resampling.BICUBIC)
    rgb = np.asarray(square, dtype=np.float32)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def load_image(path: Path, width: int, height: int) -> np.ndarray:
    """Decode a file and prepare it for the tagger; any decode failure is an `ImageDecodeError`.

    JPEGs are decoded at a reduced DCT scale (`Image.draft`) when that still leaves at least the model's
    size on the short side: the result is then resized with BICUBIC as usual, at a fraction of the cost.
    """
    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft("RGB", (width, height))
            im.seek(0)
            im.load()
            upright = ImageOps.exif_transpose(im)
            return prepare_pil(upright, width, height)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError) as exc:
        raise ImageDecodeError(f"{type(exc).__name__}: {exc}") from exc
