"""The ``text-heavy`` check with a real text detector on real photographs: recall and false positives.

    .venv/bin/python bench/bench_textheavy.py --text-model /tmp/ppocr/ch_PP-OCRv4_det_infer.onnx
    .venv/bin/python bench/bench_textheavy.py --text-model M --data /tmp/kiln-text --per-photo 10 --planted 80

Sets (made once per ``--data`` folder), all from scikit-image's photographs at their own size or smaller:

* ``clean``: the colour and greyscale photographs of ``bench/bench_quality.py`` less ``page`` and ``text``
  (which are text), with crops and downscales, saved as JPEG, PNG or WebP;
* ``realtext``: ``page.png`` (a scanned page) and ``text.png`` (lettering photographed on a wall), with crops;
* ``planted``: clean copies with text drawn on them (PIL, the DejaVu fonts when present, else PIL's default):
  captions on a bar, subtitles, meme text top and bottom, a sign panel, a poster of lines, at opacity 0.5-1,
  in white, black, yellow or a colour, sizes 4-12% of the image height;
* ``small``: small marks the watermark check can miss when they are not repeated: the marks of
  ``tests/watermarks.py`` (opaque corner text, faint large text, a logo) and a tiny corner credit line.

The images go through kiln's own code path (``Dataset`` with ``ScanConfig(text_model=...)``,
``Dataset.text_areas``). It prints each set's spread of text areas and, per threshold, the share of each set
flagged: recall on ``planted`` and ``realtext``, the false-positive rate on ``clean``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_quality import COLOUR, GREY, _save, _variants  # noqa: E402
from photoset import skimage_photo_dir  # noqa: E402

from curator.dataset import Dataset  # noqa: E402
from curator.scan.config import QualityThresholds, ScanConfig  # noqa: E402
from curator.textdetect.config import TextModelConfig  # noqa: E402
from tests.watermarks import STYLES, plant  # noqa: E402

TEXT_PHOTOS = ("page.png", "text.png")
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSerif-Bold.ttf",
         "DejaVuSansCondensed-Bold.ttf")  # fmt: skip
WORDS = ["when", "the", "dataset", "has", "more", "text", "than", "picture", "the", "model", "learns", "letters", "instead", "of", "faces", "summer", "sale", "open", "daily", "free", "entry", "tonight", "only", "best", "price", "in", "town"]  # fmt: skip
COLOURS = ((255, 255, 255), (0, 0, 0), (255, 230, 0), (230, 40, 40), (40, 90, 220))
PLANTED_STYLES = ("caption", "subtitle", "meme", "sign", "poster")


def _font(rng: random.Random, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    size = max(8, size)
    names = [n for n in FONTS if (FONT_DIR / n).exists()]
    if names and rng.random() < 0.8:
        return ImageFont.truetype(str(FONT_DIR / rng.choice(names)), size)
    return ImageFont.load_default(size=size)


def _phrase(rng: random.Random, words: int) -> str:
    start = rng.randrange(len(WORDS))
    return " ".join(WORDS[(start + k) % len(WORDS)] for k in range(words))


def _line(draw: ImageDraw.ImageDraw, rng: random.Random, w: int, size: int, y: int, fill: tuple[int, ...],
          centre: bool = True, stroke: int = 0, upper: bool = False, words: tuple[int, int] = (3, 7)) -> None:
    font = _font(rng, size)
    text = _phrase(rng, rng.randint(*words))
    text = text.upper() if upper else text
    while draw.textbbox((0, 0), text, font=font)[2] > w * 0.94 and " " in text:
        text = text.rsplit(" ", 1)[0]
    width = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)[2]
    x = (w - width) // 2 if centre else round(w * 0.04)
    dark = sum(fill[:3]) > 380
    draw.text((x, y), text, font=font, fill=fill, stroke_width=stroke,
              stroke_fill=(0, 0, 0, fill[3]) if dark else (255, 255, 255, fill[3]))  # fmt: skip


def plant_text(image: Image.Image, style: str, rng: random.Random) -> Image.Image:
    """A copy of ``image`` with text of ``style`` (see the module docstring) drawn on it."""
    base = image.convert("RGBA")
    w, h = base.size
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    alpha = rng.choice((128, 180, 230, 255))
    colour = (*rng.choice(COLOURS), alpha)
    size = round(h * rng.uniform(0.05, 0.12))
    if style == "caption":  # a bar with one or two lines at the bottom
        lines = rng.randint(1, 2)
        top = h - round(size * 1.4 * lines) - round(h * 0.03)
        draw.rectangle((0, top, w, h), fill=(0, 0, 0, rng.choice((160, 255))))
        for n in range(lines):
            _line(draw, rng, w, size, top + round(size * 0.2) + round(size * 1.3 * n), (255, 255, 255, 255))
    elif style == "subtitle":  # no bar: white or yellow with an outline
        fill = (*rng.choice(((255, 255, 255), (255, 230, 0))), alpha)
        for n in range(rng.randint(1, 2)):
            _line(draw, rng, w, size, h - round(size * 1.3 * (2 - n)) - round(h * 0.05), fill, stroke=max(1, size // 14))
    elif style == "meme":  # big upper-case text top and bottom
        big = round(h * rng.uniform(0.08, 0.14))
        fill = (255, 255, 255, alpha)
        _line(draw, rng, w, big, round(h * 0.03), fill, stroke=max(2, big // 12), upper=True)
        _line(draw, rng, w, big, h - round(big * 1.3) - round(h * 0.03), fill, stroke=max(2, big // 12), upper=True)
    elif style == "sign":  # a panel with lines of text somewhere in the picture
        pw, ph = round(w * rng.uniform(0.35, 0.6)), round(h * rng.uniform(0.25, 0.4))
        x, y = rng.randint(0, w - pw), rng.randint(0, h - ph)
        panel = rng.choice(((250, 250, 240), (20, 60, 30), (200, 30, 30)))
        draw.rectangle((x, y, x + pw, y + ph), fill=(*panel, 255))
        ink = (0, 0, 0, 255) if sum(panel) > 380 else (255, 255, 255, 255)
        lines = rng.randint(2, 4)
        size = max(8, round(ph / (lines * 1.5)))
        sub = ImageDraw.Draw(layer)
        for n in range(lines):
            font = _font(rng, size)
            text = _phrase(rng, rng.randint(2, 4))
            while sub.textbbox((0, 0), text, font=font)[2] > pw * 0.92 and " " in text:
                text = text.rsplit(" ", 1)[0]
            sub.text((x + round(pw * 0.04), y + round(size * 0.3) + round(size * 1.45 * n)), text, font=font, fill=ink)
    elif style == "poster":  # lines of text over much of the picture
        lines = rng.randint(4, 8)
        size = round(h / (lines * rng.uniform(1.6, 2.4)))
        for n in range(lines):
            _line(draw, rng, w, size, round(h * 0.05) + round(h * 0.9 / lines * n), colour,
                  centre=rng.random() < 0.5, stroke=rng.choice((0, max(1, size // 14))))  # fmt: skip
    else:
        raise ValueError(f"unknown style {style!r}; styles: {', '.join(PLANTED_STYLES)}")
    return Image.alpha_composite(base, layer).convert("RGB")


def tiny_credit(image: Image.Image, rng: random.Random) -> Image.Image:
    """A small credit line (2-3.5% of the height) in a corner, opaque or faint."""
    base = image.convert("RGBA")
    w, h = base.size
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    font = _font(rng, round(h * rng.uniform(0.02, 0.035)))
    text = rng.choice(("© kiln photo 2026", "photo: J. Smith", "www.example-stock.com", "kiln studio"))
    box = draw.textbbox((0, 0), text, font=font)
    fill = (*rng.choice(COLOURS[:3]), rng.choice((110, 255)))
    draw.text((w - box[2] - round(w * 0.02), h - box[3] - round(h * 0.02)), text, font=font, fill=fill)
    return Image.alpha_composite(base, layer).convert("RGB")


def build(data: Path, per_photo: int, planted: int) -> None:
    if (data / "done").exists():
        return
    shutil.rmtree(data, ignore_errors=True)
    rng = random.Random(0)
    folders = {name: data / "set" / f"1_{name}" for name in ("clean", "realtext", "planted", "small")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    pool: list[Image.Image] = []
    for name in (*COLOUR, *GREY):
        with Image.open(skimage_photo_dir() / name) as image:
            photo = image.convert("RGB" if name in COLOUR else "L")
        variants = _variants(photo, rng, per_photo)
        kind = "realtext" if name in TEXT_PHOTOS else "clean"
        for n, variant in enumerate(variants):
            _save(variant, folders[kind], f"{Path(name).stem}_{n:02d}", rng)
        if kind == "clean":
            pool += [v.convert("RGB") for v in variants]
    for n in range(planted):
        style = PLANTED_STYLES[n % len(PLANTED_STYLES)]
        plant_text(rng.choice(pool), style, rng).save(folders["planted"] / f"{style}_{n:03d}.png")
    for n in range(max(8, planted // 2)):
        image = rng.choice(pool)
        marked = tiny_credit(image, rng) if n % 4 == 3 else plant(image, STYLES[n % 4 % len(STYLES)])
        style = "credit" if n % 4 == 3 else STYLES[n % 4 % len(STYLES)]
        marked.save(folders["small"] / f"{style}_{n:03d}.png")
    (data / "done").write_text("ok")


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    a = np.asarray(values)
    return (f"min {a.min():.3f}  p50 {np.median(a):.3f}  p95 {np.percentile(a, 95):.3f}  max {a.max():.3f}  "
            f"(p5 {np.percentile(a, 5):.3f})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text-model", type=Path, required=True, help="the .onnx text detector")
    parser.add_argument("--text-model-preset", default="db", choices=["db", "doctr", "east"])
    parser.add_argument("--text-model-side", type=int, default=TextModelConfig.model_fields["side"].default)
    parser.add_argument("--pixel-threshold", type=float, default=TextModelConfig.model_fields["pixel_threshold"].default)
    parser.add_argument("--data", type=Path, default=None, help="where the sets are made (default: a temp folder)")
    parser.add_argument("--per-photo", type=int, default=10, help="clean images per source photograph")
    parser.add_argument("--planted", type=int, default=80, help="photographs with planted text")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    args = parser.parse_args()
    data = args.data or Path(tempfile.mkdtemp(prefix="kiln-text-"))
    build(data, args.per_photo, args.planted)
    model = TextModelConfig(path=args.text_model, preset=args.text_model_preset, side=args.text_model_side,
                            pixel_threshold=args.pixel_threshold)  # fmt: skip
    with Dataset.open(data / "set", config=ScanConfig(text_model=model, workers=args.workers), quiet=True) as ds:
        ds.scan(progress=False)
        if _has_scores(ds):
            with ds.index.transaction("clearing the cached text scores") as tx:
                tx.execute("DELETE FROM text_scores")
        start = time.perf_counter()
        areas = ds.text_areas()
        took = time.perf_counter() - start
    groups: dict[str, dict[str, float]] = {}
    for path, area in areas.items():
        folder, name = path.split("/", 1)
        groups.setdefault(folder.split("_", 1)[1], {})[name] = area
    print(f"model {model.path.name}, preset {model.preset}, side {model.side}, pixel threshold "
          f"{model.pixel_threshold}: {len(areas)} images in {took:.1f} s ({took / max(1, len(areas)) * 1000:.0f} "
          f"ms each), load {Path('/proc/loadavg').read_text().split()[0]}")  # fmt: skip
    for name in ("clean", "realtext", "planted", "small"):
        print(f"  {name:9s} ({len(groups.get(name, {})):3d}): {_spread(list(groups.get(name, {}).values()))}")
    for name in ("planted", "small"):
        styles: dict[str, list[float]] = {}
        for stem, area in groups.get(name, {}).items():
            styles.setdefault(stem.split("_")[0], []).append(area)
        for style, values in sorted(styles.items()):
            print(f"    {name}/{style:9s} ({len(values):2d}): {_spread(values)}")
    default = QualityThresholds().text_heavy
    print("threshold  planted flagged  realtext flagged  small marks flagged  clean false positives")
    for level in sorted({0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.1, 0.15, 0.2, default or 0.1}):
        share = {k: sum(a > level for a in v.values()) for k, v in groups.items()}
        size = {k: len(v) for k, v in groups.items()}
        mark = "  <- default" if level == default else ""
        print(f"  {level:5.2f}    {share.get('planted', 0):3d}/{size.get('planted', 0)}"
              f"          {share.get('realtext', 0):3d}/{size.get('realtext', 0)}"
              f"            {share.get('small', 0):3d}/{size.get('small', 0)}"
              f"              {share.get('clean', 0):3d}/{size.get('clean', 0)} "
              f"({share.get('clean', 0) / max(1, size.get('clean', 0)):.1%}){mark}")  # fmt: skip
    worst = sorted(groups.get("clean", {}).items(), key=lambda kv: -kv[1])[:5]
    print("  highest clean:", ", ".join(f"{k} {v:.3f}" for k, v in worst))
    low = sorted(groups.get("planted", {}).items(), key=lambda kv: kv[1])[:5]
    print("  lowest planted:", ", ".join(f"{k} {v:.3f}" for k, v in low))


def _has_scores(ds: Dataset) -> bool:
    """Scores cached by an earlier run: cleared so the time printed is the detector's."""
    return bool(ds.index.conn.execute("SELECT name FROM sqlite_master WHERE name = 'text_scores'").fetchone())


if __name__ == "__main__":
    main()
