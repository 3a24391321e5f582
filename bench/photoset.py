"""Generate a benchmark set of distinct photographs plus planted resized/re-encoded copies.

Every image starts from one of scikit-image's bundled photographs: a random crop, flip/rotation, with patches
of other photographs pasted in and a random smooth illumination field, so no two generated images share their
low-frequency structure (they are distinct for a perceptual hash). A fraction of them get a planted copy:
resized (50-90 %) and re-encoded in another format/quality. ``manifest.json`` lists the planted pairs.

    .venv/bin/python bench/photoset.py /tmp/photos --count 10000
"""

from __future__ import annotations

import argparse
import json
import os
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

SOURCES = (
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png",
    "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "camera.png", "moon.png", "coins.png", "brick.png",
    "grass.png", "gravel.png", "cell.png", "clock_motion.png", "microaneurysms.png",
)  # fmt: skip
FORMATS = ("jpg", "png", "webp")

_sources: dict[str, Image.Image] = {}


def skimage_photo_dir() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


def _load_sources(names: tuple[str, ...] = SOURCES) -> list[Image.Image]:
    folder = skimage_photo_dir()
    for name in names:
        if name not in _sources:
            with Image.open(folder / name) as image:
                _sources[name] = image.convert("RGB")
    return [_sources[name] for name in names]


def _random_crop(rng: random.Random, source: Image.Image, aspect: float) -> Image.Image:
    w, h = source.size
    scale = rng.uniform(0.35, 0.95)
    cw = min(w, int(round(min(w, h * aspect) * scale)))
    ch = min(h, max(8, int(round(cw / aspect))))
    x = rng.randint(0, w - cw)
    y = rng.randint(0, h - ch)
    crop = source.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        crop = ImageOps.mirror(crop)
    if rng.random() < 0.3:
        crop = crop.transpose(rng.choice([Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270]))
    return crop


def make_photo(seed: int, long_side: int, sources_from: tuple[str, ...] = SOURCES) -> Image.Image:
    """One distinct photograph-like image of the given long side, made from ``sources_from`` photographs."""
    rng = random.Random(seed)
    sources = _load_sources(sources_from)
    aspect = rng.choice([1.0, 4 / 3, 3 / 2, 16 / 9, 3 / 4, 2 / 3, 9 / 16, 1.25])
    w = long_side if aspect >= 1 else int(long_side * aspect)
    h = int(long_side / aspect) if aspect >= 1 else long_side
    base = _random_crop(rng, rng.choice(sources), w / h).resize((w, h), Image.Resampling.BILINEAR)
    for _ in range(rng.randint(1, 3)):
        pw, ph = int(w * rng.uniform(0.2, 0.5)), int(h * rng.uniform(0.2, 0.5))
        patch = _random_crop(rng, rng.choice(sources), pw / ph).resize((pw, ph), Image.Resampling.BILINEAR)
        base.paste(patch, (rng.randint(0, w - pw), rng.randint(0, h - ph)))
    # A smooth random illumination field (4x4 control points, bicubic): changes the low frequencies.
    field = np.array([[rng.uniform(0.35, 1.25) for _ in range(4)] for _ in range(4)], dtype=np.float32)
    light = Image.fromarray(np.clip(field * 200, 0, 255).astype(np.uint8), "L").resize((w, h), Image.Resampling.BICUBIC)
    arr = np.asarray(base, dtype=np.uint16) * np.asarray(light, dtype=np.uint16)[..., None] // 200
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def save(image: Image.Image, path: Path, fmt: str, quality: int) -> None:
    if fmt == "jpg":
        image.save(path, "JPEG", quality=quality)
    elif fmt == "png":
        image.save(path, "PNG", compress_level=1)
    else:
        image.save(path, "WEBP", quality=quality, method=0)


def _make_one(job: tuple[str, int, int, str, bool]) -> tuple[str, str | None]:
    folder, seed, long_side, fmt, planted = job
    rng = random.Random(seed * 7919 + 1)
    image = make_photo(seed, long_side)
    name = f"img_{seed:06d}.{fmt}"
    save(image, Path(folder) / name, fmt, rng.randint(85, 95))
    copy_name = None
    if planted:
        scale = rng.uniform(0.5, 0.9)
        size = (max(32, int(image.width * scale)), max(32, int(image.height * scale)))
        copy_fmt = rng.choice([f for f in FORMATS if f != fmt] + ["jpg"])
        copy_name = f"copy_{seed:06d}.{copy_fmt}"
        save(image.resize(size, Image.Resampling.LANCZOS), Path(folder) / copy_name, copy_fmt, rng.randint(70, 90))
    return name, copy_name


def make_photoset(dest: Path, count: int, dup_fraction: float = 0.05, seed: int = 0, workers: int | None = None) -> dict:
    """Write ``count`` images (distinct ones + planted copies) into ``dest/1_photos``; returns the manifest."""
    folder = dest / "1_photos"
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    planted_count = int(round(count * dup_fraction / (1 + dup_fraction)))
    distinct = count - planted_count
    planted = set(rng.sample(range(distinct), planted_count))
    jobs = [
        (str(folder), seed * 1_000_000 + k, rng.randint(384, 2048), rng.choice(FORMATS), k in planted)
        for k in range(distinct)
    ]
    pairs = []
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        for name, copy_name in pool.map(_make_one, jobs, chunksize=16):
            if copy_name:
                pairs.append([f"1_photos/{name}", f"1_photos/{copy_name}"])
    manifest = {"count": count, "distinct": distinct, "planted_pairs": pairs}
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--dup-fraction", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    manifest = make_photoset(args.dest, args.count, args.dup_fraction, args.seed)
    print(f"{manifest['count']} images, {len(manifest['planted_pairs'])} planted copies in {args.dest}")


if __name__ == "__main__":
    main()
