"""Marks planted on real photographs, for the watermark tests and ``bench/bench_quality.py``.

``plant(image, style)`` draws a mark sized and placed relative to the image (as a photo site stamps its
pictures, whatever their size):

* ``text``: "© kiln photo" in opaque white with a dark shadow, bottom-right corner;
* ``faint``: "KILN SAMPLE" in white at 50% opacity (``FAINT_ALPHA``), large, across the bottom centre;
* ``logo``: a ringed "K" badge, opaque, top-left corner.

``text_page(image)`` covers a photograph with lines of caption text (a meme, a screenshot, a poster).
"""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

STYLES = ("text", "faint", "logo")
FAINT_ALPHA = 128  # the faint mark: white at 50% opacity


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, size))


def plant(image: Image.Image, style: str) -> Image.Image:
    """A copy of ``image`` (RGB) with the mark ``style`` (see the module docstring)."""
    base = image.convert("RGBA")
    w, h = base.size
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    if style == "text":
        font = _font(round(h * 0.06))
        text = "© kiln photo"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        x, y = w - (right - left) - round(w * 0.03), h - (bottom - top) - round(h * 0.04)
        draw.text((x + 2, y + 2), text, font=font, fill=(0, 0, 0, 200))
        draw.text((x, y), text, font=font, fill=(255, 255, 255, 255))
    elif style == "faint":
        font = _font(round(h * 0.11))
        text = "KILN SAMPLE"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        x, y = (w - (right - left)) // 2, h - (bottom - top) - round(h * 0.12)
        draw.text((x, y), text, font=font, fill=(255, 255, 255, FAINT_ALPHA))
    elif style == "logo":
        side = round(min(w, h) * 0.14)
        x, y = round(w * 0.03), round(h * 0.03)
        draw.ellipse((x, y, x + side, y + side), fill=(200, 30, 30, 255), outline=(255, 255, 255, 255),
                     width=max(2, side // 12))  # fmt: skip
        font = _font(round(side * 0.7))
        draw.text((x + side // 2, y + side // 2), "K", font=font, fill=(255, 255, 255, 255), anchor="mm")
    else:
        raise ValueError(f"unknown mark style {style!r}; styles: {', '.join(STYLES)}")
    return Image.alpha_composite(base, layer).convert("RGB")


def text_page(image: Image.Image, lines: int = 7) -> Image.Image:
    """``image`` with ``lines`` lines of black-on-white caption text over most of it."""
    canvas = image.convert("RGB").copy()
    w, h = canvas.size
    draw = ImageDraw.Draw(canvas)
    font = _font(round(h / (lines * 2.2)))
    words = "when the dataset has more text than picture the model learns letters instead of faces"
    step = h / (lines + 1)
    for n in range(lines):
        y = round(step * (n + 0.6))
        text = " ".join(words.split()[n % 5 :][:7])
        left, top, right, bottom = draw.textbbox((round(w * 0.05), y), text, font=font)
        draw.rectangle((left - 4, top - 3, right + 4, bottom + 3), fill=(255, 255, 255))
        draw.text((round(w * 0.05), y), text, font=font, fill=(0, 0, 0))
    return canvas
