"""Perceptual and exact hashes.

``phash``: the classic 64-bit DCT hash: a 32x32 grey thumbnail, its 2-D DCT-II, the 8x8 lowest frequencies
compared with their median (bit set when above). Resizing, re-encoding and mild colour changes move it by a
few bits; unrelated photographs differ in about 32 bits. Bit order: row-major over the 8x8 block, first
coefficient in the most significant bit.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np

HASH_SIDE = 32
LOW_FREQ = 8


@lru_cache(maxsize=4)
def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: ``_dct_matrix(n) @ x`` is the DCT of the column vector ``x``."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix: np.ndarray = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0, :] = np.sqrt(1.0 / n)
    return matrix


_WEIGHTS = (1 << np.arange(LOW_FREQ * LOW_FREQ - 1, -1, -1, dtype=np.uint64)).astype(np.uint64)


def phash_from_grey(grey: np.ndarray) -> int:
    """The 64-bit pHash of a ``HASH_SIDE`` x ``HASH_SIDE`` grey array (any numeric dtype)."""
    if grey.shape != (HASH_SIDE, HASH_SIDE):
        raise ValueError(f"phash needs a {HASH_SIDE}x{HASH_SIDE} array, got {grey.shape}")
    d = _dct_matrix(HASH_SIDE)
    coefficients = (d @ grey.astype(np.float64) @ d.T)[:LOW_FREQ, :LOW_FREQ]
    bits = (coefficients > np.median(coefficients)).ravel()
    return int(np.sum(_WEIGHTS[bits], dtype=np.uint64))


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


def popcount64(values: np.ndarray) -> np.ndarray:
    """Bits set in each uint64."""
    return np.bitwise_count(values.astype(np.uint64, copy=False))
