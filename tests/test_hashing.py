"""kiln's perceptual hash is imagehash's: the batched path gives imagehash's bits, bit for bit, on real photos."""

from __future__ import annotations

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageOps

from curator.dataset import Dataset
from curator.scan.hashing import hash_input, phash_bits, thumb_hashes, thumbnail
from tests.conftest import photo, save_photo, skimage_data_dir

PHOTOS = sorted(p.name for p in skimage_data_dir().glob("*.png")) + ["rocket.jpg", "retina.jpg", "hubble_deep_field.jpg"]


def _imagehash(image: Image.Image) -> int:
    return int(str(imagehash.phash(image)), 16)


@pytest.mark.parametrize("name", PHOTOS)
def test_batched_phash_is_imagehash_bit_for_bit(name: str) -> None:
    grey = photo(name).convert("L")
    thumb = thumbnail(grey)
    phash, mirror = thumb_hashes(thumb)
    assert phash == _imagehash(Image.fromarray(thumb))
    small = Image.fromarray(hash_input(thumb))
    assert mirror == _imagehash(ImageOps.mirror(small))
    for box in ((0, 0, 64, 64), (3, 0, 64, 61), (6, 6, 58, 58)):  # windows the duplicate search verifies
        window = Image.fromarray(thumb).crop(box)
        resized = np.asarray(window.resize((32, 32), Image.Resampling.LANCZOS))
        assert int(phash_bits(resized[None])[0]) == _imagehash(window)


def test_stored_hash_is_imagehash_of_the_stored_thumbnail(tmp_path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "ds"
    for name, fmt in (("astronaut.png", "jpg"), ("chelsea.png", "png"), ("coffee.png", "webp")):
        save_photo(photo(name), folder / f"{name.split('.')[0]}.{fmt}", **({"quality": 90} if fmt != "png" else {}))
    with Dataset.open(folder) as ds:
        records = ds.images()
        features = ds.duplicate_features(records)
    for k, record in enumerate(records):
        assert features.valid[k]
        assert record.phash == _imagehash(Image.fromarray(features.thumbs[k]))
        with Image.open(record.abs_path) as image:  # and within a few bits of imagehash on the full decode
            assert (record.phash ^ _imagehash(image)).bit_count() <= 6
