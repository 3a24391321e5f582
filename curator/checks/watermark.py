"""Repeated watermarks: a mark at the same place in many images of a set, found from the scan's edge bitmaps.

A watermark, logo or photographer's caption sits at the same place of every image a source publishes, so the
edge bitmaps (``curator.scan.edges``: 128x128, aspect not kept) of the images that carry it share its edges
there. The check, over a set of images (the whole dataset and each concept folder):

1. near duplicates count once (their pHashes within ``DUPLICATE_BITS``: copies share every edge, not a mark);
2. per pixel, the share of images with an edge there (``frequency``), against what the scene explains: a robust
   quadratic fit of the frequency over the frame (skies are smooth at the top, ground is busy at the bottom);
3. pixels in excess of the fit by ``MIN_EXCESS`` and ``Z_EXCESS`` binomial deviations, grouped (letters of a
   word join), form candidate templates; one spanning most of the frame's width or height, or thinner than
   ``MIN_THICKNESS``, is scene structure (a horizon, a studio backdrop's seam, a frame), not a mark;
4. each image's match to a template: the share of the template's edges the image has beyond its own edge
   density around the template (``(m - d) / (1 - d)``), so a busy texture behind the mark does not count as it;
5. a template carried (match over ``CARRIER_MATCH``) by fewer than ``MIN_SHARED`` distinct images is dropped;
   the others are refined on their carriers (the pixels that are edges in half of them and in ``DISCRIMINATION``
   fewer of the other images), twice, and matched again.

An image is flagged when its best match reaches the user threshold (``QualityThresholds.watermark``); the detail
says where the mark is (its bounding box in words and shares of the frame) and how many images share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from curator.records import Flag
from curator.scan.edges import EDGE_BYTES, EDGE_SIDE

MIN_IMAGES = 6  # sets with fewer distinct images are not judged: a shared mark cannot be told from chance
MIN_SHARED = 4  # a template must be carried by at least this many distinct images
MIN_EXCESS = 0.08  # template pixels are edges in this share more of the images than the scene explains
Z_EXCESS = 4.0  # and by this many binomial standard deviations
CARRIER_MATCH = 0.3  # an image with this match carries the template (for counting and refining it)
DISCRIMINATION = 0.35  # a template pixel is an edge in this share more of its carriers than of the other images
MAX_SPAN = 0.75  # a template wider or taller than this share of the frame is scene structure
MIN_THICKNESS = 4  # px of EDGE_SIDE: a thinner template is a line (horizon, seam), not a mark
MIN_CANDIDATE = 12  # excess pixels a candidate needs before it is refined
MIN_PIXELS = 96  # pixels a refined template needs: smaller ones arise by chance in a set of a few dozen images
RING = 6  # px around a template's box where an image's own edge density is measured
DUPLICATE_BITS = 12  # pHash distance under which images count once (versions of one picture: random pairs are ~32 apart)
BLOCK = 8  # frequency block size for the scene fit
CHUNK = 1024  # images unpacked at a time

Packed = NDArray[np.uint8]  # (n, EDGE_BYTES) packed edge bitmaps
Mask = NDArray[np.bool_]  # (EDGE_SIDE, EDGE_SIDE)


@dataclass(frozen=True, slots=True)
class Template:
    """A mark repeated across images: its pixels, bounding box (left, top, right, bottom; exclusive; in
    EDGE_SIDE px) and how many images carry it."""

    mask: Mask
    box: tuple[int, int, int, int]
    shared: int

    def where(self) -> str:
        """Where the mark sits, in words: 'bottom-right corner', 'top centre', 'centre', 'left side', ..."""
        left, top, right, bottom = self.box
        cx, cy = (left + right) / 2 / EDGE_SIDE, (top + bottom) / 2 / EDGE_SIDE
        horizontal = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
        vertical = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else ""
        if horizontal and vertical:
            return f"{vertical}-{horizontal} corner"
        if vertical:
            return f"{vertical} centre"
        return f"{horizontal} side" if horizontal else "centre"

    def extent(self) -> str:
        """The box as shares of the frame: 'x 70-95%, y 88-97%'."""
        left, top, right, bottom = (round(v * 100 / EDGE_SIDE) for v in self.box)
        return f"x {left}-{right}%, y {top}-{bottom}%"


def _unpacked_sum(packed: Packed, rows: NDArray[np.intp]) -> NDArray[np.float64]:
    """Per pixel, how many of the images ``rows`` have an edge there: (EDGE_SIDE, EDGE_SIDE)."""
    total = np.zeros(EDGE_SIDE * EDGE_SIDE, dtype=np.int64)
    for start in range(0, len(rows), CHUNK):
        bits = np.unpackbits(packed[rows[start : start + CHUNK]], axis=1)
        total += bits.sum(axis=0, dtype=np.int64)
    return total.reshape(EDGE_SIDE, EDGE_SIDE).astype(np.float64)


def _scene_fit(frequency: NDArray[np.float64]) -> NDArray[np.float64]:
    """The edge frequency the scene explains: a quadratic surface fitted to block medians, twice dropping the
    blocks furthest above it (where a mark is)."""
    blocks = EDGE_SIDE // BLOCK
    grid = np.median(frequency.reshape(blocks, BLOCK, blocks, BLOCK).transpose(0, 2, 1, 3).reshape(blocks, blocks, -1), axis=2)
    centres = (np.arange(blocks) + 0.5) / blocks - 0.5
    gy, gx = np.meshgrid(centres, centres, indexing="ij")
    design = np.stack([np.ones_like(gx), gx, gy, gx * gx, gy * gy, gx * gy], axis=-1).reshape(-1, 6)
    values = grid.ravel()
    keep = np.ones(values.shape, dtype=np.bool_)
    coefficients: NDArray[np.float64] = np.zeros(6)
    for _ in range(3):
        coefficients = np.asarray(np.linalg.lstsq(design[keep], values[keep], rcond=None)[0], dtype=np.float64)
        residual = values - design @ coefficients
        keep = residual <= np.quantile(residual, 0.8)
    pixels = (np.arange(EDGE_SIDE) + 0.5) / EDGE_SIDE - 0.5
    py, px = np.meshgrid(pixels, pixels, indexing="ij")
    full = np.stack([np.ones_like(px), px, py, px * px, py * py, px * py], axis=-1) @ coefficients
    return np.asarray(np.clip(full, 0.0, 1.0), dtype=np.float64)


def _candidates(frequency: NDArray[np.float64], count: int) -> list[Mask]:
    """Groups of pixels with more edges than the scene explains, that could be a mark."""
    from scipy import ndimage

    base = _scene_fit(frequency)
    deviation = np.sqrt(np.maximum(base * (1.0 - base), 1e-4) / count)
    excess = (frequency - base >= MIN_EXCESS) & (frequency - base >= Z_EXCESS * deviation)
    labels, found = ndimage.label(ndimage.binary_dilation(excess, structure=np.ones((5, 5), dtype=np.bool_)))
    masks: list[Mask] = []
    for label in range(1, found + 1):
        mask = excess & (labels == label)
        if int(mask.sum()) < MIN_CANDIDATE:
            continue
        rows, cols = np.nonzero(mask)
        height, width = int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1
        if max(width, height) > MAX_SPAN * EDGE_SIDE or min(width, height) < MIN_THICKNESS:
            continue
        masks.append(mask)
    return masks


def _box(mask: Mask) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask)
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def _ring(box: tuple[int, int, int, int]) -> Mask:
    """The margin of RING px around a template's box, where an image's own edge density is measured."""
    left, top, right, bottom = box
    ring = np.zeros((EDGE_SIDE, EDGE_SIDE), dtype=np.bool_)
    ring[max(0, top - RING) : bottom + RING, max(0, left - RING) : right + RING] = True
    ring[top:bottom, left:right] = False
    return ring


def _count(packed: Packed, mask: Mask) -> NDArray[np.int64]:
    """Per image, how many of ``mask``'s pixels are edges (CHUNK images at a time: two whole-set temporaries
    were 0.4 GB at 100,000 images)."""
    packed_mask = np.packbits(mask.ravel())
    counts = np.empty(len(packed), dtype=np.int64)
    for start in range(0, len(packed), CHUNK):
        counts[start : start + CHUNK] = np.bitwise_count(packed[start : start + CHUNK] & packed_mask).sum(axis=1)
    return counts


def match(packed: Packed, mask: Mask) -> NDArray[np.float64]:
    """Each image's match to a template (0..1): the share of its edges the image has beyond its own edge
    density in a ring around the template's box."""
    size = int(mask.sum())
    if size == 0 or len(packed) == 0:
        return np.zeros(len(packed))
    ring = _ring(_box(mask))
    inside = _count(packed, mask) / size
    density = _count(packed, ring) / max(1, int(ring.sum()))
    score = (inside - density) / np.maximum(1e-6, 1.0 - density)
    return np.asarray(np.clip(score, 0.0, 1.0), dtype=np.float64)


def distinct_rows(hashes: Sequence[int | None]) -> NDArray[np.intp]:
    """One image of each group of near duplicates (pHashes within DUPLICATE_BITS); images without a hash
    count as distinct."""
    from curator.dupes.search import near_pairs

    known = [n for n, h in enumerate(hashes) if h is not None]
    parent = list(range(len(hashes)))

    def root(n: int) -> int:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    values = np.array([hashes[n] for n in known], dtype=np.uint64)
    left, right, _distance = near_pairs(values, DUPLICATE_BITS)
    for i, j in zip(left.tolist(), right.tolist(), strict=True):
        a, b = root(known[i]), root(known[j])
        if a != b:
            parent[max(a, b)] = min(a, b)
    return np.array([n for n in range(len(hashes)) if root(n) == n], dtype=np.intp)


def _refined(distinct: Packed, mask: Mask) -> Mask | None:
    """A candidate made the mark its carriers share: near the candidate, the pixels that are edges in at least
    half of the images carrying it and in ``DISCRIMINATION`` fewer of the others (so what is busy everywhere
    drops out); twice, each time on the carriers of the last template. None when fewer than MIN_SHARED carry
    it or too little is left."""
    left, top, right, bottom = _box(mask)
    near = np.zeros_like(mask)
    near[max(0, top - 2) : bottom + 2, max(0, left - 2) : right + 2] = True
    template = mask
    for _ in range(2):
        carrying = match(distinct, template) >= CARRIER_MATCH
        carriers, others = np.nonzero(carrying)[0], np.nonzero(~carrying)[0]
        if len(carriers) < MIN_SHARED:
            return None
        inside = _unpacked_sum(distinct, carriers) / len(carriers)
        outside = _unpacked_sum(distinct, others) / max(1, len(others))
        template = near & (inside >= 0.5) & (inside - outside >= DISCRIMINATION)
        if int(template.sum()) < MIN_PIXELS:
            return None
    return template


def find_templates(packed: Packed, hashes: Sequence[int | None]) -> list[Template]:
    """The marks repeated across the images ``packed`` (their pHashes ``hashes``, for near duplicates)."""
    if packed.ndim != 2 or packed.shape[1] != EDGE_BYTES:
        raise ValueError(f"edge bitmaps must be (n, {EDGE_BYTES}) packed bytes, got {packed.shape}")
    rows = distinct_rows(hashes)
    if len(rows) < MIN_IMAGES:
        return []
    distinct = packed[rows]
    frequency = _unpacked_sum(packed, rows) / len(rows)
    templates: list[Template] = []
    for mask in _candidates(frequency, len(rows)):
        template = _refined(distinct, mask)
        if template is not None:
            shared = int(np.count_nonzero(match(packed, template) >= CARRIER_MATCH))
            templates.append(Template(template, _box(template), shared))
    return templates


def watermark_flags(
    paths: Sequence[str],
    packed: Packed,
    hashes: Sequence[int | None],
    threshold: float | None,
    groups: Sequence[str] | None = None,
) -> list[Flag]:
    """A ``watermark`` flag for each image whose best match to a repeated mark reaches ``threshold`` (None: the
    check is off). Marks are looked for over all the images and within each group (concept folder)."""
    if threshold is None or len(paths) == 0:
        return []
    best = np.zeros(len(paths))
    which: list[Template | None] = [None] * len(paths)
    sets = [np.arange(len(paths), dtype=np.intp)]
    if groups is not None and len(set(groups)) > 1:
        for group in sorted(set(groups)):
            sets.append(np.array([n for n, g in enumerate(groups) if g == group], dtype=np.intp))
    for members in sets:
        chosen = packed if len(members) == len(paths) else packed[members]  # the whole set is not copied
        for template in find_templates(chosen, [hashes[n] for n in members.tolist()]):
            scores = match(chosen, template.mask)
            for position, score in zip(members.tolist(), scores.tolist(), strict=True):
                if score > best[position]:
                    best[position], which[position] = score, template
    flags = []
    for n, path in enumerate(paths):
        carried, value = which[n], float(best[n])
        if carried is None or value < threshold:
            continue
        detail = (f"a mark repeated at the same place in {carried.shared} images ({carried.where()}, "
                  f"{carried.extent()} of the frame): {value:.0%} of its edges are here beyond the image's own; "
                  "a watermark, logo or caption the model will learn (crop or inpaint it, or drop the image)")  # fmt: skip
        score = max(0.0, min(1.0, (value - threshold) / (1.0 - threshold))) if threshold < 1 else 1.0
        flags.append(Flag(path, "watermark", detail, score))
    return flags
