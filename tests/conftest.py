"""Shared fixtures: small real-photo datasets built from scikit-image's bundled photographs.

* ``photo(name, size=None)``: a real photograph (PIL RGB) from ``skimage/data``.
* ``kohya_dataset``: ``tmp_path/ds`` in kohya layout, ``10_sks dog/`` with 6 captioned photos (jpg/png/webp) and
  ``reg/1_dog/`` with 2 regularization photos.
* ``flat_dataset``: 4 captioned photos directly in a folder.
* ``build_defect_dataset(root)``: one image/caption per health-flag kind (see tests/test_checks.py); returns
  ``{kind: relative path that must carry that flag}``.
* ``copy_sample(dest)``: a fresh copy of ``examples/dataset`` (its images and captions only: whatever kiln left in
  it, a ``.kiln/`` index, trash or journal from ``kiln examples/dataset``, stays behind). Every test that uses the
  sample goes through it, so no test depends on the state a previous run left in the repository.
"""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "dataset"
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg", "ihc.png")


@pytest.fixture(autouse=True)
def _private_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test (and the processes it starts) out of the real user's data and config folders (a fresh
    set per test, so preferences one test saves are not seen by the next)."""
    home = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("KILN_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "xdg-config"))
    monkeypatch.setenv("KILN_CONFIG_DIR", str(home / "config"))  # the TUI's remembered preferences
    monkeypatch.delenv("KILN_IMAGE_PROTOCOL", raising=False)  # the runner's terminal must not pick the previews


def copy_sample(dest: Path, source: Path = SAMPLE) -> Path:
    """A copy of the sample dataset at ``dest`` without kiln's state (dot-folders such as ``.kiln/``)."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns(".*"))
    return dest


def skimage_data_dir() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


def photo(name: str, size: tuple[int, int] | None = None) -> Image.Image:
    """A real photograph from scikit-image, RGB, optionally resized to ``size``."""
    with Image.open(skimage_data_dir() / name) as image:
        rgb = image.convert("RGB")
    return rgb.resize(size, Image.Resampling.LANCZOS) if size else rgb


def save_photo(image: Image.Image, path: Path, **params: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **params)
    return path


def write_caption(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb shape) with a tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(body)
    return path


def build_kohya_dataset(root: Path) -> Path:
    sub = root / "10_sks dog"
    for n, name in enumerate(PHOTOS[:6]):
        fmt = ("jpg", "png", "webp")[n % 3]
        save_photo(photo(name, (640, 512)), sub / f"{Path(name).stem}.{fmt}")
        write_caption(sub / f"{Path(name).stem}.txt", f"sks dog, photo, {Path(name).stem}\n")
    reg = root / "reg" / "1_dog"
    for name in ("camera.png", "moon.png"):
        save_photo(photo(name, (512, 512)), reg / name)
        write_caption(reg / (Path(name).stem + ".txt"), "dog\n")
    return root


@pytest.fixture
def kohya_dataset(tmp_path: Path) -> Path:
    """A kohya-layout dataset of real photos: ``10_sks dog/`` (6 images) and ``reg/1_dog/`` (2)."""
    return build_kohya_dataset(tmp_path / "ds")


@pytest.fixture
def flat_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "flat"
    for name in PHOTOS[:4]:
        save_photo(photo(name, (576, 576)), root / f"{Path(name).stem}.jpg", quality=90)
        write_caption(root / f"{Path(name).stem}.txt", "a photo\n")
    return root


def build_defect_dataset(root: Path) -> dict[str, str]:
    """A kohya dataset with one planted defect per flag kind; returns {kind: path that must carry it}."""
    sub = root / "5_things"
    sub.mkdir(parents=True)
    rel = "5_things/"
    good = photo("astronaut.png", (768, 768))
    expected: dict[str, str] = {}

    def img(name: str, image: Image.Image, caption: str | bytes | None = "a photo, astronaut\n", **params: object) -> str:
        save_photo(image, sub / name, **params)
        if caption is not None:
            write_caption(sub / (Path(name).stem + ".txt"), caption)
        return rel + name

    # broken files
    jpeg = sub / "cut.jpg"
    photo("coffee.png", (800, 600)).save(jpeg, quality=90)
    data = jpeg.read_bytes()
    jpeg.write_bytes(data[: len(data) * 6 // 10])
    write_caption(sub / "cut.txt", "coffee\n")
    expected["truncated"] = rel + "cut.jpg"
    (sub / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    write_caption(sub / "broken.txt", "broken\n")
    expected["unreadable"] = rel + "broken.png"
    (sub / "empty.png").write_bytes(b"")
    write_caption(sub / "empty.txt", "empty\n")
    expected["empty-file"] = rel + "empty.png"
    (sub / "notes.jpg").write_text("<!DOCTYPE html><html><body>404 not found</body></html>")
    write_caption(sub / "notes.txt", "notes\n")
    expected["not-image"] = rel + "notes.jpg"
    png_header_only(sub / "bomb.png", 40_000, 40_000)
    write_caption(sub / "bomb.txt", "bomb\n")
    expected["too-large"] = rel + "bomb.png"
    # sizes
    expected["low-res"] = img("small.png", photo("chelsea.png", (400, 300)))
    expected["tiny"] = img("tiny.jpg", photo("cell.png", (240, 180)), quality=90)
    wide = photo("motorcycle_left.png").resize((2400, 450), Image.Resampling.BILINEAR)
    expected["extreme-aspect"] = img("wide.jpg", wide, quality=90)
    # formats
    frames = [photo(n, (600, 600)) for n in ("hubble_deep_field.jpg", "clock_motion.png", "microaneurysms.png")]
    frames[0].save(sub / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    write_caption(sub / "anim.txt", "animation\n")
    expected["animated"] = rel + "anim.gif"
    expected["cmyk"] = img("print.jpg", photo("retina.jpg", (640, 640)).convert("CMYK"), quality=90)
    import numpy as np

    grey16 = (np.asarray(photo("ihc.png", (640, 640)).convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    expected["high-bit-depth"] = img("deep.png", Image.fromarray(grey16))
    rgba = photo("coffee.png", (640, 640)).convert("RGBA")
    rgba.paste((0, 0, 0, 0), (0, 0, 200, 200))
    expected["alpha"] = img("cutout.png", rgba)
    exif = Image.Exif()
    exif[0x0112] = 6
    expected["exif-rotated"] = img("rotated.jpg", photo("rocket.jpg", (800, 600)), quality=90, exif=exif.tobytes())
    # image quality (tests/test_quality.py checks each against clean photographs); halves of photographs used
    # elsewhere here, so none is a near duplicate of another file
    from PIL import ImageEnhance, ImageFilter

    def half(name: str, side: str, size: tuple[int, int]) -> Image.Image:
        full = photo(name)
        w, h = full.size
        boxes = {"left": (0, 0, w // 2, h), "right": (w // 2, 0, w, h), "top": (0, 0, w, h // 2), "bottom": (0, h // 2, w, h)}
        return full.crop(boxes[side]).resize(size, Image.Resampling.LANCZOS)

    soft = half("motorcycle_right.png", "left", (480, 640)).filter(ImageFilter.GaussianBlur(6))
    expected["blurry"] = img("soft.jpg", soft, quality=90)
    dark = ImageEnhance.Brightness(half("retina.jpg", "top", (640, 320))).enhance(0.15)
    expected["too-dark"] = img("dark.jpg", dark, quality=90)
    expected["overexposed"] = img("washed.png", half("chelsea.png", "right", (480, 600)).point(lambda v: min(255, v * 3 + 80)))
    expected["low-information"] = img("flat.png", Image.new("RGB", (640, 480), (90, 140, 200)))
    expected["grayscale"] = img("grey.jpg", half("rocket.jpg", "top", (640, 480)).convert("L").convert("RGB"), quality=90)
    expected["odd-aspect"] = img("panorama.jpg", half("coffee.png", "bottom", (966, 500)), quality=90)
    expected["heavy-jpeg"] = img("blocky.jpg", half("astronaut.png", "right", (400, 800)), quality=12)
    framed = Image.new("RGB", (640, 600), (0, 0, 0))
    framed.paste(half("ihc.png", "left", (640, 480)), (0, 60))
    expected["letterbox"] = img("framed.png", framed)
    # captions
    expected["missing-caption"] = img("nocap.jpg", photo("gravel.png", (700, 700)), caption=None, quality=90)
    img("blank.jpg", photo("camera.png", (700, 700)), caption="", quality=90)
    expected["empty-caption"] = rel + "blank.txt"
    write_caption(sub / "lost.txt", "nobody, home\n")
    expected["orphan-caption"] = rel + "lost.txt"
    expected["both-caption-files"] = img("twice.jpg", photo("moon.png", (700, 700)), quality=90)
    write_caption(sub / "twice.caption", "moon\n")
    img("latin.jpg", photo("coins.png", (700, 700)), caption="caf\xe9, coins\n".encode("latin-1"), quality=90)
    expected["caption-encoding"] = rel + "latin.txt"
    img("dupe_tags.jpg", photo("brick.png", (700, 700)), caption="brick, wall, brick\n", quality=90)
    expected["duplicate-tags"] = rel + "dupe_tags.txt"
    img("lines.jpg", photo("grass.png", (700, 700)), caption="grass, field\nsecond line ignored by kohya\n", quality=90)
    expected["multiline-caption"] = rel + "lines.txt"
    # duplicates: same bytes, same pixels in other bytes, resized + re-encoded
    original = img("original.png", good)
    shutil.copyfile(sub / "original.png", sub / "original_copy.png")
    write_caption(sub / "original_copy.txt", "a photo, astronaut\n")
    good.save(sub / "original_resaved.png", compress_level=9)
    write_caption(sub / "original_resaved.txt", "a photo, astronaut\n")
    expected["exact-duplicate"] = rel + "original_resaved.png"
    expected["near-duplicate"] = img("original_small.jpg", good.resize((560, 560), Image.Resampling.LANCZOS), quality=80)
    del original
    # a watermark repeated across a concept folder: the same corner text on quarters of eight photographs (no
    # near duplicates of the images above)
    from tests.watermarks import plant

    stamped = root / "2_stamped"
    for n, name in enumerate(("chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png",
                              "retina.jpg", "ihc.png", "hubble_deep_field.jpg")):  # fmt: skip
        source = photo(name)
        w, h = source.size
        left, top = (n % 2) * w // 2, (n // 2 % 2) * h // 2
        crop = source.crop((left, top, left + w // 2, top + h // 2)).resize((600, 450))
        save_photo(plant(crop, "text"), stamped / f"stamp_{n}.jpg", quality=90)
        write_caption(stamped / f"stamp_{n}.txt", "a photo\n")
    expected["watermark"] = "2_stamped/stamp_0.jpg"
    return expected


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The tally of faults the reliability tests planted (docs/RELIABILITY.md), when any ran."""
    import sys

    faults = sys.modules.get("tests.faults")
    tally: dict[str, int] = getattr(faults, "PLANTED", {}) if faults is not None else {}
    if tally:
        terminalreporter.section("faults planted")
        for kind, count in sorted(tally.items()):
            terminalreporter.write_line(f"{count:6d}  {kind}")
        terminalreporter.write_line(f"{sum(tally.values()):6d}  in all")
