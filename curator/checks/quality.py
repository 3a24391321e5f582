"""Image-quality findings from the statistics the scan measured (``curator.scan.quality.ImageStats``).

Each check compares one measured value with its threshold (``QualityThresholds``; None turns it off) and gives
a ``score``: 0 at the threshold, 1 at the worst possible value, so sorting by score puts the worst first. The
detail says the value, the threshold and what training will make of it.

* blurry: sharpness (Laplacian energy at the analysed size over the energy an octave down) below the threshold,
  or the coarse detail (that energy an octave down over the grey variance) below ``blurry_detail``;
* too-dark: mean brightness below, with no highlights (a night sky with stars is a dark scene, not an
  underexposed photograph); overexposed: the median brightness above (half the picture nearly white: washed
  out, or mostly a white background);
* low-information: grey-level entropy below, or one colour covering more than ``one_colour`` of the image;
* grayscale: almost no colourful pixels, only in a colour set (``colour_set`` of the images of its concept folder
  have colour: a folder of black-and-white photographs is a concept of its own);
* odd-aspect: kohya's bucket crops more than ``odd_aspect`` of the image away (images beyond the widest bucket
  are ``extreme-aspect`` instead);
* heavy-jpeg: a JPEG whose quantisation tables are those of a low quality setting;
* letterbox: flat bars of one level on two opposite sides (letterbox: top and bottom; pillarbox: left and
  right), each at least ``letterbox`` of the side;
* alpha (replaces the scan's plain alpha finding): transparent pixels, with the colour they become: kiln
  composites them on white, kohya's ``convert("RGB")`` shows the colour hidden under them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from curator.records import Flag, ImageRecord
from curator.scan.config import QualityThresholds
from curator.scan.quality import ImageStats

if TYPE_CHECKING:
    from curator.buckets import BucketSettings

BAR_LEVEL_MATCH = 0.06  # opposite bars of a letterbox have the same level within this (0..1)
DARK_HIGHLIGHTS = 0.4  # a dark image with highlights above this (stars, lamps) is a dark scene, not underexposed


def _below(value: float, threshold: float) -> float:
    """Score of a value under a threshold: 0 at the threshold, 1 at zero."""
    return max(0.0, min(1.0, 1.0 - value / threshold)) if threshold > 0 else 1.0


def _above(value: float, threshold: float, top: float = 1.0) -> float:
    """Score of a value over a threshold: 0 at the threshold, 1 at ``top``."""
    return max(0.0, min(1.0, (value - threshold) / (top - threshold))) if top > threshold else 1.0


def colour_name(rgb: tuple[int, int, int]) -> str:
    """'black', 'white', 'grey' or the hex code of a colour."""
    r, g, b = rgb
    if max(r, g, b) <= 40:
        return f"black (#{r:02x}{g:02x}{b:02x})"
    if min(r, g, b) >= 215:
        return f"white (#{r:02x}{g:02x}{b:02x})"
    if max(r, g, b) - min(r, g, b) <= 16:
        return f"grey (#{r:02x}{g:02x}{b:02x})"
    return f"#{r:02x}{g:02x}{b:02x}"


def _letterbox(stats: ImageStats, threshold: float) -> tuple[str, float] | None:
    top, bottom, left, right = stats.border_top, stats.border_bottom, stats.border_left, stats.border_right
    levels = stats.border_levels
    found = []
    if min(top, bottom) >= threshold and abs(levels[0] - levels[1]) <= BAR_LEVEL_MATCH:
        found.append(("letterbox", top + bottom, f"bars {top:.0%} top and {bottom:.0%} bottom"))
    if min(left, right) >= threshold and abs(levels[2] - levels[3]) <= BAR_LEVEL_MATCH:
        found.append(("pillarbox", left + right, f"bars {left:.0%} left and {right:.0%} right"))
    if not found:
        return None
    name, share, where = max(found, key=lambda f: f[1])
    level = levels[0] if name == "letterbox" else levels[2]
    shade = "black" if level < 0.1 else "white" if level > 0.9 else f"grey level {level:.2f}"
    detail = (f"{name}: flat {shade} {where}; training sees the bars as part of the picture "
              "(crop them away)")  # fmt: skip
    return detail, _above(share, 2 * threshold, 0.9)


def _crop_share(record: ImageRecord, bucket_settings: BucketSettings | None) -> float | None:
    if bucket_settings is None or record.width <= 0 or record.height <= 0:
        return None
    from curator.buckets import assign_bucket

    assignment = assign_bucket(record.width, record.height, bucket_settings)
    rw, rh = assignment.resized
    bw, bh = assignment.bucket
    return 1.0 - (bw * bh) / (rw * rh) if rw and rh else None


def image_quality_flags(
    record: ImageRecord,
    stats: ImageStats,
    thresholds: QualityThresholds,
    colour_set: bool,
    bucket_settings: BucketSettings | None = None,
    widest_aspect: float | None = None,
) -> list[Flag]:
    """The quality findings of one decoded image."""
    flags: list[Flag] = []
    path = record.path
    t = thresholds
    blur = _blurry(stats, t)
    if blur is not None:
        flags.append(Flag(path, "blurry", *blur))
    if t.too_dark is not None and stats.mean < t.too_dark and stats.p99 < DARK_HIGHLIGHTS:
        flags.append(Flag(path, "too-dark", f"mean brightness {stats.mean:.2f} is below {t.too_dark:.2f} and "
                          f"even the brightest 1% stays under {stats.p99:.2f}: underexposed",
                          _below(stats.mean, t.too_dark)))  # fmt: skip
    if t.overexposed is not None and stats.p50 > t.overexposed:
        flags.append(Flag(path, "overexposed", f"half the image is brighter than {stats.p50:.2f} (over "
                          f"{t.overexposed:.2f}) and {stats.clipped_high:.0%} is blown out to white: washed out "
                          "(or mostly a white background)", _above(stats.p50, t.overexposed)))  # fmt: skip
    low = _low_information(stats, t)
    if low is not None:
        flags.append(Flag(path, "low-information", *low))
    if t.grayscale is not None and colour_set:
        share = stats.chroma_share if stats.chroma_share is not None else 0.0
        if share < t.grayscale:
            source = "a greyscale file" if stats.chroma_share is None else f"{share:.1%} of pixels have colour"
            flags.append(Flag(path, "grayscale", f"no colour ({source}) in a colour folder; the model learns "
                              "greyscale for whatever this image shows", _below(share, t.grayscale)))  # fmt: skip
    crop = _crop_share(record, bucket_settings)
    aspect = max(record.width, record.height) / max(1, min(record.width, record.height))
    beyond = widest_aspect is not None and aspect > widest_aspect + 1e-9
    if t.odd_aspect is not None and crop is not None and crop > t.odd_aspect and not beyond:
        flags.append(Flag(path, "odd-aspect", f"aspect {aspect:.2f}:1 falls between buckets: {crop:.0%} of the "
                          f"image is cropped away (over {t.odd_aspect:.0%})", _above(crop, t.odd_aspect, 0.5)))  # fmt: skip
    if t.heavy_jpeg is not None and stats.jpeg_quality is not None and stats.jpeg_quality < t.heavy_jpeg:
        flags.append(Flag(path, "heavy-jpeg", f"JPEG saved at about quality {stats.jpeg_quality} (under "
                          f"{t.heavy_jpeg}): blocking and ringing the model will learn",
                          _below(stats.jpeg_quality, t.heavy_jpeg)))  # fmt: skip
    if t.letterbox is not None and t.letterbox > 0:
        bars = _letterbox(stats, t.letterbox)
        if bars is not None:
            flags.append(Flag(path, "letterbox", bars[0], bars[1]))
    if t.alpha is not None and stats.transparent > t.alpha:
        hidden = colour_name(stats.hidden_rgb) if stats.hidden_rgb is not None else "the colour under it"
        flags.append(Flag(path, "alpha", f"{stats.transparent:.0%} of pixels are transparent: kiln composites them "
                          f"on white; kohya sd-scripts drops the alpha channel and shows {hidden} there",
                          _above(stats.transparent, t.alpha)))  # fmt: skip
    return flags


def _blurry(stats: ImageStats, t: QualityThresholds) -> tuple[str, float] | None:
    """Little fine detail for the coarse detail there is, or (a heavy blur flattens both, leaving only the
    compression noise) hardly any detail at all for the image's contrast."""
    reasons, scores = [], []
    if t.blurry is not None and stats.sharpness < t.blurry:
        reasons.append(f"sharpness {stats.sharpness:.2f} is below {t.blurry:.2f}")
        scores.append(_below(stats.sharpness, t.blurry))
    if t.blurry_detail is not None and stats.detail < t.blurry_detail:
        reasons.append(f"detail {stats.detail:.3f} is below {t.blurry_detail:.3f}")
        scores.append(_below(stats.detail, t.blurry_detail))
    if not reasons:
        return None
    return "; ".join(reasons) + ": out of focus, motion blurred or upscaled at the analysed size", max(scores)


def _low_information(stats: ImageStats, t: QualityThresholds) -> tuple[str, float] | None:
    reasons, scores = [], []
    if t.low_information is not None and stats.entropy < t.low_information:
        reasons.append(f"only {stats.entropy:.1f} bits of grey-level entropy (under {t.low_information:.1f})")
        scores.append(_below(stats.entropy, t.low_information))
    if t.one_colour is not None and stats.dominant > t.one_colour:
        reasons.append(f"one colour covers {stats.dominant:.0%} of it (over {t.one_colour:.0%})")
        scores.append(_above(stats.dominant, t.one_colour))
    if not reasons:
        return None
    return "flat or mostly one colour: " + "; ".join(reasons), max(scores)


def is_colour_set(stats: Iterable[ImageStats], thresholds: QualityThresholds) -> bool:
    """Whether at least ``colour_set`` of the images have colour (so a greyscale one stands out)."""
    limit = thresholds.grayscale if thresholds.grayscale is not None else 0.01
    shares = [s.chroma_share if s.chroma_share is not None else 0.0 for s in stats]
    return bool(shares) and sum(1 for s in shares if s >= limit) / len(shares) >= thresholds.colour_set


def quality_flags(
    records: Iterable[ImageRecord],
    stats: Mapping[str, ImageStats],
    thresholds: QualityThresholds,
    bucket_settings: BucketSettings | None = None,
    widest_aspect: float | None = None,
) -> list[Flag]:
    """Quality findings of every record that has statistics (decoded images)."""
    chosen = [(r, stats[r.path]) for r in records if r.path in stats and r.readable]
    by_folder: dict[str, list[ImageStats]] = {}
    for record, image_stats in chosen:
        by_folder.setdefault(record.subset.rel_dir, []).append(image_stats)
    colour = {folder: is_colour_set(group, thresholds) for folder, group in by_folder.items()}
    flags: list[Flag] = []
    for record, image_stats in chosen:
        in_colour = colour[record.subset.rel_dir]
        flags += image_quality_flags(record, image_stats, thresholds, in_colour, bucket_settings, widest_aspect)
    return flags
