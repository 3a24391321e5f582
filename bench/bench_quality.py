"""Image-quality checks on real photographs: how each threshold was chosen, false positives on a clean set.

    .venv/bin/python bench/bench_quality.py                 # builds the sets under a temp folder
    .venv/bin/python bench/bench_quality.py --data /tmp/kiln-quality --per-photo 20

Sets (made once per ``--data`` folder):

* clean colour: scikit-image's colour photographs (astronaut, chelsea, coffee, rocket, both motorcycle views,
  retina, immunohistochemistry, Hubble deep field) at their own size, plus crops (at least half of each side,
  never enlarged) and downscales of them, saved as JPEG (quality 88-95), PNG and WebP (90);
* clean grey: the greyscale photographs (camera, coins, moon, brick, grass, gravel, cell, page, text) the
  same way; a dataset of its own, so grayscale is not judged there;
* planted: for every check, copies of clean colour photographs with that defect planted (blur, darkening,
  over-exposure, a flat or single-colour image, greyscale, an aspect ratio between buckets, a low JPEG quality,
  letterbox/pillarbox bars, transparency), in the clean colour dataset, so they are judged next to it.

It prints, per check, the measured value's spread on the clean sets and on the planted copies, the default
threshold, the share of planted copies flagged and the false-positive rate on each clean set.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from photoset import skimage_photo_dir  # noqa: E402

from curator.checks.quality import quality_flags  # noqa: E402
from curator.dataset import Dataset  # noqa: E402
from curator.records import IMAGE_QUALITY_KINDS  # noqa: E402
from curator.scan.config import QualityThresholds  # noqa: E402

COLOUR = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png",
          "retina.jpg", "ihc.png", "hubble_deep_field.jpg")  # fmt: skip
GREY = ("camera.png", "coins.png", "moon.png", "brick.png", "grass.png", "gravel.png", "cell.png", "page.png", "text.png")
KINDS = (*IMAGE_QUALITY_KINDS, "alpha")


def _variants(image: Image.Image, rng: random.Random, count: int) -> list[Image.Image]:
    out = [image]
    w, h = image.size
    for _ in range(count - 1):
        if rng.random() < 0.5:
            cw, ch = rng.randint(w // 2, w), rng.randint(h // 2, h)
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            out.append(image.crop((x, y, x + cw, y + ch)))
        else:
            scale = rng.uniform(0.5, 0.95)
            out.append(image.resize((max(64, round(w * scale)), max(64, round(h * scale))), Image.Resampling.LANCZOS))
    return out


def _save(image: Image.Image, folder: Path, stem: str, rng: random.Random) -> None:
    choice = rng.choice(("jpg", "jpg", "png", "webp"))
    if choice == "jpg":
        image.convert("RGB").save(folder / f"{stem}.jpg", quality=rng.randint(88, 95))
    elif choice == "png":
        image.save(folder / f"{stem}.png")
    else:
        image.save(folder / f"{stem}.webp", quality=90)


def _bars(image: Image.Image, rng: random.Random) -> Image.Image:
    w, h = image.size
    colour = rng.choice([(0, 0, 0), (255, 255, 255), (16, 16, 16)])
    if rng.random() < 0.5:
        bar = round(h * rng.uniform(0.08, 0.15))
        canvas = Image.new("RGB", (w, h + 2 * bar), colour)
        canvas.paste(image, (0, bar))
    else:
        bar = round(w * rng.uniform(0.08, 0.15))
        canvas = Image.new("RGB", (w + 2 * bar, h), colour)
        canvas.paste(image, (bar, 0))
    return canvas


def _flat(image: Image.Image, rng: random.Random) -> Image.Image:
    w, h = image.size
    if rng.random() < 0.5:  # a solid colour with sensor noise
        base = np.full((h, w, 3), rng.sample(range(30, 220), 3), dtype=np.float32)
        noise = np.random.default_rng(rng.randint(0, 1 << 30)).normal(0, 1.5, (h, w, 1))
        return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    canvas = Image.new("RGB", (w, h), (255, 255, 255))  # a small photo on a white page
    small = image.resize((w // 5, h // 5), Image.Resampling.LANCZOS)
    canvas.paste(small, (rng.randint(0, w - small.width), rng.randint(0, h - small.height)))
    return canvas


def _odd(image: Image.Image, rng: random.Random) -> Image.Image:
    w = image.width
    aspect = rng.choice([1.93, 2.8])
    return image.resize((w, round(w / aspect)), Image.Resampling.LANCZOS)


def _alpha(image: Image.Image, rng: random.Random) -> Image.Image:
    rgba = image.convert("RGBA")
    w, h = rgba.size
    box = (0, 0, round(w * rng.uniform(0.2, 0.5)), round(h * rng.uniform(0.2, 0.5)))
    rgba.paste((0, 0, 0, 0), box)
    return rgba


PLANT = {
    "blurry": lambda im, rng: im.filter(ImageFilter.GaussianBlur(max(2.0, min(im.size) / rng.uniform(40, 160)))),
    "too-dark": lambda im, rng: ImageEnhance.Brightness(im).enhance(rng.uniform(0.12, 0.25)),
    "overexposed": lambda im, rng: im.point(lambda v, g=rng.uniform(2.5, 4.0), o=rng.randint(60, 110): min(255, round(v * g + o))),
    "low-information": _flat,
    "grayscale": lambda im, rng: im.convert("L").convert("RGB"),
    "odd-aspect": _odd,
    "heavy-jpeg": None,  # saved at quality 10-35 below
    "letterbox": _bars,
    "alpha": _alpha,
}


def build(data: Path, per_photo: int, planted_per_kind: int) -> None:
    if (data / "done").exists():
        return
    shutil.rmtree(data, ignore_errors=True)
    rng = random.Random(0)
    colour, grey = data / "colour" / "1_clean", data / "grey" / "1_clean"
    planted = data / "colour" / "1_planted"
    for folder in (colour, grey, planted):
        folder.mkdir(parents=True)
    sources: dict[str, list[Image.Image]] = {}
    for names, folder, mode in ((COLOUR, colour, "RGB"), (GREY, grey, "L")):
        for name in names:
            with Image.open(skimage_photo_dir() / name) as image:
                photo = image.convert(mode)
            variants = _variants(photo, rng, per_photo)
            sources[name] = variants
            for n, variant in enumerate(variants):
                _save(variant, folder, f"{Path(name).stem}_{n:02d}", rng)
    pool = [im for name in COLOUR for im in sources[name]]
    lit = [im for im in pool if np.asarray(im.convert("L")).mean() >= 64]  # brightening a night sky is no defect
    for kind in KINDS:
        for n in range(planted_per_kind):
            image = rng.choice(lit if kind == "overexposed" else pool)
            stem = f"{kind}_{n:02d}"
            if kind == "heavy-jpeg":
                image.save(planted / f"{stem}.jpg", quality=rng.randint(10, 35))
            elif kind == "alpha":
                PLANT[kind](image, rng).save(planted / f"{stem}.png")
            else:
                PLANT[kind](image, rng).convert("RGB").save(planted / f"{stem}.png")  # type: ignore[misc]
    (data / "done").write_text("ok")


VALUE = {
    "blurry": lambda s: s.sharpness,
    "blurry detail": lambda s: s.detail,
    "too-dark": lambda s: s.mean,
    "overexposed": lambda s: s.p50,
    "low-information": lambda s: s.entropy,
    "grayscale": lambda s: s.chroma_share if s.chroma_share is not None else 0.0,
    "heavy-jpeg": lambda s: s.jpeg_quality if s.jpeg_quality is not None else float("nan"),
    "letterbox": lambda s: max(min(s.border_top, s.border_bottom), min(s.border_left, s.border_right)),
    "alpha": lambda s: s.transparent,
}


def _spread(values: list[float]) -> str:
    clean = [v for v in values if v == v]
    if not clean:
        return "-"
    p = np.percentile(clean, [0, 5, 50, 95, 100])
    return "/".join(f"{x:.3g}" for x in p)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--per-photo", type=int, default=20)
    parser.add_argument("--planted", type=int, default=30, help="planted copies per check")
    args = parser.parse_args()
    temp = None
    data = args.data
    if data is None:
        temp = tempfile.mkdtemp(prefix="kiln-quality-")
        data = Path(temp)
    try:
        build(data, args.per_photo, args.planted)
        thresholds = QualityThresholds()
        results = {}
        for name in ("colour", "grey"):
            with Dataset.open(data / name) as ds:
                ds.scan(progress=False)
                records = ds.images()
                stats = ds.image_stats()
                from curator.checks.images import SizeRules

                rules = SizeRules.from_config(ds.config)
                flags = quality_flags(records, stats, thresholds, rules.bucket_settings, rules.widest_aspect)
                results[name] = (records, stats, flags)
        print(f"clean colour: {sum(1 for r in results['colour'][0] if r.path.startswith('1_clean/'))} images; "
              f"clean grey: {len(results['grey'][0])}; planted: {args.planted} per check\n")  # fmt: skip
        print(f"{'check':16s} {'threshold':>10s} {'planted flagged':>16s} {'FP colour':>10s} {'FP grey':>8s}   "
              "value min/p5/median/p95/max: clean colour | planted")  # fmt: skip
        for kind in KINDS:
            field = QualityThresholds.kinds().get(kind, kind.replace("-", "_"))
            threshold = getattr(thresholds, field, None)
            c_records, c_stats, c_flags = results["colour"]
            g_records, _g_stats, g_flags = results["grey"]
            planted = [r.path for r in c_records if r.path.startswith(f"1_planted/{kind}_")]
            clean = [r.path for r in c_records if r.path.startswith("1_clean/")]
            flagged = {f.path for f in c_flags if f.kind == kind}
            grey_flagged = {f.path for f in g_flags if f.kind == kind}
            hit = sum(1 for p in planted if p in flagged) / max(1, len(planted))
            fp_colour = sum(1 for p in clean if p in flagged) / max(1, len(clean))
            fp_grey = len(grey_flagged) / max(1, len(g_records))
            value = VALUE.get(kind)
            spread = ""
            if value is not None:
                spread = (f"{_spread([value(c_stats[p]) for p in clean if p in c_stats])} | "
                          f"{_spread([value(c_stats[p]) for p in planted if p in c_stats])}")  # fmt: skip
            print(f"{kind:16s} {threshold!s:>10s} {hit:16.0%} {fp_colour:10.1%} {fp_grey:8.1%}   {spread}")
            if kind == "blurry":
                g_stats = results["grey"][1]
                print(f"{'  detail':16s} {thresholds.blurry_detail!s:>10s} {'':16s} {'':10s} {'':8s}   "
                      f"{_spread([VALUE['blurry detail'](c_stats[p]) for p in clean if p in c_stats])} | "
                      f"{_spread([VALUE['blurry detail'](c_stats[p]) for p in planted if p in c_stats])} "
                      f"(grey clean {_spread([VALUE['blurry detail'](s) for s in g_stats.values()])})")  # fmt: skip
            wrong = sorted(p for p in clean if p in flagged)[:6] + sorted(grey_flagged)[:6]
            if wrong:
                print(f"{'':16s} false positives: {', '.join(wrong)}")
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
