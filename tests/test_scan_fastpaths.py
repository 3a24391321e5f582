"""The fast decoders (Wuffs/libspng PNG luma, libwebp luma and header) give what the Pillow path gives.

Every probe field must be identical with and without them (``KILN_NO_FAST_DECODE=1``), flags included, and the
perceptual hash within a rounding bit or two; broken files must fall back to Pillow's classification.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curator.scan import fastdecode
from curator.scan.probe import ProbeResult, probe_file

from .conftest import photo


def _probe(path: Path) -> ProbeResult:
    stat = path.stat()
    return probe_file(str(path), path.name, stat.st_size, stat.st_mtime_ns, 100_000_000)


def _facts(result: ProbeResult) -> tuple:
    return (result.sha256, result.width, result.height, result.format, result.mode, result.frames,
            result.exif_rotated, result.flags)  # fmt: skip


def _variants(folder: Path) -> list[Path]:
    """Real photographs in the PNG and WebP shapes the fast paths take (and some they must refuse)."""
    folder.mkdir()
    rgb = photo("astronaut.png", (700, 520))
    rgba = photo("coffee.png", (600, 400)).convert("RGBA")
    rgba.paste((0, 0, 0, 0), (0, 0, 120, 90))
    semi = photo("chelsea.png", (500, 380)).convert("RGBA")
    semi.putalpha(200)
    exif = Image.Exif()
    exif[0x0112] = 6
    saves = {
        "rgb.png": (rgb, {}),
        "grey.png": (photo("camera.png", (512, 384)).convert("L"), {}),
        "palette.png": (rgb.quantize(200), {}),
        "cutout.png": (rgba, {}),
        "semi.png": (semi, {}),
        "grey_alpha.png": (rgba.convert("LA"), {}),
        "interlaced.png": (rgb, {"interlace": 1}),
        "lossy.webp": (rgb, {"quality": 85}),
        "lossless.webp": (photo("rocket.jpg", (480, 320)), {"lossless": True}),
        "rotated.webp": (rgb, {"quality": 80, "exif": exif.tobytes()}),
        "alpha.webp": (rgba, {"quality": 90}),
        "photo.jpg": (rgb, {"quality": 90}),
    }
    paths = []
    for name, (image, params) in saves.items():
        image.save(folder / name, **params)
        paths.append(folder / name)
    return paths


def test_fast_decoders_are_installed() -> None:
    fast = fastdecode.available()
    assert fast["webp-luma"], "libwebp (shipped with Pillow) should be found"
    assert fast["png-wuffs"] or fast["png-libspng"], "install pywuffs (or pyspng) for fast PNG hashing"


def test_fast_paths_match_pillow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _variants(tmp_path / "imgs")
    fast = {p.name: _probe(p) for p in paths}
    monkeypatch.setenv("KILN_NO_FAST_DECODE", "1")
    fastdecode.refresh()
    try:
        slow = {p.name: _probe(p) for p in paths}
    finally:
        monkeypatch.delenv("KILN_NO_FAST_DECODE")
        fastdecode.refresh()
    for name in fast:
        assert _facts(fast[name]) == _facts(slow[name]), name
        assert fast[name].phash is not None and slow[name].phash is not None, name
        assert (fast[name].phash ^ slow[name].phash).bit_count() <= 2, name
    assert fast["rotated.webp"].exif_rotated and (fast["rotated.webp"].width, fast["rotated.webp"].height) == (520, 700)
    assert [k for k, _ in fast["cutout.png"].flags] == ["alpha"]
    assert "semi-transparent" in fast["semi.png"].flags[0][1]
    assert [k for k, _ in fast["alpha.webp"].flags] == ["alpha"]
    assert fast["rgb.png"].flags == [] and fast["lossy.webp"].flags == []


def test_png_luma_matches_pillow_grey(tmp_path: Path) -> None:
    if not fastdecode.available()["png-wuffs"]:
        pytest.skip("pywuffs not installed")
    image = photo("motorcycle_left.png", (640, 480))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    grey = fastdecode.png_grey(buffer.getvalue(), image.size)
    assert grey is not None and grey.shape == (480, 640)
    difference = np.abs(grey.astype(int) - np.asarray(image.convert("L"), dtype=int))
    assert difference.max() <= 1  # the same ITU-R 601 weights, rounded differently
    assert fastdecode.png_grey(buffer.getvalue(), (641, 480)) is None  # a size the header does not have


def test_webp_header_without_pillow(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 8
    buffer = io.BytesIO()
    photo("astronaut.png", (300, 200)).save(buffer, "WEBP", quality=80, exif=exif.tobytes())
    info = fastdecode.webp_info(buffer.getvalue())
    assert info is not None
    assert (info.width, info.height, info.has_alpha, info.animated) == (300, 200, False, False)
    reread = Image.Exif()
    reread.load(info.exif)
    assert reread[0x0112] == 8
    assert fastdecode.webp_info(b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(20)) is None


@pytest.mark.parametrize("name", ["rgb.png", "lossy.webp", "lossless.webp"])
def test_truncated_files_fall_back_to_pillow_classification(tmp_path: Path, name: str) -> None:
    source = next(p for p in _variants(tmp_path / "imgs") if p.name == name)
    cut = tmp_path / f"cut_{name}"
    data = source.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])
    result = _probe(cut)
    assert result.phash is None
    assert [k for k, _ in result.flags] in (["truncated"], ["unreadable"])
    assert result.format in ("PNG", "WEBP")
