"""Perceptual and exact hashes. The perceptual hash is imagehash's pHash; kiln computes it in batches.

Every image gets a 64x64 grey thumbnail (``THUMB_SIDE``; an area average of the reduced decode, EXIF
orientation applied, transparency composited on white) that the index stores. kiln's pHash of an image is
``imagehash.phash(thumbnail)``: the thumbnail resized to 32x32 (LANCZOS), its 2-D DCT-II (``scipy.fftpack``, as
imagehash calls it), the 8x8 lowest frequencies compared with their median. :func:`phash_bits` does the DCT and
median of many 32x32 images at once; ``tests/test_hashing.py`` checks on real photographs that the bits are
imagehash's, bit for bit. Bit order is imagehash's hex order: row-major over the 8x8 block, first coefficient
in the most significant bit, so ``int(str(imagehash.phash(img)), 16)`` is kiln's value.

The mirror hash is the pHash of the horizontally flipped 32x32 image (a flipped copy of an image has, up to
rounding, the original's mirror hash as its pHash).
"""

from __future__ import annotations

import hashlib

import numpy as np
import scipy.fftpack  # imagehash's DCT; imported with this module so forked scan workers inherit it
from numpy.typing import NDArray
from PIL import Image

THUMB_SIDE = 64
HASH_SIDE = 32
LOW_FREQ = 8

Grey = NDArray[np.uint8]

_MIDDLE = (LOW_FREQ * LOW_FREQ // 2 - 1, LOW_FREQ * LOW_FREQ // 2)  # the two middle ranks of 64 values
_WEIGHTS = (np.uint64(1) << np.arange(LOW_FREQ * LOW_FREQ - 1, -1, -1, dtype=np.uint64)).astype(np.uint64)


def thumbnail_image(grey: Image.Image) -> Image.Image:
    """The stored THUMB_SIDE x THUMB_SIDE thumbnail of an 8-bit grey ("L") image, as an L image: an area
    average (Pillow's BOX filter, about five times cheaper than LANCZOS from a reduced decode); the aspect ratio
    is not kept."""
    if grey.mode != "L":
        raise ValueError(f"thumbnail needs an L image, got mode {grey.mode}")
    return grey.resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX)


def thumbnail(grey: Image.Image) -> Grey:
    """:func:`thumbnail_image` as a (THUMB_SIDE, THUMB_SIDE) uint8 array."""
    return np.asarray(thumbnail_image(grey), dtype=np.uint8)


def hash_input_image(thumb: Image.Image) -> Grey:
    """The HASH_SIDE x HASH_SIDE image imagehash's pHash works on: the L image ``thumb`` resized with LANCZOS."""
    return np.asarray(thumb.resize((HASH_SIDE, HASH_SIDE), Image.Resampling.LANCZOS), dtype=np.uint8)


def hash_input(thumb: Grey) -> Grey:
    """:func:`hash_input_image` of a thumbnail held as a uint8 array."""
    return hash_input_image(Image.fromarray(np.ascontiguousarray(thumb, dtype=np.uint8)))


_PHASH_CHUNK = 4096  # images whose pHashes are worked out at once


def phash_bits(stack: NDArray[np.uint8]) -> NDArray[np.uint64]:
    """imagehash's pHash of each HASH_SIDE x HASH_SIDE uint8 image in ``stack`` (shape (n, 32, 32))."""
    if stack.ndim != 3 or stack.shape[1:] != (HASH_SIDE, HASH_SIDE):
        raise ValueError(f"phash_bits needs (n, {HASH_SIDE}, {HASH_SIDE}) images, got {stack.shape}")
    if len(stack) == 0:
        return np.empty(0, dtype=np.uint64)
    if len(stack) > _PHASH_CHUNK:  # bounded float temporaries (8 KiB per image per transform)
        return np.concatenate([phash_bits(stack[k : k + _PHASH_CHUNK]) for k in range(0, len(stack), _PHASH_CHUNK)])
    # imagehash: dct(dct(pixels, axis=0), axis=1)[:8, :8]. Each 1-D transform is independent of the others, so
    # keeping only the 8 low rows before the second transform leaves those values exactly as they were.
    rows = scipy.fftpack.dct(stack, axis=1)[:, :LOW_FREQ, :]
    low = scipy.fftpack.dct(rows, axis=2)[:, :, :LOW_FREQ].reshape(len(stack), LOW_FREQ * LOW_FREQ)
    return median_bits(low)


def median_bits(coefficients: NDArray[np.float64]) -> NDArray[np.uint64]:
    """(..., 64) low-frequency coefficients -> 64-bit hashes (...,): bit set where a coefficient is above its
    row's median, imagehash's order (row-major, first coefficient in the most significant bit)."""
    flat = coefficients.reshape(-1, LOW_FREQ * LOW_FREQ)
    # np.median's own steps (partition at the two middle ranks, their mean), without its generic checks
    middle = np.partition(flat, _MIDDLE, axis=1)[:, _MIDDLE]
    median = (middle[:, :1] + middle[:, 1:]) / 2.0
    bits = flat > median
    packed = (bits.astype(np.uint64) * _WEIGHTS).sum(axis=1, dtype=np.uint64)
    return np.asarray(packed, dtype=np.uint64).reshape(coefficients.shape[:-1])


def thumb_hashes(thumb: Grey | Image.Image) -> tuple[int, int]:
    """(pHash, mirror pHash) of one stored thumbnail (a uint8 array or its L image)."""
    small = hash_input_image(thumb) if isinstance(thumb, Image.Image) else hash_input(thumb)
    both = phash_bits(np.stack([small, small[:, ::-1]]))
    return int(both[0]), int(both[1])


def thumbs_phash(thumbs: NDArray[np.uint8]) -> NDArray[np.uint64]:
    """pHash of each stored thumbnail in ``thumbs`` (n, 64, 64)."""
    if len(thumbs) == 0:
        return np.empty(0, dtype=np.uint64)
    return phash_bits(np.stack([hash_input(t) for t in thumbs]))


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stream_sha256(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def popcount64(values: NDArray[np.uint64]) -> NDArray[np.uint8]:
    """Bits set in each uint64."""
    return np.bitwise_count(values.astype(np.uint64, copy=False))
