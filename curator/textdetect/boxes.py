"""Text lines from a detector's probability map, as DB's post-processing finds them, and the share they cover.

A DB detector (PaddleOCR's PP-OCR, docTR) marks the *shrunk core* of each text line; its own post-processing
binarises the map, takes each connected region, drops regions whose mean probability is under a box threshold
(PaddleOCR's ``box_thresh`` 0.6) or whose shorter side is under 3 px of the input, and grows each kept region back to the
line by the "unclip" offset ``D = area * unclip_ratio / perimeter`` (``unclip_ratio`` 1.5). kiln does the same
on the region's moments (the rectangle of the same second moments stands for DB's minimum-area box), and keeps
only *elongated* regions (lines and words: the longer side at least ``min_elongation`` times the shorter),
since a detector that fires on a photograph mostly does so on compact blobs (a cup's rim, a round texture).
The text area is the share of the map within ``D`` of a kept region (one distance transform; overlapping lines
count once, nothing reaches past the image).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

MIN_BOX_SIDE = 3.0  # DB's min_size: a box whose shorter side is under this many input pixels is noise
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def text_line_area(
    text_map: NDArray[np.float32],
    pixel_threshold: float,
    box_threshold: float,
    unclip_ratio: float,
    min_elongation: float,
    cells_per_pixel: float = 1.0,
) -> float:
    """The share of ``text_map`` (probabilities, 2-D) covered by its text lines grown back by the unclip offset;
    ``cells_per_pixel``: map cells per input pixel (1 for DB's full-size map, 1/4 for EAST's)."""
    mask = text_map > pixel_threshold
    labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if count == 0:
        return 0.0
    min_side = MIN_BOX_SIDE * cells_per_pixel
    offsets = _line_offsets(text_map, labels, count, box_threshold, unclip_ratio, min_elongation, min_side)
    if not np.any(offsets >= 0):
        return 0.0
    kept = offsets[labels] >= 0  # offsets[0] (the background) is -1
    distance, nearest = ndimage.distance_transform_edt(~kept, return_indices=True)
    reach = offsets[labels[nearest[0], nearest[1]]]
    return float(np.count_nonzero(distance <= reach)) / text_map.size


def _line_offsets(
    text_map: NDArray[np.float32],
    labels: NDArray[np.int32],
    count: int,
    box_threshold: float,
    unclip_ratio: float,
    min_elongation: float,
    min_side: float,
) -> NDArray[np.float64]:
    """Per label (index 0 the background): DB's unclip offset of a kept line, -1 for a dropped region."""
    index = np.arange(1, count + 1)
    ys, xs = np.indices(labels.shape, dtype=np.float64)
    n = np.asarray(ndimage.sum_labels(np.ones_like(ys), labels, index))
    mean_y, mean_x = (np.asarray(ndimage.sum_labels(v, labels, index)) / n for v in (ys, xs))
    # second moments of each region; + 1/12 for the extent of a pixel (a run of L pixels then has variance L^2/12)
    var_y = np.asarray(ndimage.sum_labels(ys * ys, labels, index)) / n - mean_y**2 + 1 / 12
    var_x = np.asarray(ndimage.sum_labels(xs * xs, labels, index)) / n - mean_x**2 + 1 / 12
    cov = np.asarray(ndimage.sum_labels(ys * xs, labels, index)) / n - mean_y * mean_x
    spread = np.sqrt(((var_y - var_x) / 2) ** 2 + cov**2)
    major = np.maximum((var_y + var_x) / 2 + spread, 1e-9)
    minor = np.maximum((var_y + var_x) / 2 - spread, 1e-9)
    long_side, short_side = np.sqrt(12 * major), np.sqrt(12 * minor)  # the rectangle with those moments
    score = np.asarray(ndimage.mean(text_map, labels, index))
    keep = (score >= box_threshold) & (short_side >= min_side) & (long_side >= min_elongation * short_side)
    offset = long_side * short_side * unclip_ratio / (2 * (long_side + short_side))
    return np.concatenate([[-1.0], np.where(keep, offset, -1.0)])
