"""Image findings: the probe's file flags (stored in the index) plus the size rules of the training setup."""

from __future__ import annotations

import math
from dataclasses import dataclass

from curator.buckets import BucketSettings, assign_bucket, bucket_resolutions
from curator.records import Flag, ImageRecord
from curator.scan.config import ScanConfig


@dataclass(frozen=True, slots=True)
class SizeRules:
    """The size limits of a scan config and the dataset's bucket settings (``Dataset.buckets``)."""

    resolution: tuple[int, int]
    tiny_side: int
    pixel_limit: int
    widest_aspect: float
    widest_bucket: tuple[int, int] | None
    bucket_settings: BucketSettings | None  # None when kohya would refuse the dataset's bucket options

    @classmethod
    def from_config(cls, config: ScanConfig, settings: BucketSettings | None = None) -> SizeRules:
        """``settings``: the dataset's bucket settings (None: kohya would refuse them; the bucket checks are
        then left out and the low-res check uses the resolution given, else kohya's default)."""
        resolution = settings.resolution if settings is not None else (config.resolution or BucketSettings().resolution)
        widest, bucket = _widest(settings)
        return cls(resolution, config.tiny_side, config.pixel_limit, widest, bucket, settings)

    @property
    def resolution_text(self) -> str:
        w, h = self.resolution
        return f"{w}²" if w == h else f"{w}x{h}"


def _widest(settings: BucketSettings | None) -> tuple[float, tuple[int, int] | None]:
    """The widest bucket's ratio (long/short) and that bucket."""
    buckets = bucket_resolutions(settings) if settings is not None else []
    if not buckets:
        return math.inf, None
    best = max(buckets, key=lambda b: max(b) / min(b))
    return max(best) / min(best), (max(best), min(best))


def _ratio_text(ratio: float) -> str:
    return f"{ratio:.2f}:1"


def size_flags(record: ImageRecord, rules: SizeRules) -> list[Flag]:
    """low-res, tiny, extreme-aspect and too-large (under the current limit) for a decoded-size record."""
    w, h = record.width, record.height
    flags: list[Flag] = []
    if w <= 0 or h <= 0:
        return flags
    if w * h > rules.pixel_limit and not any(f.kind == "too-large" for f in record.flags):
        flags.append(
            Flag(record.path, "too-large", f"{w}x{h} = {w * h / 1e6:.1f} MP is over the {rules.pixel_limit / 1e6:.1f} MP limit")
        )
    target = rules.resolution[0] * rules.resolution[1]
    area = w * h
    if area < target:
        shortfall = 1 - area / target
        scale = math.sqrt(target / area)
        flags.append(
            Flag(
                record.path,
                "low-res",
                f"{w}x{h} = {area:,} px is {shortfall:.0%} below {rules.resolution_text} = {target:,} px; "
                f"training upscales it ×{scale:.2f}",
            )
        )
    elif rules.bucket_settings is not None:
        assignment = assign_bucket(w, h, rules.bucket_settings)
        if assignment.upscaled:
            rw, rh = assignment.resized
            flags.append(
                Flag(
                    record.path,
                    "low-res",
                    f"{w}x{h} is smaller than its bucket {assignment.bucket[0]}x{assignment.bucket[1]} needs; "
                    f"upscaled ×{max(rw / w, rh / h):.2f} to {rw}x{rh}",
                )
            )
    if min(w, h) < rules.tiny_side:
        flags.append(Flag(record.path, "tiny", f"shorter side {min(w, h)} px is under {rules.tiny_side} px ({w}x{h})"))
    ratio = max(w, h) / min(w, h)
    if ratio > rules.widest_aspect + 1e-9 and rules.widest_bucket is not None:
        bw, bh = rules.widest_bucket
        lost = 1 - rules.widest_aspect / ratio
        flags.append(
            Flag(
                record.path,
                "extreme-aspect",
                f"aspect {_ratio_text(ratio)} ({w}x{h}) is beyond the widest bucket {bw}x{bh} "
                f"({_ratio_text(rules.widest_aspect)}); about {lost:.0%} of the long side is cropped away",
            )
        )
    return flags


def image_flags(record: ImageRecord, rules: SizeRules) -> list[Flag]:
    """Everything wrong with one image file: stored probe findings + size rules."""
    return list(record.flags) + (size_flags(record, rules) if record.readable else [])
