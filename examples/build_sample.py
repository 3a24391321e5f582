"""Rebuild examples/dataset/ from the photographs scikit-image ships (see examples/LICENSES.md).

Run from the repository root: ``.venv/bin/python examples/build_sample.py``. It overwrites
examples/dataset/ only. Every file is either a whole photograph or a crop of one; the planted problems
(a near-duplicate, a low-resolution image, a missing caption, a repeated tag) are made here on purpose.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import skimage
from PIL import Image

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"
DATASET = Path(__file__).parent / "dataset"
PHOTO = "10_kilnsample photo"
TEXTURE = "5_kilnsample texture"


@dataclass(frozen=True)
class Sample:
    folder: str
    name: str  # output file name (extension picks the format)
    source: str  # file in skimage/data
    caption: str | None  # None: planted missing caption
    crop: tuple[int, int, int, int] | None = None  # (left, top, right, bottom) in source pixels
    resize: tuple[int, int] | None = None  # applied after the crop


SAMPLES = [
    Sample(
        PHOTO,
        "astronaut.jpg",
        "astronaut.png",
        "kilnsample, 1girl, astronaut, spacesuit, orange spacesuit, smile, short hair, brown hair, "
        "american flag, space shuttle, helmet, upper body, indoors, looking at viewer",
    ),
    Sample(
        PHOTO,
        "astronaut_portrait.png",
        "astronaut.png",
        "kilnsample, 1girl, astronaut, portrait, face, smile, short hair, brown hair, orange spacesuit, "
        "looking at viewer, teeth",
        crop=(60, 0, 360, 380),
    ),
    Sample(
        PHOTO,
        "cameraman.png",
        "camera.png",
        "kilnsample, 1boy, photographer, camera, tripod, black coat, outdoors, grass, field, building, "
        "sky, monochrome, greyscale",
    ),
    Sample(
        PHOTO,
        "cameraman_side.jpg",
        "camera.png",
        "kilnsample, 1boy, photographer, looking through camera, black coat, from side, short hair, "
        "outdoors, monochrome, greyscale",
        crop=(0, 0, 340, 512),
    ),
    Sample(
        PHOTO,
        "cat.jpg",
        "chelsea.png",
        "kilnsample, cat, tabby cat, no humans, animal focus, green eyes, whiskers, close-up, "
        "looking at viewer, cat",
    ),  # planted: "cat" twice
    Sample(
        PHOTO,
        "cat_2.webp",
        "chelsea.png",
        "kilnsample, cat, tabby cat, no humans, animal focus, green eyes, whiskers, close-up",
        resize=(420, 280),
    ),  # planted: near-duplicate of cat.jpg (resized, re-encoded as lossy webp)
    Sample(
        PHOTO,
        "coffee.jpg",
        "coffee.png",
        "kilnsample, coffee, cup, saucer, spoon, espresso, wooden table, from above, no humans, still life",
    ),
    Sample(
        PHOTO,
        "coffee_cup.webp",
        "coffee.png",
        "kilnsample, coffee, cup, saucer, spoon, espresso, close-up, no humans, still life",
        crop=(170, 0, 470, 300),
    ),
    Sample(
        PHOTO,
        "clock.png",
        "clock_motion.png",
        "kilnsample, clock, wall clock, motion blur, blurry, wall, no humans, monochrome, greyscale",
        resize=(240, 180),
    ),  # planted: low resolution
    Sample(
        PHOTO,
        "rocket_launch.jpg",
        "rocket.jpg",
        "kilnsample, rocket, launch pad, tower, night, sky, lights, no humans, outdoors, scenery",
    ),
    Sample(
        PHOTO,
        "rocket_tower.jpg",
        "rocket.jpg",
        "kilnsample, rocket, launch pad, tower, night, blue sky, lights, no humans, outdoors",
        crop=(200, 0, 460, 427),
    ),
    Sample(
        PHOTO,
        "deep_field.jpg",
        "hubble_deep_field.jpg",
        "kilnsample, space, galaxy, stars, starry sky, deep field, black background, no humans",
    ),
    Sample(
        PHOTO,
        "deep_field_wide.webp",
        "hubble_deep_field.jpg",
        "kilnsample, space, galaxy, stars, deep field, black background, wide shot, panorama, no humans",
        crop=(0, 560, 1000, 872),
    ),
    Sample(
        PHOTO,
        "deep_field_tall.png",
        "hubble_deep_field.jpg",
        None,  # planted: no caption
        crop=(620, 0, 1000, 620),
    ),
    Sample(
        PHOTO,
        "retina.jpg",
        "retina.jpg",
        "kilnsample, retina, fundus photograph, blood vessels, optic disc, macula, circle, "
        "black background, medical",
    ),
    Sample(
        PHOTO,
        "retina_optic_disc.jpg",
        "retina.jpg",
        "kilnsample, retina, fundus photograph, optic disc, macula, blood vessels, close-up, medical",
        crop=(50, 350, 750, 800),
    ),
    Sample(
        PHOTO,
        "retina_macula.webp",
        "retina.jpg",
        "kilnsample, retina, fundus photograph, macula, blood vessels, close-up, orange, medical",
        crop=(600, 500, 1100, 1000),
    ),
    Sample(
        TEXTURE,
        "brick.png",
        "brick.png",
        "kilnsample texture, brick wall, bricks, pattern, monochrome, greyscale, no humans",
    ),
    Sample(
        TEXTURE,
        "brick_wide.jpg",
        "brick.png",
        "kilnsample texture, brick wall, bricks, pattern, close-up, monochrome, greyscale, no humans",
        crop=(0, 256, 512, 512),
    ),
    Sample(
        TEXTURE,
        "grass.webp",
        "grass.png",
        "kilnsample texture, grass, lawn, from above, nature, monochrome, greyscale, no humans",
    ),
    Sample(
        TEXTURE,
        "grass_tall.jpg",
        "grass.png",
        "kilnsample texture, grass, lawn, close-up, nature, monochrome, greyscale, no humans",
        crop=(256, 0, 512, 512),
    ),
    Sample(
        TEXTURE,
        "gravel.png",
        "gravel.png",
        "kilnsample texture, gravel, stones, pebbles, from above, monochrome, greyscale, no humans",
    ),
    Sample(
        TEXTURE,
        "gravel_detail.jpg",
        "gravel.png",
        "kilnsample texture, gravel, stones, pebbles, close-up, monochrome, greyscale, no humans",
        crop=(128, 128, 448, 448),
    ),
]


def build(dataset: Path = DATASET) -> None:
    if dataset.exists():
        shutil.rmtree(dataset)
    for sample in SAMPLES:
        folder = dataset / sample.folder
        folder.mkdir(parents=True, exist_ok=True)
        with Image.open(SKIMAGE_DATA / sample.source) as source:
            image = source.convert("L" if source.mode in ("L", "I;16") else "RGB")
        if sample.crop:
            image = image.crop(sample.crop)
        if sample.resize:
            image = image.resize(sample.resize, Image.Resampling.LANCZOS)
        target = folder / sample.name
        suffix = target.suffix.lower()
        if suffix == ".jpg":
            image.save(target, quality=90, optimize=True)
        elif suffix == ".webp":
            image.save(target, quality=80 if sample.resize else 90, method=6)
        else:
            image.save(target, optimize=True)
        if sample.caption is not None:
            target.with_suffix(".txt").write_text(sample.caption + "\n", encoding="utf-8")


if __name__ == "__main__":
    build()
    total = sum(p.stat().st_size for p in DATASET.rglob("*") if p.is_file())
    print(f"wrote {len(SAMPLES)} images to {DATASET} ({total / 1e6:.2f} MB)")
