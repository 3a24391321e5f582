"""Image-quality checks: each planted defect in a real photograph is flagged with a score; clean real photographs
are not; thresholds change from the config model and the CLI; findings sort by score."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from curator.dataset import Dataset
from curator.records import IMAGE_QUALITY_KINDS
from curator.scan.config import QualityThresholds, ScanConfig
from tests.conftest import photo, save_photo
from tui.cli import main as kiln

CLEAN = {
    "astronaut.jpg": ("astronaut.png", (720, 720), {"quality": 92}),
    "chelsea.png": ("chelsea.png", (640, 480), {}),
    "coffee.webp": ("coffee.png", (640, 480), {"quality": 90}),
    "rocket.jpg": ("rocket.jpg", (480, 640), {"quality": 92}),
    "motorcycle.png": ("motorcycle_left.png", (720, 540), {}),
    "retina.jpg": ("retina.jpg", (700, 700), {"quality": 90}),
}


def _bars(image: Image.Image, vertical: bool, colour: tuple[int, int, int]) -> Image.Image:
    w, h = image.size
    bar = round((h if vertical else w) * 0.12)
    canvas = Image.new("RGB", (w, h + 2 * bar) if vertical else (w + 2 * bar, h), colour)
    canvas.paste(image, (0, bar) if vertical else (bar, 0))
    return canvas


def _cutout(background: tuple[int, int, int]) -> Image.Image:
    rgba = photo("coffee.png", (640, 480)).convert("RGBA")
    rgba.paste((*background, 0), (0, 0, 320, 240))
    return rgba


def _flat() -> Image.Image:
    noise = np.random.default_rng(0).normal(0, 1.5, (480, 640, 1))
    return Image.fromarray(np.clip(np.full((480, 640, 3), (90, 140, 200)) + noise, 0, 255).astype(np.uint8))


PLANTED: dict[str, tuple[str, Image.Image, dict[str, object]]] = {}


def _planted() -> dict[str, tuple[str, Image.Image, dict[str, object]]]:
    if not PLANTED:
        PLANTED.update({
            "blurry": ("blurred.jpg", photo("astronaut.png", (720, 720)).filter(ImageFilter.GaussianBlur(6)), {"quality": 92}),
            "too-dark": ("dark.jpg", ImageEnhance.Brightness(photo("coffee.png", (640, 480))).enhance(0.15), {"quality": 92}),
            "overexposed": ("washed.png", photo("chelsea.png", (640, 480)).point(lambda v: min(255, v * 3 + 80)), {}),
            "low-information": ("flat.png", _flat(), {}),
            "grayscale": ("grey.jpg", photo("rocket.jpg", (480, 640)).convert("L").convert("RGB"), {"quality": 92}),
            "odd-aspect": ("panorama.jpg", photo("motorcycle_left.png", (966, 500)), {"quality": 92}),
            "heavy-jpeg": ("blocky.jpg", photo("retina.jpg", (700, 700)), {"quality": 12}),
            "letterbox": ("letterbox.png", _bars(photo("astronaut.png", (640, 480)), True, (0, 0, 0)), {}),
            "alpha": ("cutout.png", _cutout((0, 0, 0)), {}),
        })  # fmt: skip
    return PLANTED


@pytest.fixture(scope="module")
def quality_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("quality") / "ds"
    folder = root / "10_set"
    for name, (source, size, params) in CLEAN.items():
        save_photo(photo(source, size), folder / name, **params)
    for name, image, params in _planted().values():
        save_photo(image, folder / name, **params)
    save_photo(_bars(photo("chelsea.png", (640, 480)), False, (255, 255, 255)), folder / "pillarbox.png")
    save_photo(_cutout((255, 255, 255)), folder / "cutout_white.png")
    return root


@pytest.fixture(scope="module")
def quality_flags(quality_set: Path) -> list:
    with Dataset.open(quality_set, config=ScanConfig(workers=1)) as ds:
        return ds.flags()


QUALITY = (*IMAGE_QUALITY_KINDS, "alpha")
# a repeated watermark needs many images (below); text-heavy needs a text detector (tests/test_text_model.py)
PER_IMAGE = tuple(k for k in QUALITY if k not in ("watermark", "text-heavy"))


@pytest.mark.parametrize("kind", PER_IMAGE)
def test_planted_defect_is_flagged_with_a_score(quality_flags: list, kind: str) -> None:
    name = _planted()[kind][0]
    found = [f for f in quality_flags if f.path == f"10_set/{name}" and f.kind == kind]
    assert len(found) == 1, f"{kind} not reported on {name}: {[(f.path, f.kind) for f in quality_flags]}"
    assert found[0].score is not None and 0.0 <= found[0].score <= 1.0
    assert found[0].detail


@pytest.mark.parametrize("kind", QUALITY)
def test_clean_real_photographs_are_not_flagged(quality_flags: list, kind: str) -> None:
    clean = {f"10_set/{name}" for name in CLEAN}
    assert not [f.path for f in quality_flags if f.kind == kind and f.path in clean]


def test_details_say_how_much(quality_flags: list) -> None:
    by = {(f.path.rpartition("/")[2], f.kind): f.detail for f in quality_flags}
    bars = by[("letterbox.png", "letterbox")]  # 58 px bars on a 640x596 canvas: 9.7% each side
    top, bottom = (int(x) for x in re.findall(r"(\d+)% (?:top|bottom)", bars))
    assert bars.startswith("letterbox: flat black bars") and 8 <= top <= 10 and 8 <= bottom <= 10
    assert "pillarbox: flat white bars" in by[("pillarbox.png", "letterbox")]
    assert "shows black (#000000)" in by[("cutout.png", "alpha")]
    assert "shows white (#ffffff)" in by[("cutout_white.png", "alpha")]
    assert "25% of pixels are transparent" in by[("cutout.png", "alpha")]
    assert "quality 12" in by[("blocky.jpg", "heavy-jpeg")]
    assert "1.93:1" in by[("panorama.jpg", "odd-aspect")]
    # the scan's plain alpha finding is replaced by the scored one, not repeated
    assert [f.kind for f in quality_flags if f.path == "10_set/cutout.png"].count("alpha") == 1


def test_grayscale_only_in_a_colour_set(tmp_path: Path) -> None:
    folder = tmp_path / "greys" / "1_scans"
    for name in ("camera.png", "coins.png", "moon.png", "page.png"):
        save_photo(photo(name).convert("L"), folder / name)
    save_photo(photo("astronaut.png", (512, 512)), folder / "one_in_colour.jpg", quality=90)
    with Dataset.open(tmp_path / "greys") as ds:
        assert not [f for f in ds.flags() if f.kind == "grayscale"]


def test_thresholds_come_from_the_config(quality_set: Path) -> None:
    strict = QualityThresholds(blurry=1.9, heavy_jpeg=None)
    with Dataset.open(quality_set, config=ScanConfig(workers=1, quality=strict)) as ds:
        flags = ds.flags()
    blurry = {f.path.rpartition("/")[2] for f in flags if f.kind == "blurry"}
    assert "astronaut.jpg" in blurry and "blurred.jpg" in blurry  # a higher bar catches sharp photos too
    assert not [f for f in flags if f.kind == "heavy-jpeg"]  # None turns the check off


def test_threshold_parsing_names_the_problem() -> None:
    assert QualityThresholds.parse(["blurry=0.3", "heavy-jpeg=off", "too-dark=0.1"]) == QualityThresholds(
        blurry=0.3, heavy_jpeg=None, too_dark=0.1
    )
    off = QualityThresholds.parse(["blurry=off", "low-information=off", "one-colour=0.9"])
    assert off.blurry is None and off.blurry_detail is None  # the whole check
    assert off.low_information is None and off.one_colour == 0.9  # a part given explicitly stays
    assert QualityThresholds.parse(["grayscale=off"]).colour_set == 0.5
    with pytest.raises(ValueError, match="KIND=VALUE"):
        QualityThresholds.parse(["sharpness=0.3"])
    with pytest.raises(ValueError, match="blurry"):
        QualityThresholds.parse(["blurry=7"])


def test_cli_sorts_by_score_and_takes_thresholds(quality_set: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = kiln(["check", str(quality_set), "--json", "--sort", "score", "--quality", "blurry=1.9",
                 "--kind", "blurry", "--no-progress"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    scores = [f["score"] for f in out["flags"]]
    assert len(scores) >= 3 and scores == sorted(scores, reverse=True)
    assert out["flags"][0]["path"] == "10_set/blurred.jpg"  # the planted blur is the worst
    code = kiln(["check", str(quality_set), "--quality", "blurry=9", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "blurry" in err and "2" in err  # names the field and its range
    code = kiln(["check", str(quality_set), "--quality", "wobbly=1", "--no-progress"])
    assert code == 1 and "too-dark" in capsys.readouterr().err  # lists the kinds there are


# ------------------------------------------------------------------------------------ repeated watermarks

MARKED = (("astronaut.png", (600, 600)), ("chelsea.png", (451, 300)), ("coffee.png", (600, 400)),
          ("rocket.jpg", (427, 640)), ("motorcycle_left.png", (640, 480)), ("motorcycle_right.png", (640, 480)),
          ("retina.jpg", (600, 600)), ("ihc.png", (512, 512)))  # fmt: skip
CROPS = ((0.0, 0.0, 0.8, 0.8), (0.2, 0.2, 1.0, 1.0), (0.1, 0.0, 0.9, 0.75))


def _crop(name: str, size: tuple[int, int], box: tuple[float, float, float, float]) -> Image.Image:
    image = photo(name)
    w, h = image.size
    return image.crop((round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h))).resize(size)


@pytest.fixture(scope="module")
def marked_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list]]:
    """Per mark style, a set and its flags: eight real photographs (two crops each) carrying the mark, beside the
    clean photographs."""
    from tests.watermarks import STYLES, plant

    found = {}
    for style in STYLES:
        root = tmp_path_factory.mktemp(f"marked-{style}") / "ds"
        folder = root / "5_set"
        for name, (source, size, params) in CLEAN.items():
            save_photo(photo(source, size), folder / name, **params)
        for n, (source, size) in enumerate(MARKED):
            for k in range(2):
                save_photo(plant(_crop(source, size, CROPS[(n + k) % 3]), style), folder / f"mark_{n}_{k}.jpg", quality=90)
        with Dataset.open(root, config=ScanConfig(workers=1)) as ds:
            found[style] = (root, ds.flags())
    return found


@pytest.mark.parametrize("style", ["text", "faint", "logo"])
def test_a_repeated_watermark_is_flagged_and_located(marked_sets: dict[str, tuple[Path, list]], style: str) -> None:
    flags = [f for f in marked_sets[style][1] if f.kind == "watermark"]
    flagged = {f.path.rpartition("/")[2] for f in flags}
    marked = {f"mark_{n}_{k}.jpg" for n in range(len(MARKED)) for k in range(2)}
    assert len(flagged & marked) >= 12, f"{style}: only {sorted(flagged & marked)} of 16"
    assert not flagged & set(CLEAN), f"{style}: clean photographs flagged: {sorted(flagged & set(CLEAN))}"
    where = {"text": "bottom-right corner", "faint": "bottom", "logo": "top-left corner"}[style]
    assert all(where in f.detail and 0.0 <= f.score <= 1.0 for f in flags), flags[0].detail


def test_no_watermark_in_a_clean_set_with_shared_scenery(tmp_path: Path) -> None:
    """Photographs on one studio backdrop (the same wall, floor and seam in every picture) share no mark."""
    folder = tmp_path / "studio" / "3_product"
    rng = np.random.default_rng(3)
    for n, (source, _size) in enumerate(MARKED * 2):
        canvas = Image.new("RGB", (640, 480), (205, 200, 190))
        canvas.paste((120, 110, 100), (0, 330, 640, 480))  # the floor and its seam, across every picture
        subject = _crop(source, (220, 260), CROPS[n % 3])
        canvas.paste(subject, (int(rng.integers(40, 380)), int(rng.integers(60, 200))))
        save_photo(canvas, folder / f"shot_{n:02d}.jpg", quality=90)
    with Dataset.open(tmp_path / "studio", config=ScanConfig(workers=1)) as ds:
        assert not [f for f in ds.flags() if f.kind == "watermark"]


def test_watermark_threshold_and_sorting_from_the_cli(
    marked_sets: dict[str, tuple[Path, list]], capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(marked_sets["text"][0])
    code = kiln(["check", root, "--json", "--kind", "watermark", "--sort", "score", "--no-progress"])
    flags = json.loads(capsys.readouterr().out)["flags"]
    assert code == 0 and len(flags) >= 12 and all(f["path"].startswith("5_set/mark_") for f in flags)
    assert [f["score"] for f in flags] == sorted((f["score"] for f in flags), reverse=True)
    shared = int(re.search(r"in (\d+) images", flags[0]["detail"]).group(1))
    assert 12 <= shared <= 16 and "bottom-right corner" in flags[0]["detail"]
    code = kiln(["check", root, "--json", "--quality", "watermark=0.95", "--kind", "watermark", "--no-progress"])
    assert code == 0 and len(json.loads(capsys.readouterr().out)["flags"]) < len(flags)  # a higher bar, fewer
    code = kiln(["check", root, "--json", "--kind", "watermark", "--quality", "watermark=off", "--no-progress"])
    assert code == 0 and json.loads(capsys.readouterr().out)["flags"] == []
    assert kiln(["check", root, "--quality", "watermark=2", "--no-progress"]) == 1
    assert "watermark" in capsys.readouterr().err


def test_the_edge_bitmap_marks_steps_and_is_stored_packed() -> None:
    from curator.scan.edges import EDGE_BYTES, EDGE_STEP, edge_bits, edge_map, unpack_edges

    step = np.zeros((256, 384), dtype=np.uint8)
    step[:, 192:] = 200  # a vertical step half-way: at 128 px, between columns 63 and 64
    edges = edge_map(Image.fromarray(step))
    assert edges.shape == (128, 128) and set(np.nonzero(edges.any(axis=0))[0]) == {63, 64}
    faint = np.zeros((128, 128), dtype=np.uint8)
    faint[:, 64:] = EDGE_STEP - 1  # under the step size: no edge
    assert not edge_map(Image.fromarray(faint)).any()
    blob = edge_bits(Image.fromarray(step))
    assert len(blob) == EDGE_BYTES and (unpack_edges([blob])[0] == edges).all()
    with pytest.raises(ValueError, match="2048 bytes"):
        unpack_edges([blob[:-1]])
    with pytest.raises(ValueError, match="L image"):
        edge_map(Image.new("RGB", (8, 8)))


def test_no_watermark_in_the_clean_sample_dataset(tmp_path: Path) -> None:
    """examples/dataset: 23 real photographs in two folders, where chance once made small templates (23 and 70
    template pixels) on the frame's left edge; a template needs 96."""
    from tests.conftest import copy_sample

    with Dataset.open(copy_sample(tmp_path / "sample"), config=ScanConfig(workers=1)) as ds:
        assert not [f.path for f in ds.flags() if f.kind == "watermark"]


def test_edge_bitmaps_follow_the_records_whatever_the_index_order(tmp_path: Path) -> None:
    """Images a later scan appends come last in the index's table but first in path order; a broken file has no
    bitmap: each bitmap stays with its own image, in the order of the records asked for."""
    root = tmp_path / "set"
    for name in ("m_chelsea.png", "n_coffee.png", "o_rocket.jpg"):
        save_photo(photo(name.split("_", 1)[1], (160, 120)), root / name)
    with Dataset.open(root, config=ScanConfig(workers=1)) as ds:
        ds.scan(progress=False)
    save_photo(photo("astronaut.png", (120, 160)), root / "a_astronaut.png")
    (root / "b_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with Dataset.open(root, config=ScanConfig(workers=1)) as ds:
        ds.scan(progress=False)
        stored = dict(ds.index.conn.execute("SELECT path, edges FROM features WHERE edges IS NOT NULL"))
        records = ds.images()
        chosen, packed = ds.edge_bitmaps()
        assert [r.path for r in chosen] == ["a_astronaut.png", "m_chelsea.png", "n_coffee.png", "o_rocket.jpg"]
        assert [bytes(row) for row in packed] == [stored[r.path] for r in chosen]
        backwards, packed_backwards = ds.edge_bitmaps(records[::-1])
        assert [r.path for r in backwards] == [r.path for r in chosen][::-1]
        assert [bytes(row) for row in packed_backwards] == [stored[r.path] for r in backwards]
