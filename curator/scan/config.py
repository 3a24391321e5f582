"""``ScanConfig``: every setting of scanning and health checks, validated up front."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from curator.textdetect.config import TextModelConfig

DEFAULT_PIXEL_LIMIT = 100_000_000
DEFAULT_NEAR_THRESHOLD = 8  # pHash bits; chosen by bench/bench_scan.py (see docs/DATASET.md)
MAX_NEAR_THRESHOLD = 24


class QualityThresholds(BaseModel):
    """Where each image-quality check starts flagging (``kiln check --quality KIND=VALUE``; None turns a check
    off). Defaults calibrated on real photographs with ``bench/bench_quality.py`` (docs/DATASET.md)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    blurry: float | None = Field(0.2, ge=0.0, le=2.0, description="sharpness (fine/coarse detail) below this")
    blurry_detail: float | None = Field(
        0.03, ge=0.0, le=1.0, description="or coarse detail (relative to the contrast) below this: blurred smooth"
    )
    too_dark: float | None = Field(0.12, ge=0.0, le=1.0, description="mean brightness (0-1) below this")
    overexposed: float | None = Field(0.75, ge=0.0, le=1.0, description="median brightness (0-1) above this")
    low_information: float | None = Field(3.0, ge=0.0, le=8.0, description="grey-level entropy (bits) below this")
    one_colour: float | None = Field(0.85, ge=0.0, le=1.0, description="share of the most common colour above this")
    grayscale: float | None = Field(0.01, ge=0.0, le=1.0, description="share of colourful pixels below this")
    colour_set: float = Field(0.5, ge=0.0, le=1.0, description="grayscale is flagged when this share of images has colour")
    odd_aspect: float | None = Field(0.12, ge=0.0, le=1.0, description="share cropped away by the bucket above this")
    heavy_jpeg: int | None = Field(50, ge=1, le=100, description="estimated JPEG quality below this")
    letterbox: float | None = Field(0.04, ge=0.0, le=0.45, description="flat bars covering at least this share per side")
    alpha: float | None = Field(0.0, ge=0.0, le=1.0, description="share of transparent pixels above this")
    watermark: float | None = Field(
        0.5, ge=0.0, le=1.0, description="match to a mark repeated across the set (share of its edges) at least this"
    )
    text_heavy: float | None = Field(
        0.02, ge=0.0, le=1.0, description="share of the image the text detector's lines (--text-model) cover above this"
    )

    @classmethod
    def kinds(cls) -> dict[str, str]:
        """Flag kind -> field name (``too-dark`` -> ``too_dark``); ``one-colour`` is part of low-information."""
        return {name.replace("_", "-"): name for name in cls.model_fields if name not in ("colour_set",)}

    @classmethod
    def parts(cls) -> dict[str, str]:
        """Thresholds that belong to another kind's check (``--quality`` name -> the flag kind)."""
        return {"blurry-detail": "blurry", "one-colour": "low-information", "colour-set": "grayscale"}

    @classmethod
    def parse(cls, items: list[str]) -> QualityThresholds:
        """``["blurry=0.3", "heavy-jpeg=off"]`` -> thresholds; raises ValueError naming the bad item and the fix.
        ``off`` turns the whole check off: ``blurry=off`` also its detail part, ``low-information=off`` its
        one-colour part (unless given too)."""
        values: dict[str, object] = {}
        fields = {**cls.kinds(), "colour-set": "colour_set"}
        for item in items:
            name, sep, raw = item.partition("=")
            key = fields.get(name.strip().lower())
            if not sep or key is None:
                raise ValueError(
                    f"--quality {item!r}: use KIND=VALUE with KIND one of {', '.join(sorted(fields))} "
                    "and VALUE a number or off"
                )
            text = raw.strip().lower()
            values[key] = None if text in ("off", "none") else text
        kinds = cls.kinds()
        for part, kind in cls.parts().items():  # a kind turned off takes its other threshold with it
            part_key, kind_key = fields[part], kinds[kind]
            turned_off = kind_key in values and values[kind_key] is None
            if turned_off and part_key not in values and part_key != "colour_set":  # colour_set is no check
                values[part_key] = None
        return cls.model_validate(values)


class ScanConfig(BaseModel):
    """Settings of ``kiln scan`` / ``kiln check`` / ``kiln dupes``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    caption_extension: str | None = Field(
        None, description="caption file extension (.txt or .caption); None: .txt, or what a dataset TOML says"
    )
    # The bucket options below are overrides: None takes the dataset's (its TOML, or the train config given), else
    # kohya's defaults; ``Dataset.buckets`` holds the settings chosen (``curator.buckets.choose_bucket_settings``).
    resolution: tuple[int, int] | None = Field(
        None, description="training resolution (N or W,H) for the low-res and bucket checks; None: the dataset's"
    )
    min_bucket: int | None = Field(None, description="kohya --min_bucket_reso; None: the dataset's")
    max_bucket: int | None = Field(None, description="kohya --max_bucket_reso; None: the dataset's")
    bucket_step: int | None = Field(None, description="kohya --bucket_reso_steps; None: the dataset's")
    no_upscale: bool | None = Field(None, description="kohya --bucket_no_upscale; None: the dataset's")
    train_config: Path | None = Field(
        None, description="a kiln train config whose [dataset] bucket options the dataset is looked at with"
    )
    tiny_side: int = Field(256, description="shorter sides under this many px are flagged tiny")
    pixel_limit: int = Field(DEFAULT_PIXEL_LIMIT, description="images with more pixels are refused (not decoded)")
    near_threshold: int = Field(DEFAULT_NEAR_THRESHOLD, description="max pHash distance (bits) of near-duplicates")
    geometric: bool = Field(True, description="also find cropped, rotated and locally edited copies")
    quality: QualityThresholds = Field(default_factory=QualityThresholds, description="image-quality thresholds")
    text_model: TextModelConfig | None = Field(
        None, description="an ONNX text detector for the text-heavy check; None: that check is not run"
    )
    workers: int | None = Field(None, description="scan processes; None: one per CPU core")

    @field_validator("caption_extension")
    @classmethod
    def _extension(cls, value: str | None) -> str | None:
        if value is None:
            return None
        ext = value.strip()
        if not ext or "/" in ext or "\\" in ext or ext in (".", ".."):
            raise ValueError(f"caption_extension {value!r} is not a file extension; use .txt or .caption")
        return ext if ext.startswith(".") else "." + ext

    @field_validator("resolution", mode="before")
    @classmethod
    def _resolution_shape(cls, value: object) -> object:
        from curator.buckets import parse_resolution

        if isinstance(value, str):
            return parse_resolution(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return (value, value)
        return value

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and not all(64 <= side <= 8192 for side in value):
            shown = f"{value[0]}x{value[1]}" if value[0] != value[1] else str(value[0])
            raise ValueError(f"resolution {shown} is out of range; use the training side, e.g. 512, 768 or 1024")
        return value

    @field_validator("min_bucket", "max_bucket", "bucket_step", "tiny_side")
    @classmethod
    def _positive(cls, value: int | None, info: object) -> int | None:
        if value is not None and value <= 0:
            raise ValueError(f"{getattr(info, 'field_name', 'value')} must be a positive number of pixels, got {value}")
        return value

    def bucket_options(self) -> dict[str, object]:
        """The bucket options given here (``BucketSettings`` fields; what is None is left to the dataset)."""
        given = {"resolution": self.resolution, "min_bucket": self.min_bucket, "max_bucket": self.max_bucket,
                 "step": self.bucket_step, "no_upscale": self.no_upscale}
        return {k: v for k, v in given.items() if v is not None}

    @field_validator("pixel_limit")
    @classmethod
    def _pixel_limit(cls, value: int) -> int:
        if value < 1_000_000:
            raise ValueError(f"pixel_limit {value} is below 1 MP; use e.g. {DEFAULT_PIXEL_LIMIT} (100 MP)")
        return value

    @field_validator("near_threshold")
    @classmethod
    def _threshold(cls, value: int) -> int:
        if not 0 <= value <= MAX_NEAR_THRESHOLD:
            raise ValueError(
                f"near_threshold {value} is out of range 0..{MAX_NEAR_THRESHOLD} pHash bits; "
                f"the default {DEFAULT_NEAR_THRESHOLD} finds resized/re-encoded copies"
            )
        return value

    @field_validator("workers")
    @classmethod
    def _workers(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"workers must be at least 1, got {value}; leave it unset for one per CPU core")
        return value

    @property
    def worker_count(self) -> int:
        return self.workers or max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def config_error_message(exc: ValidationError) -> str:
    """One line per problem: ``field: message (got value)``."""
    lines = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "config"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{field}: {message} (got {error.get('input')!r})")
    return "\n".join(lines)
