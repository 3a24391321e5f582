"""The scan's per-image results are pinned: hashes, thumbnail and quality statistics of every photograph in
``skimage/data`` must equal ``tests/data/probe_golden.json``, recorded before the scan was made cheaper.

The quality thresholds are calibrated on these statistics (docs/DATASET.md) and the pHash is imagehash's, so a
speed change to the probe must leave every value as it was. The files are skimage's own (fixed bytes), probed
exactly as the scan probes them. To re-record after an intended change of the measurement itself, run this
module as a script (``python tests/test_probe_golden.py``) and say why in the commit.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curator.scan.probe import probe_file  # noqa: E402

GOLDEN = Path(__file__).parent / "data" / "probe_golden.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")


def _photos() -> list[Path]:
    import skimage

    root = Path(skimage.__file__).parent / "data"
    return sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def probe_record(path: Path) -> dict[str, object] | None:
    result = probe_file(str(path), path.name, path.stat().st_size, 0, 200_000_000)
    if result.phash is None or result.thumb is None or result.stats is None:
        return None
    return {
        "phash": result.phash,
        "phash_mirror": result.phash_mirror,
        "thumb_sha256": hashlib.sha256(result.thumb).hexdigest(),
        "stats": json.loads(result.stats),
        "width": result.width,
        "height": result.height,
        "mode": result.mode,
        "flags": [kind for kind, _ in result.flags],
    }


GOLDEN_RECORDS: dict[str, dict[str, object]] = json.loads(GOLDEN.read_text())


def test_the_golden_set_covers_every_decode_path_it_claims() -> None:
    modes = {str(record["mode"]) for record in GOLDEN_RECORDS.values()}
    assert {"RGB", "L", "RGBA", "P"} <= modes
    assert len(GOLDEN_RECORDS) >= 20


STATS_TOLERANCE = 2e-5  # two units of the stored 5th decimal: float32 sums differ in their last bits by CPU


def _same(value: object, recorded: object) -> bool:
    """Equal, floats within ``STATS_TOLERANCE`` (the statistics are float32 sums rounded to 5 decimals, and a
    value next to a rounding boundary lands on either side with the CPU's SIMD width: AVX-512 or AVX2)."""
    if isinstance(value, float) or isinstance(recorded, float):
        return isinstance(value, int | float) and isinstance(recorded, int | float) and \
            abs(value - recorded) <= STATS_TOLERANCE
    if isinstance(value, dict) and isinstance(recorded, dict):
        return value.keys() == recorded.keys() and all(_same(value[k], recorded[k]) for k in value)
    if isinstance(value, list) and isinstance(recorded, list):
        return len(value) == len(recorded) and all(_same(v, r) for v, r in zip(value, recorded, strict=True))
    return value == recorded


@pytest.mark.parametrize("name", sorted(GOLDEN_RECORDS))
def test_probe_results_equal_the_recorded_ones(name: str) -> None:
    """Hashes, thumbnail, size, mode and flags exactly; the statistics to their stored precision."""
    path = next((p for p in _photos() if p.name == name), None)
    if path is None:
        pytest.skip(f"{name} is not in this scikit-image's data folder")
    record, recorded = probe_record(path), GOLDEN_RECORDS[name]
    assert record is not None
    assert {k: v for k, v in record.items() if k != "stats"} == {k: v for k, v in recorded.items() if k != "stats"}
    assert _same(record["stats"], recorded["stats"]), (record["stats"], recorded["stats"])


def test_the_statistics_tolerance_is_their_last_digits_only() -> None:
    assert _same({"a": [1.00001, 2]}, {"a": [1.00002, 2]})
    assert not _same({"a": [1.0001, 2]}, {"a": [1.0, 2]}) and not _same({"a": 1.0}, {"b": 1.0})
    assert not _same([1.0], [1.0, 2.0]) and not _same("x", 1.0)


if __name__ == "__main__":
    records = {p.name: r for p in _photos() if (r := probe_record(p)) is not None}
    GOLDEN.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(records)} photographs in {GOLDEN}")


@pytest.mark.parametrize(("name", "size"), [("astronaut.png", (511, 383)), ("coffee.png", (199, 131)), ("chelsea.png", (77, 61))])
def test_the_in_place_webp_reduction_equals_the_copying_one(name: str, size: tuple[int, int]) -> None:
    """WebP pixels are reduced inside libwebp's buffer; the result must be what reducing copied planes gives
    (the scan's earlier way), pixel for pixel, at odd sizes and at a size that needs no reduction."""
    import io

    import numpy as np
    from PIL import Image

    from curator.scan import fastdecode, probe

    if not fastdecode.available()["webp-luma"]:
        pytest.skip("libwebp is not loadable here")
    with Image.open(next(p for p in _photos() if p.name == name)) as source:
        buffer = io.BytesIO()
        source.convert("RGB").resize(size).save(buffer, "WEBP", quality=80)
    data = buffer.getvalue()
    planes = fastdecode.webp_yuv(data)
    assert planes is not None
    luma, u, v = planes
    expected_grey = probe._STUDIO_TO_FULL[np.asarray(probe._reduce(probe._grey_image(luma)))]
    factor = max(1, min(u.shape) * 2 // probe.ANALYSIS_SIDE // 2)
    expected_chroma = probe._yuv_chroma(u[::factor, ::factor], v[::factor, ::factor])
    reduced = probe._webp_reduced(data, size)
    assert reduced is not None and reduced.chroma is not None
    assert np.array_equal(np.asarray(reduced.image), expected_grey)
    assert np.array_equal(reduced.chroma, expected_chroma)
    assert probe._webp_reduced(data, (size[0] + 1, size[1])) is None  # a header/planes size mismatch is refused


def test_padded_yuv_rows_are_read_through_their_stride() -> None:
    """libwebp may hand out rows longer than the image (its API returns a stride): the padding is not image."""
    import numpy as np

    from curator.scan import probe
    from curator.scan.fastdecode import YUVPlanes

    rng = np.random.default_rng(0)
    width, height, pad = 301, 263, 13
    luma = rng.integers(16, 236, (height, width), dtype=np.uint8)
    u = rng.integers(16, 241, ((height + 1) // 2, (width + 1) // 2), dtype=np.uint8)
    v = rng.integers(16, 241, u.shape, dtype=np.uint8)

    def padded(plane: np.ndarray) -> np.ndarray:
        return np.concatenate([plane, np.full((plane.shape[0], pad), 255, np.uint8)], axis=1)

    tight = probe._yuv_reduced(YUVPlanes(width, height, luma, u, v), (width, height))
    loose = probe._yuv_reduced(YUVPlanes(width, height, padded(luma), padded(u), padded(v)), (width, height))
    assert tight is not None and loose is not None and tight.chroma is not None and loose.chroma is not None
    assert np.array_equal(np.asarray(tight.image), np.asarray(loose.image))
    assert np.array_equal(tight.chroma, loose.chroma)
