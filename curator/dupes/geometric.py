"""Near copies a whole-image hash misses: crops, small rotations and local edits (text, watermarks, retouches).

Works on the 64x64 grey thumbnails the scan stores (``curator.scan.hashing``), in three stages:

1. **Candidates.** Each thumbnail becomes a 16x16 block average, blurred, zero-mean and unit-norm: a descriptor
   that moves little under a crop of a few percent, a rotation of a few degrees or a caption burnt into a
   corner. Pairs whose descriptors correlate at ``min_similarity`` or more (at most ``per_image`` best partners
   per image) are candidates; one matrix product per block of rows, so 10,000 images take about a second.
2. **Signatures.** For every image, approximate pHashes of the windows a trainer's edit would leave: 81 crops
   (0, 3 or 6 px of 64 off each side, that is up to 9.4 %) and four rotations (+-2, +-4 degrees, cropped to
   the largest window of the same shape, for the image's true aspect ratio). They are linear projections of
   the thumbnail (resampling and the 8x8 low-frequency DCT folded into small matrices), then signs against
   the median, as pHash does. A candidate pair is kept when one image's pHash lies within
   ``signature_distance`` bits of a signature of the other.
3. **Verification.** The best window is cut from the thumbnail with Pillow (crops refined a pixel at a time),
   its pHash computed exactly as imagehash does, and compared with the other image's pHash; the detail
   similarity (correlation of the high-pass 32x32 images) must agree. The result names the transform: the
   crop per side, the rotation, or a local edit when the whole frames match with a larger distance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from itertools import product
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from curator.scan.hashing import HASH_SIDE, LOW_FREQ, THUMB_SIDE, hash_input, median_bits, phash_bits

if TYPE_CHECKING:
    from collections.abc import Callable

    from scipy.sparse import csr_matrix

DESCRIPTOR_SIDE = 16
CROP_STEPS = (0, 3, 6)  # px of a THUMB_SIDE thumbnail cut from a side
ROTATIONS = (-4.0, -2.0, 2.0, 4.0)  # degrees
ASPECT_BINS = 24  # rotation signatures are built for the aspect ratio rounded to one of these (log scale)
_BLOCK_ROWS = 256  # rows of a similarity block: 256 x 100,000 float32 is 100 MB
_SIGNATURE_CHUNK = 1024  # thumbnails whose window signatures are worked out at once (float64 temporaries)
_COMPACT_PAIRS = 1_000_000  # candidate pairs gathered before those that cannot be among an image's best are dropped
_PAIR_CHUNK = 65_536  # candidate pairs whose variant distances are worked out at once
_CHUNK = 4096  # thumbnails whose descriptors / detail images are worked out at once (float32 temporaries)

Thumbs = NDArray[np.uint8]  # (n, 64, 64)
Hashes = NDArray[np.uint64]


@dataclass(frozen=True, slots=True)
class Variant:
    """A window of the thumbnail: a crop ``box`` (left, top, right, bottom) or a rotation ``angle``."""

    box: tuple[int, int, int, int] = (0, 0, THUMB_SIDE, THUMB_SIDE)
    angle: float = 0.0

    @property
    def identity(self) -> bool:
        return self.angle == 0.0 and self.box == (0, 0, THUMB_SIDE, THUMB_SIDE)

    def describe(self) -> str:
        if self.angle:
            return f"rotated {abs(self.angle):g}° {'anticlockwise' if self.angle > 0 else 'clockwise'}"
        left, top, right, bottom = self.box
        cuts = [
            (name, value / THUMB_SIDE)
            for name, value in (("left", left), ("right", THUMB_SIDE - right), ("top", top),
                                ("bottom", THUMB_SIDE - bottom))
            if value
        ]  # fmt: skip
        if not cuts:
            return "whole frame"
        return "cropped " + ", ".join(f"{share:.0%} {name}" for name, share in cuts)


CROPS = tuple(
    Variant(box=(left, top, THUMB_SIDE - right, THUMB_SIDE - bottom))
    for left, right, top, bottom in product(CROP_STEPS, repeat=4)
)
VARIANTS = CROPS + tuple(Variant(angle=a) for a in ROTATIONS)


@dataclass(frozen=True, slots=True)
class Match:
    """A verified near copy: ``copy`` is ``variant`` of ``original``, ``distance`` bits apart (exact pHash)."""

    original: int
    copy: int
    variant: Variant
    distance: int
    detail: float  # correlation of the high-pass 32x32 images, -1..1
    similarity: float  # descriptor correlation, -1..1


# ---------------------------------------------------------------------------------------------- descriptors


def _blur_matrix(side: int, sigma: float = 1.0) -> NDArray[np.float32]:
    """A (side, side) Gaussian blur with reflected edges, as a matrix applied to rows and columns."""
    radius = int(math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    matrix = np.zeros((side, side), dtype=np.float64)
    for row in range(side):
        for offset, weight in zip(range(-radius, radius + 1), taps, strict=True):
            col = row + offset
            col = -col - 1 if col < 0 else (2 * side - col - 1 if col >= side else col)
            matrix[row, col] += weight
    return matrix.astype(np.float32)


def descriptors(thumbs: Thumbs, rows: NDArray[np.int64] | None = None) -> NDArray[np.float32]:
    """Blurred 16x16 block averages, zero-mean and unit-norm: (n, 256) float32 (of ``thumbs[rows]`` when given,
    gathered a chunk at a time so the thumbnails are never copied whole)."""
    rows = np.arange(len(thumbs)) if rows is None else rows
    out = np.empty((len(rows), DESCRIPTOR_SIDE * DESCRIPTOR_SIDE), dtype=np.float32)
    for start in range(0, len(rows), _CHUNK):
        out[start : start + _CHUNK] = _descriptors(thumbs[rows[start : start + _CHUNK]])
    return out


def _descriptors(thumbs: Thumbs) -> NDArray[np.float32]:
    n = len(thumbs)
    factor = THUMB_SIDE // DESCRIPTOR_SIDE
    blocks = thumbs.reshape(n, DESCRIPTOR_SIDE, factor, DESCRIPTOR_SIDE, factor).mean(axis=(2, 4), dtype=np.float32)
    blur = _blur_matrix(DESCRIPTOR_SIDE)
    smooth = blur @ blocks @ blur.T
    flat = smooth.reshape(n, -1)
    flat -= flat.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    return np.asarray(flat / np.maximum(norms, 1e-6), dtype=np.float32)


def similar_pairs(
    desc: NDArray[np.float32], min_similarity: float, per_image: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
    """Pairs (i < j) whose descriptors correlate at ``min_similarity`` or more, among each image's
    ``per_image`` most similar partners (a pair is kept when it is among the best of either image).

    Each pair is correlated once (the upper triangle, ``_BLOCK_ROWS`` rows at a time); within a block only
    the entries among the best ``per_image`` of their row or of their column can be among an image's best
    overall, so only those are kept, and the best partners of each image are chosen from them at the end."""
    n = len(desc)
    keep = min(per_image, max(0, n - 1))
    if n < 2 or keep == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0, dtype=np.float32)
    index = np.int32 if n < 2**31 else np.int64  # positions are kept in 4 bytes: the candidates are millions
    found_i: list[NDArray[np.integer]] = []
    found_j: list[NDArray[np.integer]] = []
    found_s: list[NDArray[np.float32]] = []
    pending = 0
    buffer = np.empty(min(_BLOCK_ROWS, n) * n, dtype=np.float32)  # one similarity block, reused
    for start in range(0, n, _BLOCK_ROWS):
        stop = min(n, start + _BLOCK_ROWS)
        sims = buffer[: (stop - start) * (n - start)].reshape(stop - start, n - start)
        np.matmul(desc[start:stop], desc[start:].T, out=sims)  # columns start..n: every pair once
        hit = sims >= min_similarity
        hit[:, : stop - start] &= np.triu(np.ones((stop - start, stop - start), dtype=bool), k=1)  # j > i only
        rows, cols = np.nonzero(hit)
        del hit
        values = sims[rows, cols]
        best = _best_of_groups(rows, values, keep, stop - start)
        best |= _best_of_groups(cols, values, keep, n - start)
        found_i.append((rows[best] + start).astype(index))
        found_j.append((cols[best] + start).astype(index))
        found_s.append(values[best])
        pending += int(best.sum())
        if pending > _COMPACT_PAIRS:  # a pair among an image's best overall is among its best in any subset
            found_i, found_j, found_s = _compact(found_i, found_j, found_s, n, keep)
            pending = 0
    (i,), (j,), (s,) = _compact(found_i, found_j, found_s, n, keep, final=True)
    chosen = _best_partners(i, j, s, n, keep)
    i, j, s = i[chosen], j[chosen], s[chosen]
    order = np.lexsort((j, i))
    return i[order].astype(np.int64), j[order].astype(np.int64), s[order]


def _best_of_groups(group: NDArray[np.int64], values: NDArray[np.float32], keep: int, groups: int) -> NDArray[np.bool_]:
    """Which entries are among the ``keep`` highest ``values`` of their ``group`` (a row or a column of a block):
    every entry of a group with ``keep`` entries or fewer; the crowded groups are ranked with one sort of
    their entries only (never a dense row of the block), on a float64 key ``group + (1 - value) / 4`` that
    orders by group, then by value, exactly (a float32 in -1..1 needs far fewer bits than the key has left)."""
    best = np.bincount(group, minlength=groups)[group] <= keep
    crowded = np.flatnonzero(~best)
    if len(crowded):
        members = group[crowded]
        key = members + (1.0 - values[crowded].astype(np.float64)) * 0.25
        order = np.argsort(key)
        ranked = members[order]
        firsts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
        rank = np.arange(len(order)) - np.repeat(firsts, np.diff(np.r_[firsts, len(order)]))
        best[crowded[order[rank < keep]]] = True
    return best


def _compact(
    found_i: list[NDArray[np.integer]], found_j: list[NDArray[np.integer]], found_s: list[NDArray[np.float32]],
    n: int, keep: int, final: bool = False,
) -> tuple[list[NDArray[np.integer]], list[NDArray[np.integer]], list[NDArray[np.float32]]]:
    """The pairs found so far as one array each, less those among neither image's ``keep`` best of them
    (``final``: joined only): at 100,000 crowded images the blocks' candidates were about 9 million pairs."""
    i = np.concatenate(found_i) if found_i else np.empty(0, dtype=np.int64)
    j = np.concatenate(found_j) if found_j else np.empty(0, dtype=np.int64)
    s = np.concatenate(found_s).astype(np.float32, copy=False) if found_s else np.empty(0, dtype=np.float32)
    if not final:
        chosen = _best_partners(i, j, s, n, keep)
        i, j, s = i[chosen], j[chosen], s[chosen]
    return [i], [j], [s]


def _best_partners(
    i: NDArray[np.integer], j: NDArray[np.integer], s: NDArray[np.float32], n: int, keep: int
) -> NDArray[np.bool_]:
    """Which pairs are among the ``keep`` most similar partners of at least one of their two images.

    Entry p of the pairs sorted by image (most similar first) ranks ``keep`` or lower in its image exactly when
    the entry ``keep`` places before it is of the same image: no rank array is needed (with 4-byte positions
    the search's peak at 100,000 crowded images went from 359 to 216 MB, the same pairs)."""
    count = len(i)
    image = np.concatenate([i, j])
    order = np.lexsort((-np.concatenate([s, s]), image))  # by image, most similar first
    sorted_image = image[order]
    del image
    among_best = np.ones(2 * count, dtype=bool)
    among_best[keep:] = sorted_image[keep:] != sorted_image[:-keep] if keep else False
    chosen = np.zeros(count, dtype=bool)
    chosen[order[among_best] % max(count, 1)] = True  # entries count.. are the j side of pairs 0..
    return chosen


# ---------------------------------------------------------------------------------------------- signatures


def closest_variants(
    sigs: Hashes, rows: NDArray[np.int64], targets: Hashes
) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """For each pair k: the fewest bits between a variant signature of ``sigs[rows[k]]`` and ``targets[k]``,
    and that variant's position in ``VARIANTS`` (the first of equals), ``_PAIR_CHUNK`` pairs at a time (all
    of a crowded set's pairs at once held about 1 GB of signature copies)."""
    best = np.empty(len(rows), dtype=np.uint8)
    which = np.empty(len(rows), dtype=np.int64)
    for start in range(0, len(rows), _PAIR_CHUNK):
        part = slice(start, start + _PAIR_CHUNK)
        bits = np.bitwise_count(sigs[rows[part]] ^ targets[part][:, None])
        which[part] = bits.argmin(axis=1)
        best[part] = np.take_along_axis(bits, which[part][:, None], axis=1)[:, 0]
    return best, which


def _lanczos_weights(span: int, out: int) -> NDArray[np.float64]:
    """Antialiased LANCZOS weights (out, span) resizing ``span`` samples to ``out`` (as Pillow does)."""
    scale = span / out
    filterscale = max(scale, 1.0)
    support = 3.0 * filterscale
    matrix = np.zeros((out, span))
    for o in range(out):
        center = (o + 0.5) * scale
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), span)
        x = (np.arange(lo, hi) - center + 0.5) / filterscale
        w = np.sinc(x) * np.sinc(x / 3) * (np.abs(x) < 3)
        matrix[o, lo:hi] = w / w.sum()
    return matrix


@lru_cache(maxsize=1)
def _dct_rows() -> NDArray[np.float64]:
    """The LOW_FREQ lowest DCT-II basis rows over HASH_SIDE samples (unnormalised, as scipy's)."""
    k = np.arange(LOW_FREQ)[:, None]
    x = np.arange(HASH_SIDE)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * x + 1) / (2 * HASH_SIDE))


@lru_cache(maxsize=1)
def _crop_projections() -> tuple[NDArray[np.float64], list[tuple[int, int]]]:
    """(len(steps)^2 * 8, 64) stacked projections: DCT rows of the 32-sample resize of each window
    [a, 64 - b) of a thumbnail axis, and the (a, b) pairs in stacking order."""
    dct = _dct_rows()
    spans = [(a, b) for a, b in product(CROP_STEPS, repeat=2)]
    blocks = []
    for a, b in spans:
        block = np.zeros((LOW_FREQ, THUMB_SIDE))
        block[:, a : THUMB_SIDE - b] = dct @ _lanczos_weights(THUMB_SIDE - a - b, HASH_SIDE)
        blocks.append(block)
    return np.concatenate(blocks), spans


def crop_signatures(thumbs: Thumbs) -> Hashes:
    """(n, len(CROPS)) approximate pHashes of every crop window, in ``CROPS`` order."""
    projection, spans = _crop_projections()
    index = {span: k for k, span in enumerate(spans)}
    n = len(thumbs)
    rows = np.matmul(projection, thumbs.astype(np.float64))  # (n, S*8, 64): vertical windows
    full = rows @ projection.T  # (n, S*8, S*8): every vertical window x every horizontal window
    s = len(spans)
    blocks = full.reshape(n, s, LOW_FREQ, s, LOW_FREQ).transpose(0, 1, 3, 2, 4)  # (n, tb, lr, 8, 8)
    out = np.empty((n, len(CROPS)), dtype=np.uint64)
    for v, variant in enumerate(CROPS):
        left, top, right, bottom = variant.box
        tb, lr = index[(top, THUMB_SIDE - bottom)], index[(left, THUMB_SIDE - right)]
        out[:, v] = median_bits(blocks[:, tb, lr].reshape(n, LOW_FREQ * LOW_FREQ))
    return out


def _inner_scale(angle: float, aspect: float) -> float:
    """Largest f such that an f-scaled, same-aspect rectangle fits inside the image rotated by ``angle``."""
    a = math.radians(abs(angle))
    w, h = aspect, 1.0
    return min(w / (w * math.cos(a) + h * math.sin(a)), h / (w * math.sin(a) + h * math.cos(a)))


def rotation_source(angle: float, aspect: float, side: int) -> NDArray[np.float64]:
    """Thumbnail coordinates (side*side, 2) (x, y) sampled by each pixel of a side x side window of the image
    rotated by ``angle`` degrees (anticlockwise) and cropped to its largest same-shape inner rectangle.
    ``aspect`` is the image's width / height; the thumbnail squashes it to a square."""
    f = _inner_scale(angle, aspect)
    a = math.radians(angle)
    cos, sin = math.cos(a), math.sin(a)
    q = (np.arange(side) + 0.5) / side - 0.5
    qx, qy = np.meshgrid(q, q)  # rows are y
    px, py = f * qx * aspect, f * qy  # offsets from the centre in units of the image height
    # an anticlockwise turn (y down): the output offset p shows the source offset R^T p
    sx, sy = cos * px - sin * py, sin * px + cos * py
    tx = (sx / aspect + 0.5) * THUMB_SIDE
    ty = (sy + 0.5) * THUMB_SIDE
    return np.stack([tx.ravel(), ty.ravel()], axis=1)


def _bilinear(points: NDArray[np.float64]) -> csr_matrix:
    """Sparse (len(points), 64*64) bilinear sampling of a thumbnail at pixel-centre coordinates (edges clamped)."""
    from scipy.sparse import csr_matrix

    x = np.clip(points[:, 0] - 0.5, 0, THUMB_SIDE - 1)
    y = np.clip(points[:, 1] - 0.5, 0, THUMB_SIDE - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, THUMB_SIDE - 1), np.minimum(y0 + 1, THUMB_SIDE - 1)
    fx, fy = x - x0, y - y0
    rows = np.tile(np.arange(len(points)), 4)
    cols = np.concatenate([y0 * THUMB_SIDE + x0, y0 * THUMB_SIDE + x1, y1 * THUMB_SIDE + x0, y1 * THUMB_SIDE + x1])
    weights = np.concatenate([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy])
    return csr_matrix((weights, (rows, cols)), shape=(len(points), THUMB_SIDE * THUMB_SIDE))


@lru_cache(maxsize=ASPECT_BINS * len(ROTATIONS))
def _rotation_projection(angle: float, aspect: float) -> NDArray[np.float64]:
    """(64, 64*64): the 8x8 low DCT of the 32x32 rotated window, as one linear map of the thumbnail."""
    from scipy.sparse import csr_matrix

    fine = _bilinear(rotation_source(angle, aspect, THUMB_SIDE))  # sample at 64x64, then 2x2 box to 32x32
    y, x = np.divmod(np.arange(THUMB_SIDE * THUMB_SIDE), THUMB_SIDE)
    box = csr_matrix(
        (np.full(len(y), 0.25), ((y // 2) * HASH_SIDE + x // 2, np.arange(len(y)))),
        shape=(HASH_SIDE * HASH_SIDE, THUMB_SIDE * THUMB_SIDE),
    )
    dct = _dct_rows()
    dct2 = np.kron(dct, dct)  # (64, 1024): rows u*8+v
    return np.asarray((box @ fine).T @ dct2.T).T


def _aspect_bin(aspect: float) -> float:
    """The aspect ratio rounded on a log scale to one of ASPECT_BINS values between 1:4 and 4:1."""
    clipped = min(max(aspect, 0.25), 4.0)
    step = math.log(16.0) / (ASPECT_BINS - 1)
    k = round((math.log(clipped) + math.log(4.0)) / step)
    return float(round(math.exp(k * step - math.log(4.0)), 4))


def rotation_signatures(thumbs: Thumbs, aspects: NDArray[np.float64]) -> Hashes:
    """(n, len(ROTATIONS)) approximate pHashes of the rotated windows, in ``ROTATIONS`` order."""
    n = len(thumbs)
    out = np.empty((n, len(ROTATIONS)), dtype=np.uint64)
    bins = np.array([_aspect_bin(float(a)) for a in aspects])
    flat = thumbs.reshape(n, -1).astype(np.float64)
    for value in np.unique(bins):
        members = np.flatnonzero(bins == value)
        for r, angle in enumerate(ROTATIONS):
            coefficients = flat[members] @ _rotation_projection(angle, float(value)).T  # (m, 64)
            out[members, r] = median_bits(coefficients)
    return out


def signatures(thumbs: Thumbs, aspects: NDArray[np.float64], rows: NDArray[np.int64] | None = None) -> Hashes:
    """(n, len(VARIANTS)) signatures of every variant window of every thumbnail (of ``thumbs[rows]`` when given;
    ``aspects`` is then per row)."""
    rows = np.arange(len(thumbs)) if rows is None else rows
    out = np.empty((len(rows), len(VARIANTS)), dtype=np.uint64)
    for start in range(0, len(rows), _SIGNATURE_CHUNK):  # bounded memory: each image's row is its own
        part = slice(start, start + _SIGNATURE_CHUNK)
        chunk = thumbs[rows[part]]
        out[part] = np.concatenate([crop_signatures(chunk), rotation_signatures(chunk, aspects[part])], axis=1)
    return out


# ---------------------------------------------------------------------------------------------- verification


def _window(thumb: NDArray[np.uint8], variant: Variant, aspect: float) -> Image.Image:
    """The variant's window of a thumbnail as an L image (Pillow: crop, or an affine map with BICUBIC)."""
    image = Image.fromarray(np.ascontiguousarray(thumb))
    if not variant.angle:
        return image.crop(variant.box)
    corners = rotation_source(variant.angle, aspect, 2)  # pixel centres (0.25, 0.75) of a 2x2 grid
    # solve the affine map output (u, v) in [0, 64) -> thumbnail (x, y) from three sample points
    uv = np.array([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75]]) * THUMB_SIDE
    src = corners[[0, 1, 2]]
    design = np.hstack([uv, np.ones((3, 1))])
    coeff_x = np.linalg.solve(design, src[:, 0])
    coeff_y = np.linalg.solve(design, src[:, 1])
    data = (*coeff_x.tolist(), *coeff_y.tolist())
    return image.transform((THUMB_SIDE, THUMB_SIDE), Image.Transform.AFFINE, data, Image.Resampling.BICUBIC)


def high_pass(small: NDArray[np.uint8]) -> NDArray[np.float32]:
    """(n, 32, 32) images -> (n, 1024) unit vectors of their fine structure (minus the 5x5 local mean);
    the dot product of two is their detail similarity, -1..1. Worked out ``_CHUNK`` images at a time (the
    float temporaries of 100,000 at once are gigabytes)."""
    out = np.empty((len(small), HASH_SIDE * HASH_SIDE), dtype=np.float32)
    for start in range(0, len(small), _CHUNK):
        out[start : start + _CHUNK] = _high_pass(small[start : start + _CHUNK])
    return out


def _high_pass(small: NDArray[np.uint8]) -> NDArray[np.float32]:
    v = small.astype(np.float32)
    padded = np.pad(v, ((0, 0), (2, 2), (2, 2)), mode="reflect")
    csum = np.pad(padded.cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
    local = (csum[:, 5:, 5:] - csum[:, :-5, 5:] - csum[:, 5:, :-5] + csum[:, :-5, :-5]) / 25.0
    out = (v - local).reshape(len(small), -1)
    out -= out.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.asarray(out / np.maximum(norms, 1e-6), dtype=np.float32)


class DetailImages:
    """The high-pass images of n images (image k's thumbnail ``thumbs[rows[k]]``), worked out when rows are
    asked for: each image's 32x32 uint8 pHash input is made the first time it is needed and kept (1 KB an
    image, in an array whose pages the system gives only when written), so the images no pair needs cost
    nothing: at 100,000 crowded images the links asked for 12,396 of them (about 0.1 GB less than making all
    first). Each row is the same bits whatever the batch it is worked out in (``tests/test_dupes.py``)."""

    __slots__ = ("_known", "_rows", "_small", "_thumbs")

    def __init__(self, thumbs: Thumbs | Callable[[], Thumbs], rows: NDArray[np.int64] | None = None) -> None:
        """``thumbs``: the thumbnails, or what returns them when they are needed (not held between uses)."""
        self._thumbs = thumbs
        self._rows = np.arange(len(self._thumbnails())) if rows is None else rows
        self._small = np.zeros((len(self._rows), HASH_SIDE, HASH_SIDE), dtype=np.uint8)  # calloc: lazily paged
        self._known = np.zeros(len(self._rows), dtype=np.bool_)

    def __len__(self) -> int:
        return len(self._rows)

    def smalls(self, rows: NDArray[np.int64] | list[int]) -> NDArray[np.uint8]:
        """(len(rows), 32, 32) pHash inputs of those images, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        missing = np.unique(rows[~self._known[rows]])
        if len(missing):
            self._small[missing] = hash_inputs(self._thumbnails(), self._rows[missing])
            self._known[missing] = True
        return self._small[rows]

    def _thumbnails(self) -> Thumbs:
        return self._thumbs() if callable(self._thumbs) else self._thumbs

    def of(self, rows: NDArray[np.int64] | list[int]) -> NDArray[np.float32]:
        """(len(rows), 1024) high-pass vectors of those images, in that order."""
        return high_pass(self.smalls(rows))

    def unique(self, rows: NDArray[np.int64]) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """The high-pass vectors of the distinct ``rows`` (each worked out once) and, per entry of ``rows``, its
        position among them."""
        distinct, inverse = np.unique(rows, return_inverse=True)
        return self.of(distinct), inverse.reshape(-1)


def mirrored(detail: NDArray[np.float32]) -> NDArray[np.float32]:
    """The high-pass vectors of the mirrored images (the filter is symmetric, so mirroring commutes)."""
    n = len(detail)
    return np.ascontiguousarray(detail.reshape(n, HASH_SIDE, HASH_SIDE)[:, :, ::-1].reshape(n, -1))


def _window_smalls(thumbs: Thumbs, aspects: NDArray[np.float64], jobs: list[tuple[int, Variant]],
                   rows: NDArray[np.int64] | None = None) -> NDArray[np.uint8]:
    """The 32x32 pHash inputs of each (image, variant) window (Pillow crop/affine, then LANCZOS); image k's
    thumbnail is ``thumbs[rows[k]]`` when ``rows`` is given."""
    out = np.empty((len(jobs), HASH_SIDE, HASH_SIDE), dtype=np.uint8)
    for n, (k, variant) in enumerate(jobs):
        window = _window(thumbs[k if rows is None else int(rows[k])], variant, float(aspects[k]))
        out[n] = np.asarray(window.resize((HASH_SIDE, HASH_SIDE), Image.Resampling.LANCZOS))
    return out


def _neighbours(variant: Variant) -> list[Variant]:
    """Crop boxes one pixel wider or narrower on one side (within the 12 px search range)."""
    if variant.angle:
        return []
    out = []
    box = list(variant.box)
    for side in range(4):
        for step in (-1, 1):
            moved = list(box)
            moved[side] += step
            cut = moved[side] if side < 2 else THUMB_SIDE - moved[side]
            if 0 <= cut <= 12 and moved[2] - moved[0] >= 32 and moved[3] - moved[1] >= 32:
                out.append(Variant(box=(moved[0], moved[1], moved[2], moved[3])))
    return out


@dataclass(slots=True)
class _Trial:
    original: int
    copy: int
    variant: Variant
    distance: int = 64
    small: NDArray[np.uint8] | None = None


def verify(
    thumbs: Thumbs,
    aspects: NDArray[np.float64],
    phash: Hashes,
    detail: DetailImages,
    candidates: list[tuple[int, int, Variant]],
    hopeless: int,
    rounds: int = 2,
    rows: NDArray[np.int64] | None = None,
) -> list[tuple[Variant, int, float]]:
    """Exact check of each (original, copy, variant) candidate: the window's pHash as imagehash computes it,
    refined a pixel per side per round (crops only, for candidates within ``hopeless`` bits), and the detail
    similarity of the best window with the copy (``detail``: every image's, by position). Returns (variant,
    distance, detail) per candidate. Image k's thumbnail is ``thumbs[rows[k]]`` when ``rows`` is given (no copy
    of the thumbnails). Candidates are checked ``_CHUNK`` at a time: each is refined on its own, so the result
    is the same, and the windows of up to eight neighbours per candidate are never held for all at once."""
    checked: list[tuple[Variant, int, float]] = []
    for start in range(0, len(candidates), _CHUNK):
        trials = [_Trial(o, c, v) for o, c, v in candidates[start : start + _CHUNK]]
        _refine(trials, thumbs, aspects, phash, hopeless, rounds, rows)
        window_detail = high_pass(np.stack([t.small for t in trials if t.small is not None]))
        copy_detail, at = detail.unique(np.array([t.copy for t in trials], dtype=np.int64))
        checked += [(t.variant, t.distance, float(window_detail[n] @ copy_detail[at[n]])) for n, t in enumerate(trials)]
    return checked


def _refine(trials: list[_Trial], thumbs: Thumbs, aspects: NDArray[np.float64], phash: Hashes, hopeless: int,
            rounds: int, rows: NDArray[np.int64] | None) -> None:
    """Each trial's window pHash distance to its copy, then up to ``rounds`` rounds of moving one side of a
    crop by a pixel while that lowers the distance (trials within ``hopeless`` bits); in place."""
    smalls = _window_smalls(thumbs, aspects, [(t.original, t.variant) for t in trials], rows)
    for t, h, small in zip(trials, phash_bits(smalls).tolist(), smalls, strict=True):
        t.distance, t.small = (h ^ int(phash[t.copy])).bit_count(), small
    for _ in range(rounds):
        jobs: list[tuple[int, Variant]] = []
        owners: list[int] = []
        for n, t in enumerate(trials):
            if t.distance <= hopeless and not t.variant.angle:
                for neighbour in _neighbours(t.variant):
                    jobs.append((t.original, neighbour))
                    owners.append(n)
        if not jobs:
            break
        smalls = _window_smalls(thumbs, aspects, jobs, rows)
        improved = False
        for (_k, neighbour), n, h, small in zip(jobs, owners, phash_bits(smalls).tolist(), smalls, strict=True):
            t = trials[n]
            d = (h ^ int(phash[t.copy])).bit_count()
            if d < t.distance:
                t.variant, t.distance, t.small, improved = neighbour, d, small, True
        if not improved:
            break


def hash_inputs(thumbs: Thumbs, rows: NDArray[np.int64] | None = None) -> NDArray[np.uint8]:
    """(n, 32, 32) pHash inputs of the thumbnails (of ``thumbs[rows]`` when given)."""
    rows = np.arange(len(thumbs)) if rows is None else rows
    out = np.empty((len(rows), HASH_SIDE, HASH_SIDE), dtype=np.uint8)
    for n, k in enumerate(rows.tolist()):
        out[n] = hash_input(thumbs[k])
    return out
