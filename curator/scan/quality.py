"""Image statistics for the quality checks, measured once per image during the scan.

The scan decodes every image at a reduced size (short side of 128 px or more; JPEG through libjpeg's DCT
scaling) for the perceptual hash; :func:`measure` takes the same pixels (sharpness, detail and borders at that
size; exposure, entropy and colour on the 64x64 thumbnails) and returns :class:`ImageStats`. The checks in ``curator.checks.quality`` turn the
statistics into scored findings with user thresholds; nothing here decides what is a defect.

* exposure: mean, 5th/50th/95th/99th percentile grey level, share of clipped highlights (>= 250) and shadows (<= 5);
* information: entropy of the grey histogram (bits) and the share of the most common colour (coarsely
  quantised), for flat / single-colour images;
* colour: mean chroma (max - min of R, G, B) and the share of pixels with chroma over 24, for greyscale images
  (None when the file itself is greyscale);
* sharpness: Laplacian energy at the analysed size over the energy one octave down (about 0.5-1 for sharp
  photographs, under 0.15 for blurred ones, independent of contrast), and that coarse energy relative to the
  grey variance (how much detail there is at all);
* borders: for each side, the share of rows/columns that form a flat bar of one level (letterbox/pillarbox),
  and the bars' grey levels;
* JPEG: the quality the quantisation tables were made with (IJG scaling), read from the header;
* transparency: the share of pixels that are not opaque and the mean colour hidden under fully transparent
  pixels (what kohya's ``convert("RGB")`` shows).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from numpy.typing import NDArray

Grey = NDArray[np.uint8]

CHROMA_LEVEL = 24  # chroma above this (0..255) is visible colour
BORDER_STD = 2.5  # a bar row/column varies by less than this (grey levels)
BORDER_STEP = 8.0  # and stays within this of the edge row's level
MAX_BORDER = 0.45  # bars never cover more than this share per side (the rest is content)

# IJG's base luminance quantisation table (JPEG standard, Annex K), in natural order.
_IJG_LUMA = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
     14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
    dtype=np.float64,
)  # fmt: skip


@dataclass(slots=True)
class ImageStats:
    """What the quality checks need from one image (see the module docstring). Grey levels are 0..1."""

    mean: float = 0.0
    p05: float = 0.0
    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    clipped_high: float = 0.0
    clipped_low: float = 0.0
    entropy: float = 0.0
    dominant: float = 0.0
    chroma_mean: float | None = None
    chroma_share: float | None = None
    sharpness: float = 0.0
    detail: float = 0.0
    border_top: float = 0.0
    border_bottom: float = 0.0
    border_left: float = 0.0
    border_right: float = 0.0
    border_levels: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # top, bottom, left, right
    jpeg_quality: int | None = None
    transparent: float = 0.0
    hidden_rgb: tuple[int, int, int] | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for name in _FIELDS:
            value = getattr(self, name)
            out[name] = round(value, 5) if isinstance(value, float) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ImageStats:
        known = {f.name for f in fields(cls)}
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in known}
        return cls(**values)  # type: ignore[arg-type]


_FIELDS = tuple(f.name for f in fields(ImageStats))


def _laplacian_energy(grey: NDArray[np.float32]) -> float:
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return 0.0
    lap = 4.0 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    return float(np.dot(lap.ravel(), lap.ravel()) / lap.size)


def _half(grey: NDArray[np.float32]) -> NDArray[np.float32]:
    """2x2 box mean (one octave down)."""
    h, w = grey.shape[0] // 2 * 2, grey.shape[1] // 2 * 2
    return (grey[0:h:2, 0:w:2] + grey[1:h:2, 0:w:2] + grey[0:h:2, 1:w:2] + grey[1:h:2, 1:w:2]) * 0.25


def _bar(lines_mean: NDArray[np.float64], lines_std: NDArray[np.float64]) -> tuple[float, float]:
    """Share of leading lines forming one flat bar, and its level (0..1)."""
    limit = max(1, int(len(lines_mean) * MAX_BORDER))
    level = lines_mean[0]
    if not lines_std[0] < BORDER_STD:  # the edge line itself varies (most photographs): no bar
        return 0.0, float(level) / 255.0
    flat = (lines_std[:limit] < BORDER_STD) & (np.abs(lines_mean[:limit] - level) < BORDER_STEP)
    count = int(np.argmin(flat)) if not flat.all() else limit
    return count / len(lines_mean), float(level) / 255.0


def _borders(grey: NDArray[np.float32]) -> tuple[float, float, float, float, tuple[float, float, float, float]]:
    row_mean, row_std = grey.mean(axis=1), grey.std(axis=1)
    col_mean, col_std = grey.mean(axis=0), grey.std(axis=0)
    top, top_level = _bar(row_mean, row_std)
    bottom, bottom_level = _bar(row_mean[::-1], row_std[::-1])
    left, left_level = _bar(col_mean, col_std)
    right, right_level = _bar(col_mean[::-1], col_std[::-1])
    return top, bottom, left, right, (top_level, bottom_level, left_level, right_level)


def _dominant(grey: Grey, rgb: NDArray[np.uint8] | None) -> float:
    """Share of the most common coarse colour (16 levels per channel; 16 grey levels without colour)."""
    if rgb is not None:
        red, green, blue = (rgb[..., c] >> 4 for c in range(3))
        codes = (red.astype(np.uint16) << 8) | (green.astype(np.uint16) << 4) | blue
        counts = np.bincount(codes.ravel(), minlength=4096)
        return float(counts.max() / max(1, codes.size))
    counts = np.bincount((grey >> 4).ravel(), minlength=16)
    return float(counts.max() / max(1, grey.size))


def _histogram_stats(grey: Grey, stats: ImageStats) -> None:
    counts = np.bincount(grey.ravel(), minlength=256)
    total = float(grey.size)
    cumulative = np.cumsum(counts)
    stats.mean = float(counts @ _LEVELS) / total / 255.0
    p05, p50, p95, p99 = np.searchsorted(cumulative, (0.05 * total, 0.5 * total, 0.95 * total, 0.99 * total))
    stats.p05, stats.p50, stats.p95, stats.p99 = (float(v) / 255.0 for v in (p05, p50, p95, p99))
    stats.clipped_high = float(total - cumulative[249]) / total
    stats.clipped_low = float(cumulative[5]) / total
    p = counts[counts > 0] / total
    stats.entropy = float(-(p @ np.log2(p)))


_LEVELS = np.arange(256, dtype=np.float64)


def measure(
    grey: Grey, thumb: Grey, rgb: NDArray[np.uint8] | None = None, chroma: Grey | None = None
) -> ImageStats:
    """Statistics of one reduced image ``grey`` (h, w) uint8 (sharpness, detail, borders) and of its small
    ``thumb`` (exposure, entropy, dominant colour; the scan's 64x64 thumbnail) with, when the image has colour,
    ``rgb``: an RGB thumbnail (n, m, 3), or for sources decoded as luma + chroma planes a ``chroma`` map
    (0..255) of any size."""
    stats = ImageStats()
    if grey.size == 0 or thumb.size == 0:
        return stats
    _histogram_stats(thumb, stats)
    stats.dominant = _dominant(thumb, rgb)
    if rgb is not None:
        red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        chroma = np.maximum(np.maximum(red, green), blue) - np.minimum(np.minimum(red, green), blue)
    if chroma is not None and chroma.size:
        stats.chroma_mean = float(chroma.mean())
        stats.chroma_share = float(np.count_nonzero(chroma > CHROMA_LEVEL)) / chroma.size
    values = grey.astype(np.float32)
    half = _half(values)
    fine = _laplacian_energy(values)
    coarse = _laplacian_energy(half)
    stats.sharpness = fine / coarse if coarse > 1e-9 else 0.0
    variance = float(half.var())
    stats.detail = coarse / variance if variance > 1e-9 else 0.0
    top, bottom, left, right, bar_levels = _borders(half)
    stats.border_top, stats.border_bottom, stats.border_left, stats.border_right = top, bottom, left, right
    stats.border_levels = bar_levels
    return stats


def jpeg_quality(quantization: dict[int, list[int]] | None) -> int | None:
    """The IJG quality (1-100) whose scaled luminance table is closest to the file's, or None.

    ``quantization`` is Pillow's ``JpegImageFile.quantization`` (natural order). Encoders other than libjpeg use
    other base tables, so this is an estimate of how coarse the quantisation is, on libjpeg's scale.
    """
    if not quantization or 0 not in quantization or len(quantization[0]) != 64:
        return None
    table = np.asarray(quantization[0], dtype=np.float64)
    errors = np.abs(_IJG_TABLES - table).sum(axis=1)
    return int(np.argmin(errors)) + 1


def _ijg_tables() -> NDArray[np.float64]:
    """libjpeg's luminance table for each quality 1..100 (``jpeg_quality_scaling``), shape (100, 64)."""
    quality = np.arange(1, 101, dtype=np.float64)
    scale = np.where(quality < 50, 5000.0 / quality, 200.0 - 2.0 * quality)
    return np.clip(np.floor((_IJG_LUMA[None, :] * scale[:, None] + 50.0) / 100.0), 1, 255)


_IJG_TABLES = _ijg_tables()
