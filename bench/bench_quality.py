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

Repeated watermarks (``watermark``, judged over a set): per mark style of ``tests/watermarks.py`` (opaque text
bottom-right, white text at 50% opacity across the bottom centre, a corner logo) a dataset of the clean colour and
grey photographs plus ``--marked`` other crops and downscales carrying the mark, in one concept folder; it prints
the templates found (where, how many images share them), recall and false-positive rate at the default threshold
and at other thresholds, and the watermarks flagged on the clean sets alone (no mark: there must be none). Then
the classical text-likeness score that was tried for ``text-heavy`` without a model (rows of the edge bitmap
dense with short edge runs next to empty rows: text lines and the gaps between them), on the clean sets and on
``--marked`` photographs covered with lines of text (``tests.watermarks.text_page``): why it is not shipped.
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
from PIL import Image, ImageEnhance, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from photoset import skimage_photo_dir  # noqa: E402

from curator.checks.quality import quality_flags  # noqa: E402
from curator.checks.watermark import find_templates, match, watermark_flags  # noqa: E402
from curator.dataset import Dataset  # noqa: E402
from curator.records import IMAGE_QUALITY_KINDS  # noqa: E402
from curator.scan.config import QualityThresholds  # noqa: E402
from curator.scan.edges import EDGE_SIDE  # noqa: E402
from tests.watermarks import STYLES, plant, text_page  # noqa: E402

COLOUR = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png",
          "retina.jpg", "ihc.png", "hubble_deep_field.jpg")  # fmt: skip
GREY = ("camera.png", "coins.png", "moon.png", "brick.png", "grass.png", "gravel.png", "cell.png", "page.png", "text.png")
KINDS = (*(k for k in IMAGE_QUALITY_KINDS if k not in ("watermark", "text-heavy")), "alpha")  # judged per image


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


def build_marked(data: Path, marked: int) -> None:
    """Per mark style, ``wm-<style>``: the clean photographs (hard links) and ``marked`` marked others; and
    ``text``: the clean colour photographs and ``marked`` text-covered ones."""
    if (data / "marked-done").exists():
        return
    rng = random.Random(7)
    pool: list[Image.Image] = []
    for name in COLOUR + GREY:
        with Image.open(skimage_photo_dir() / name) as image:
            pool += _variants(image.convert("RGB"), rng, 12)[1:]  # other crops and scales than the clean ones
    for style in (*STYLES, "text-page"):
        folder = data / ("text" if style == "text-page" else f"wm-{style}") / "1_set"
        shutil.rmtree(folder.parent, ignore_errors=True)
        folder.mkdir(parents=True)
        sources = [data / "colour" / "1_clean"] + ([] if style == "text-page" else [data / "grey" / "1_clean"])
        for source in sources:
            for path in sorted(source.iterdir()):
                os.link(path, folder / f"{source.parent.name}_{path.name}")
        for n, image in enumerate(rng.sample(pool, marked)):
            made = text_page(image, rng.choice([3, 5, 7, 9])) if style == "text-page" else plant(image, style)
            _save(made, folder, f"marked_{n:03d}", rng)
    (data / "marked-done").write_text("ok")


def _edge_set(path: Path) -> tuple[list[str], np.ndarray, list[int | None]]:
    with Dataset.open(path) as ds:
        ds.scan(progress=False)
        chosen, packed = ds.edge_bitmaps()
    return [r.path for r in chosen], packed, [r.phash for r in chosen]


def _rates(best: np.ndarray, is_marked: np.ndarray, level: float) -> str:
    return f"{np.mean(best[is_marked] >= level):.2f}/{np.mean(best[~is_marked] >= level):.3f}"


def watermark_report(data: Path, marked: int) -> None:
    build_marked(data, marked)
    threshold = QualityThresholds().watermark or 0.5
    print(f"\nrepeated watermarks: {marked} marked images beside the clean colour and grey ones; default {threshold}")
    print(f"{'set':12s} {'images':>6s} {'recall':>7s} {'FP':>6s}   recall/FP at 0.3, 0.4, 0.6   templates (where, shared)")
    for style in STYLES:
        paths, packed, hashes = _edge_set(data / f"wm-{style}" )
        started = time.perf_counter()
        templates = find_templates(packed, hashes)
        best = np.zeros(len(paths))
        for template in templates:
            best = np.maximum(best, match(packed, template.mask))
        seconds = time.perf_counter() - started
        is_marked = np.array(["/marked_" in p for p in paths])

        found = "; ".join(f"{t.where()} {t.extent()} shared by {t.shared}" for t in templates) or "none"
        print(f"{style:12s} {len(paths):6d} {np.mean(best[is_marked] >= threshold):7.2f} "
              f"{np.mean(best[~is_marked] >= threshold):6.1%}   {_rates(best, is_marked, 0.3)} {_rates(best, is_marked, 0.4)} {_rates(best, is_marked, 0.6)}   {found} "
              f"({seconds * 1000:.0f} ms)")  # fmt: skip
        clean_at_1 = np.quantile(best[~is_marked], 0.99)
        print(f"{'':12s} recall at a 1% false-positive rate: {np.mean(best[is_marked] > clean_at_1):.2f} "
              f"(threshold {clean_at_1:.2f})")  # fmt: skip
    for name in ("colour", "grey"):
        paths, packed, hashes = _edge_set(data / name)
        flagged = watermark_flags(paths, packed, hashes, threshold)
        print(f"clean {name} alone: {len(paths)} images, {len(find_templates(packed, hashes))} templates, "
              f"{len(flagged)} flagged")  # fmt: skip
    text_rows_report(data)


def text_rows(packed: np.ndarray, dense_runs: int = 8, near: int = 6) -> np.ndarray:
    """The classical text-likeness tried for text-heavy: the share of edge-bitmap rows with at least
    ``dense_runs`` edge runs within ``near`` rows of a row with at most one (a text line beside a gap)."""
    from scipy import ndimage

    edges = np.unpackbits(packed, axis=1).astype(bool).reshape(len(packed), EDGE_SIDE, EDGE_SIDE)
    runs = (edges[:, :, 1:] & ~edges[:, :, :-1]).sum(axis=2)
    beside_gap = ndimage.binary_dilation(runs <= 1, structure=np.ones((1, 2 * near + 1), dtype=bool))
    return ((runs >= dense_runs) & beside_gap).mean(axis=1)


def text_rows_report(data: Path) -> None:
    paths, packed, _hashes = _edge_set(data / "text")
    planted = text_rows(packed)[np.array(["/marked_" in p for p in paths])]
    clean = {}
    for name in ("colour", "grey"):
        clean_paths, clean_packed, _ = _edge_set(data / name)
        scores = text_rows(clean_packed)
        keep = [n for n, p in enumerate(clean_paths) if p.startswith("1_clean/")]
        clean[name] = (np.array(clean_paths)[keep], scores[keep])
    printed = np.array(["/page_" in p or "/text_" in p for p in clean["grey"][0]])
    print(f"\ntext-likeness without a model (not shipped): {len(planted)} text-covered photographs")
    print(f"{'threshold':>9s} {'planted':>8s} {'FP colour':>10s} {'FP grey photos':>15s} {'grey page/text':>15s}")
    for level in (0.1, 0.15, 0.2, 0.3):
        grey = clean["grey"][1]
        print(f"{level:9.2f} {np.mean(planted >= level):8.2f} {np.mean(clean['colour'][1] >= level):10.1%} "
              f"{np.mean(grey[~printed] >= level):15.1%} {np.mean(grey[printed] >= level):15.2f}")  # fmt: skip
    worst = sorted(zip(clean["grey"][1][~printed], clean["grey"][0][~printed], strict=True), reverse=True)[:3]
    worst += sorted(zip(clean["colour"][1], clean["colour"][0], strict=True), reverse=True)[:3]
    print("highest clean scores: " + ", ".join(f"{p} {v:.2f}" for v, p in worst))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--per-photo", type=int, default=20)
    parser.add_argument("--planted", type=int, default=30, help="planted copies per check")
    parser.add_argument("--marked", type=int, default=90, help="marked images per watermark style")
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

                rules = SizeRules.from_config(ds.config, ds.buckets.settings)
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
        watermark_report(data, args.marked)
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
