"""The edge bitmap the scan keeps per image, for the repeated-watermark check (``curator.checks.watermark``).

The reduced decode the scan already has (short side 128 px or more, EXIF orientation applied) is box-resized to
``EDGE_SIDE`` x ``EDGE_SIDE`` grey (the aspect ratio is not kept, as for the thumbnail, so a mark at the same
place in images of one shape lands on the same pixels), and a pixel is an edge where its horizontal or vertical
central difference reaches ``EDGE_STEP`` grey levels. The bitmap is stored packed, 1 bit per pixel, row-major
(``np.packbits`` order): 2 KiB per image.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image

EDGE_SIDE = 128
EDGE_BYTES = EDGE_SIDE * EDGE_SIDE // 8
EDGE_STEP = 24  # |I(x+1) - I(x-1)| at least this (0..255): a step of 12 grey levels per pixel


def edge_map(grey: Image.Image) -> NDArray[np.bool_]:
    """The (EDGE_SIDE, EDGE_SIDE) edge map of an 8-bit grey ("L") image."""
    if grey.mode != "L":
        raise ValueError(f"edge_map needs an L image, got mode {grey.mode}")
    small = grey if grey.size == (EDGE_SIDE, EDGE_SIDE) else grey.resize((EDGE_SIDE, EDGE_SIDE), Image.Resampling.BOX)
    pixels = np.asarray(small, dtype=np.uint8)
    edges = np.zeros((EDGE_SIDE, EDGE_SIDE), dtype=np.bool_)
    for target, after, before in (
        (edges[:, 1:-1], pixels[:, 2:], pixels[:, :-2]),
        (edges[1:-1, :], pixels[2:, :], pixels[:-2, :]),
    ):  # |after - before| in uint8 as max - min: no widening copy
        target |= (np.maximum(after, before) - np.minimum(after, before)) >= EDGE_STEP
    return edges


def edge_bits(grey: Image.Image) -> bytes:
    """:func:`edge_map` packed as the index stores it (EDGE_BYTES bytes)."""
    return np.packbits(edge_map(grey)).tobytes()


def unpack_edges(blobs: list[bytes]) -> NDArray[np.bool_]:
    """Stored bitmaps -> (n, EDGE_SIDE, EDGE_SIDE) bool; a blob of the wrong length raises ValueError."""
    if any(len(blob) != EDGE_BYTES for blob in blobs):
        raise ValueError(f"an edge bitmap must be {EDGE_BYTES} bytes")
    packed = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(len(blobs), EDGE_BYTES)
    return np.unpackbits(packed, axis=1).astype(np.bool_).reshape(len(blobs), EDGE_SIDE, EDGE_SIDE)
