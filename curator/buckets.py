"""Aspect-ratio bucketing, exactly as kohya sd-scripts does it.

Reproduces ``library/model_util.py: make_bucket_resolutions`` and ``library/train_util.py: BucketManager``
(``select_bucket``, ``round_to_steps``), the resize + centre crop of ``trim_and_resize_if_required``, kohya's
repetition of regularization images (``DreamBoothDataset.__init__``) and its step count (batches are formed per
bucket; ``train_network.py`` divides by gradient accumulation). See docs/BUCKETS.md.

Pure Python, no heavy imports: safe for ``kiln --help`` start-up time.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

if TYPE_CHECKING:
    from curator.records import ImageRecord

THIN_BUCKET_MAX_IMAGES = 2
"""A bucket holding this many distinct images or fewer is reported as thin."""


class BucketSettings(BaseModel):
    """kohya's bucket options: ``--resolution``, ``--min_bucket_reso``, ``--max_bucket_reso``,
    ``--bucket_reso_steps``, ``--bucket_no_upscale``.

    ``min_bucket``/``max_bucket`` that are not multiples of ``step`` are adjusted the way kohya adjusts them
    (min rounded down, max rounded up) and the adjustment is listed in ``notes``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    resolution: tuple[int, int] = Field((512, 512), description="training resolution (width, height)")
    min_bucket: int = Field(256, description="smallest bucket side (kohya --min_bucket_reso)")
    max_bucket: int = Field(1024, description="largest bucket side (kohya --max_bucket_reso)")
    step: int = Field(64, description="bucket side granularity (kohya --bucket_reso_steps)")
    no_upscale: bool = Field(False, description="kohya --bucket_no_upscale")
    notes: tuple[str, ...] = Field((), description="adjustments kohya would make, filled in by validation")

    @field_validator("resolution", mode="before")
    @classmethod
    def _parse_resolution(cls, value: object) -> object:
        if isinstance(value, str):
            return parse_resolution(value)
        if isinstance(value, int):
            return (value, value)
        if isinstance(value, list | tuple) and len(value) == 1:
            return (value[0], value[0])
        return value

    @field_validator("step")
    @classmethod
    def _step_positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError(
                f"step must be a positive number of pixels, got {value}; use 64 (kohya's default)"
            )
        return value

    @field_validator("resolution")
    @classmethod
    def _resolution_positive(cls, value: tuple[int, int]) -> tuple[int, int]:
        if value[0] <= 0 or value[1] <= 0:
            raise ValueError(f"resolution must be positive, got {value[0]}x{value[1]}; e.g. 1024 or 1024,768")
        return value

    @field_validator("min_bucket", "max_bucket")
    @classmethod
    def _side_positive(cls, value: int, info: ValidationInfo) -> int:
        if value <= 0:
            raise ValueError(f"{info.field_name} must be a positive number of pixels, got {value}")
        return value

    @model_validator(mode="after")
    def _kohya_rules(self) -> BucketSettings:
        step = self.step
        width, height = self.resolution
        notes = list(self.notes)
        if width % step or height % step:
            raise ValueError(
                f"resolution {width}x{height} is not a multiple of step {step}; kohya's square bucket would be "
                f"{_floor_to(int(math.isqrt(width * height)), step)} px and sizes drift: use "
                f"{_floor_to(width, step) or step},{_floor_to(height, step) or step} or a step that divides it"
            )
        min_bucket, max_bucket = self.min_bucket, self.max_bucket
        if min_bucket % step:
            adjusted = min_bucket - min_bucket % step
            notes.append(
                f"min_bucket {min_bucket} is not a multiple of step {step}: kohya rounds it down to {adjusted}"
            )
            min_bucket = adjusted
        if max_bucket % step:
            adjusted = max_bucket + step - max_bucket % step
            notes.append(
                f"max_bucket {max_bucket} is not a multiple of step {step}: kohya rounds it up to {adjusted}"
            )
            max_bucket = adjusted
        if min_bucket <= 0:
            raise ValueError(
                f"min_bucket {self.min_bucket} rounds down to 0 with step {step}; use min_bucket >= {step}"
            )
        if min_bucket > max_bucket:
            raise ValueError(
                f"min_bucket {_shown(self.min_bucket, min_bucket)} is larger than max_bucket "
                f"{_shown(self.max_bucket, max_bucket)}; lower min_bucket or raise max_bucket"
            )
        if min(width, height) < min_bucket:
            raise ValueError(
                f"min_bucket {min_bucket} is larger than the resolution's short side {min(width, height)} "
                f"(kohya refuses this); use min_bucket <= {min(width, height)}"
            )
        if max(width, height) > max_bucket:
            raise ValueError(
                f"max_bucket {max_bucket} is smaller than the resolution's long side {max(width, height)} "
                f"(kohya refuses this); use max_bucket >= {max(width, height)}"
            )
        if step % 8:
            notes.append(
                f"step {step} is not divisible by 8: kohya recommends a multiple of 8 (SDXL needs 32)"
            )
        object.__setattr__(self, "min_bucket", min_bucket)
        object.__setattr__(self, "max_bucket", max_bucket)
        object.__setattr__(self, "notes", tuple(dict.fromkeys(notes)))
        return self

    @property
    def max_area(self) -> int:
        return self.resolution[0] * self.resolution[1]


def settings_from_toml(settings: Mapping[str, Any] | None) -> BucketSettings:
    """The ``BucketSettings`` of a kohya dataset TOML's ``[general]`` options (``resolution``,
    ``min_bucket_reso``, ``max_bucket_reso``, ``bucket_reso_steps``, ``bucket_no_upscale``); kohya's defaults for
    what it leaves out."""
    settings = dict(settings or {})
    kwargs: dict[str, Any] = {}
    reso = settings.get("resolution")
    if isinstance(reso, int):
        kwargs["resolution"] = (reso, reso)
    elif isinstance(reso, list | tuple) and len(reso) == 2:
        kwargs["resolution"] = (int(reso[0]), int(reso[1]))
    for src, dst in (
        ("min_bucket_reso", "min_bucket"),
        ("max_bucket_reso", "max_bucket"),
        ("bucket_reso_steps", "step"),
        ("bucket_no_upscale", "no_upscale"),
    ):
        if src in settings:
            kwargs[dst] = settings[src]
    return BucketSettings(**kwargs)


def parse_resolution(text: str) -> tuple[int, int]:
    """Parse kohya's ``--resolution`` text: ``"1024"`` or ``"W,H"`` (``WxH`` is accepted too)."""
    parts = [p.strip() for p in text.lower().replace("x", ",").split(",")]
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"resolution {text!r} is not a number or W,H pair; e.g. 1024 or 1024,768") from None
    if len(numbers) == 1:
        return (numbers[0], numbers[0])
    if len(numbers) == 2:
        return (numbers[0], numbers[1])
    raise ValueError(f"resolution {text!r} has {len(numbers)} parts; give one number or W,H")


def _shown(given: int, adjusted: int) -> str:
    return str(given) if given == adjusted else f"{given} ({adjusted} after kohya's rounding to the step)"


def _floor_to(value: int, step: int) -> int:
    return value - value % step


# --------------------------------------------------------------------------------------------------- buckets


def bucket_resolutions(settings: BucketSettings) -> list[tuple[int, int]]:
    """The predefined bucket list, sorted, as kohya's ``make_bucket_resolutions`` builds it.

    One square bucket of side floor(sqrt(area) / step) * step, then for each width from min to max in
    ``step`` increments, the largest height within the area (floored to ``step``, capped at max), mirrored.
    With ``no_upscale`` kohya does not use this list (buckets follow the images); it is still returned here.
    """
    return list(
        _bucket_resolutions(settings.resolution, settings.min_bucket, settings.max_bucket, settings.step)
    )


@lru_cache(maxsize=64)
def _bucket_resolutions(
    resolution: tuple[int, int], min_size: int, max_size: int, step: int
) -> tuple[tuple[int, int], ...]:
    max_area = resolution[0] * resolution[1]
    resos: set[tuple[int, int]] = set()
    side = int(math.sqrt(max_area) // step) * step
    resos.add((side, side))
    width = min_size
    while width <= max_size:
        height = min(max_size, int((max_area // width) // step) * step)
        if height >= min_size:
            resos.add((width, height))
            resos.add((height, width))
        width += step
    return tuple(sorted(resos))


def widest_aspect(settings: BucketSettings) -> float:
    """The most extreme aspect ratio (long side / short side, >= 1) any bucket offers.

    An image more extreme than this loses part of its long side to the crop. With ``no_upscale`` the buckets
    follow the images, so the limit is the step granularity only: ``inf``.
    """
    if settings.no_upscale:
        return math.inf
    return max(max(w, h) / min(w, h) for w, h in bucket_resolutions(settings))


@dataclass(frozen=True, slots=True)
class BucketAssignment:
    """Where one image goes: the bucket, the size it is resized to, and the centre crop inside that size.

    ``crop`` is (left, top) in resized pixels: kohya trims (resized - bucket) // 2 from the left/top.
    ``ar_error`` is bucket aspect minus image aspect (kohya's sign). ``upscaled`` is True when the resize
    enlarges the image. ``usable`` is False when the bucket has a zero side: with ``no_upscale``, an image
    narrower than ``step`` or too thin for kohya's rounding (kohya stops with an error on it).
    """

    bucket: tuple[int, int]
    resized: tuple[int, int]
    crop: tuple[int, int]
    ar_error: float
    upscaled: bool

    @property
    def usable(self) -> bool:
        return self.bucket[0] > 0 and self.bucket[1] > 0


def assign_bucket(width: int, height: int, settings: BucketSettings) -> BucketAssignment:
    """Assign an image of ``width`` x ``height`` (after EXIF rotation) the way kohya's ``select_bucket`` does.

    Results are cached per (width, height, settings), so 100k images cost one computation per distinct size.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size {width}x{height} is not a real image size")
    return _assign_cached(int(width), int(height), settings)


def bucket_of(width: int, height: int, settings: BucketSettings) -> tuple[int, int] | None:
    """The bucket kohya trains a ``width`` x ``height`` image in; None when it has none (no size, or a bucket
    with a zero side: see ``BucketAssignment.usable``). What ``bucket:WxH`` queries and the TUI show."""
    if width <= 0 or height <= 0:
        return None
    assignment = _assign_cached(int(width), int(height), settings)
    return assignment.bucket if assignment.usable else None


@lru_cache(maxsize=65536)
def _assign_cached(width: int, height: int, settings: BucketSettings) -> BucketAssignment:
    return _assign(width, height, settings, None if settings.no_upscale else _predefined(settings))


def _assign(width: int, height: int, settings: BucketSettings, table: _Predefined | None) -> BucketAssignment:
    """Uncached assignment; ``table`` is the prepared bucket list (None with no_upscale)."""
    if table is None:
        bucket, resized = _select_no_upscale(width, height, settings)
    else:
        bucket, resized = _select_predefined(width, height, table)
    crop = (
        ((resized[0] - bucket[0]) // 2, (resized[1] - bucket[1]) // 2) if bucket[0] and bucket[1] else (0, 0)
    )
    aspect = width / height
    ar_error = (bucket[0] / bucket[1]) - aspect if bucket[1] else math.inf
    upscaled = resized[0] > width or resized[1] > height
    return BucketAssignment(bucket=bucket, resized=resized, crop=crop, ar_error=ar_error, upscaled=upscaled)


@dataclass(frozen=True, slots=True)
class _Predefined:
    """The bucket list prepared for lookups: aspects in kohya's (sorted-resolution) order, and sorted by aspect."""

    resos: tuple[tuple[int, int], ...]
    reso_set: frozenset[tuple[int, int]]
    aspects: tuple[float, ...]
    by_aspect: tuple[float, ...]  # sorted aspects
    order: tuple[int, ...]  # order[k] = index in resos of the k-th smallest aspect


@lru_cache(maxsize=64)
def _predefined(settings: BucketSettings) -> _Predefined:
    resos = _bucket_resolutions(settings.resolution, settings.min_bucket, settings.max_bucket, settings.step)
    aspects = tuple(w / h for w, h in resos)
    order = tuple(sorted(range(len(resos)), key=lambda i: (aspects[i], i)))
    return _Predefined(resos, frozenset(resos), aspects, tuple(aspects[i] for i in order), order)


def _closest_aspect(table: _Predefined, aspect: float) -> int:
    """Index (in kohya's order) of the bucket with the smallest |aspect error|; on a tie the lowest index,
    which is what numpy's argmin over kohya's sorted list returns. Bisection: O(log n) per image."""
    by_aspect, order = table.by_aspect, table.order
    last = len(by_aspect) - 1
    pos = bisect_left(by_aspect, aspect)
    lo, hi = max(0, pos - 1), min(last, pos)
    while lo > 0 and by_aspect[lo - 1] == by_aspect[lo]:  # runs of equal aspects tie with each other
        lo -= 1
    while hi < last and by_aspect[hi + 1] == by_aspect[hi]:
        hi += 1
    best_error, best = abs(by_aspect[lo] - aspect), order[lo]
    for k in range(lo + 1, hi + 1):
        error = abs(by_aspect[k] - aspect)
        if error < best_error or (error == best_error and order[k] < best):
            best_error, best = error, order[k]
    return best


def _select_predefined(
    width: int, height: int, table: _Predefined
) -> tuple[tuple[int, int], tuple[int, int]]:
    """kohya ``select_bucket`` without no_upscale: an exact-size bucket wins, else the smallest |AR error|
    (first in sorted order on ties); scale so the bucket is covered, rounding half up."""
    aspect = width / height
    if (width, height) in table.reso_set:
        reso = (width, height)
    else:
        reso = table.resos[_closest_aspect(table, aspect)]
    if aspect > reso[0] / reso[1]:  # wider than the bucket: match heights, crop the width
        scale = reso[1] / height
    else:
        scale = reso[0] / width
    resized = (int(width * scale + 0.5), int(height * scale + 0.5))
    return reso, resized


def _round_to_steps(value: float, step: int) -> int:
    rounded = int(value + 0.5)
    return rounded - rounded % step


def _select_no_upscale(
    width: int, height: int, settings: BucketSettings
) -> tuple[tuple[int, int], tuple[int, int]]:
    """kohya ``select_bucket`` with no_upscale: shrink (keeping aspect) only if over the area, choosing whichever
    of width-first / height-first rounding to ``step`` keeps the aspect better; the bucket is the resized size
    floored to ``step`` (cropping, never padding). min/max bucket are ignored, as in kohya."""
    step = settings.step
    max_area = settings.max_area
    aspect = width / height
    if width * height > max_area:
        resized_width = math.sqrt(max_area * aspect)
        resized_height = max_area / resized_width
        b_width_rounded = _round_to_steps(resized_width, step)
        b_height_in_wr = _round_to_steps(b_width_rounded / aspect, step)
        b_height_rounded = _round_to_steps(resized_height, step)
        b_width_in_hr = _round_to_steps(b_height_rounded * aspect, step)
        if b_height_in_wr == 0 or b_height_rounded == 0:
            # kohya divides by these and stops with ZeroDivisionError: the image is too thin to bucket.
            return (0, 0), (width, height)
        ar_width_rounded = b_width_rounded / b_height_in_wr
        ar_height_rounded = b_width_in_hr / b_height_rounded
        if abs(ar_width_rounded - aspect) < abs(ar_height_rounded - aspect):
            resized = (b_width_rounded, int(b_width_rounded / aspect + 0.5))
        else:
            resized = (int(b_height_rounded * aspect + 0.5), b_height_rounded)
    else:
        resized = (width, height)
    bucket = (resized[0] - resized[0] % step, resized[1] - resized[1] % step)
    return bucket, resized


# --------------------------------------------------------------------------------------------------- report


@dataclass(frozen=True, slots=True)
class BucketItem:
    """One image as bucketing sees it. ``repeats`` is the subset's kohya repeat count."""

    path: str
    width: int
    height: int
    repeats: int = 1
    is_reg: bool = False


@dataclass(frozen=True, slots=True)
class ImageBucket:
    """An image with its assignment and the repeats kohya actually uses for it (reg images are re-counted)."""

    path: str
    width: int
    height: int
    repeats: int
    is_reg: bool
    assignment: BucketAssignment

    @property
    def bucket(self) -> tuple[int, int]:
        return self.assignment.bucket


@dataclass(slots=True)
class BucketCount:
    """One bucket's totals. ``with_repeats`` counts each image ``repeats`` times (what an epoch draws)."""

    bucket: tuple[int, int]
    images: int = 0
    train_images: int = 0
    reg_images: int = 0
    with_repeats: int = 0
    share: float = 0.0

    @property
    def width(self) -> int:
        return self.bucket[0]

    @property
    def height(self) -> int:
        return self.bucket[1]


@dataclass(slots=True)
class BucketReport:
    """The result of bucketing a dataset the kohya way."""

    settings: BucketSettings
    buckets: list[BucketCount]
    images: list[ImageBucket]
    upscaled: list[ImageBucket]
    thin: list[BucketCount]
    unusable: list[ImageBucket]
    train_with_repeats: int
    reg_with_repeats: int
    reg_used_with_repeats: int
    reg_unused: list[str] = field(default_factory=list)
    mean_ar_error: float = 0.0

    @property
    def total_with_repeats(self) -> int:
        return sum(b.with_repeats for b in self.buckets)

    def counts(self) -> dict[tuple[int, int], int]:
        """Images x repeats per bucket (the input of :func:`step_math`)."""
        return {b.bucket: b.with_repeats for b in self.buckets}


def _item_fields(item: BucketItem | ImageRecord | Mapping[str, Any]) -> BucketItem:
    """Accept a :class:`BucketItem`, an ``ImageRecord`` (repeats/is_reg on ``.subset``) or a mapping."""
    if isinstance(item, BucketItem):
        return item
    if isinstance(item, Mapping):
        return BucketItem(
            path=str(item["path"]),
            width=int(item["width"]),
            height=int(item["height"]),
            repeats=int(item.get("repeats", 1)),
            is_reg=bool(item.get("is_reg", False)),
        )
    return BucketItem(
        path=item.path, width=item.width, height=item.height, repeats=item.subset.repeats, is_reg=item.subset.is_reg
    )


def kohya_reg_repeats(reg_repeats: list[int], num_train_with_repeats: int) -> list[int]:
    """The repeats kohya really uses for each regularization image, in kohya's order.

    kohya walks the reg images in order: the first pass adds each image with its folder's repeats and stops as
    soon as the running total reaches the train total (images after that are not used: 0); later passes add
    one repeat per image, in order, until the total reaches the train total. No train images: no reg used.
    """
    result = [0] * len(reg_repeats)
    if not reg_repeats:
        return result
    total = 0
    first_pass = True
    while total < num_train_with_repeats:
        for index, repeats in enumerate(reg_repeats):
            if first_pass:
                result[index] = repeats
                total += repeats
            else:
                result[index] += 1
                total += 1
            if total >= num_train_with_repeats:
                break
        first_pass = False
    return result


def bucketable(record: ImageRecord) -> bool:
    """An image kohya can bucket: it decoded, with a real size (broken files are left out, and listed by the
    health checks)."""
    return record.width > 0 and record.height > 0 and record.readable


def bucket_report(items: Iterable[BucketItem | ImageRecord | Mapping[str, Any]], settings: BucketSettings) -> BucketReport:
    """Bucket every image and total per bucket, including kohya's reg-image repetition.

    ``items``: :class:`BucketItem`, ``ImageRecord`` or mappings with path/width/height/repeats/is_reg.
    Items with repeats < 1 are skipped, as kohya ignores such subsets. Reg images are taken in path order
    (kohya sorts each folder's file list; folders in the order given).
    """
    train: list[BucketItem] = []
    reg: list[BucketItem] = []
    for raw in items:
        item = _item_fields(raw)
        if item.repeats < 1:
            continue
        (reg if item.is_reg else train).append(item)
    reg = _kohya_reg_order(reg)

    train_with_repeats = sum(i.repeats for i in train)
    reg_with_repeats = sum(i.repeats for i in reg)
    reg_effective = kohya_reg_repeats([i.repeats for i in reg], train_with_repeats)

    work = [(item, item.repeats) for item in train]
    reg_unused: list[str] = []
    for item, repeats in zip(reg, reg_effective, strict=True):
        if repeats == 0:
            reg_unused.append(item.path)
        else:
            work.append((item, repeats))

    # One assignment per distinct size; a plain dict avoids hashing the settings model per image.
    cache: dict[tuple[int, int], BucketAssignment] = {}
    table = None if settings.no_upscale else _predefined(settings)
    images: list[ImageBucket] = []
    per_bucket: dict[tuple[int, int], BucketCount] = {}
    unusable: list[ImageBucket] = []
    upscaled: list[ImageBucket] = []
    error_sum = 0.0
    for item, repeats in work:
        size = (item.width, item.height)
        assignment = cache.get(size)
        if assignment is None:
            if item.width <= 0 or item.height <= 0:
                raise ValueError(
                    f"{item.path}: image size {item.width}x{item.height} is not a real image size"
                )
            assignment = cache[size] = _assign(item.width, item.height, settings, table)
        image = ImageBucket(item.path, item.width, item.height, repeats, item.is_reg, assignment)
        images.append(image)
        bucket = assignment.bucket
        if not (bucket[0] and bucket[1]):
            unusable.append(image)
            continue
        if assignment.upscaled:
            upscaled.append(image)
        count = per_bucket.get(bucket)
        if count is None:
            count = per_bucket[bucket] = BucketCount(bucket=bucket)
        count.images += 1
        if item.is_reg:
            count.reg_images += 1
        else:
            count.train_images += 1
        count.with_repeats += repeats
        error_sum += abs(assignment.ar_error)

    buckets = sorted(per_bucket.values(), key=lambda b: b.bucket)
    total = sum(b.with_repeats for b in buckets)
    for b in buckets:
        b.share = b.with_repeats / total if total else 0.0
    return BucketReport(
        settings=settings,
        buckets=buckets,
        images=images,
        upscaled=upscaled,
        thin=[b for b in buckets if b.images <= THIN_BUCKET_MAX_IMAGES],
        unusable=unusable,
        train_with_repeats=train_with_repeats,
        reg_with_repeats=reg_with_repeats,
        reg_used_with_repeats=sum(reg_effective),
        reg_unused=reg_unused,
        mean_ar_error=error_sum / (len(images) - len(unusable)) if len(images) > len(unusable) else 0.0,
    )


def _kohya_reg_order(reg: list[BucketItem]) -> list[BucketItem]:
    """Folder by folder in first-seen order, files sorted by path within a folder (kohya's glob sort)."""
    folders: dict[str, list[BucketItem]] = {}
    for item in reg:
        folder = item.path.rsplit("/", 1)[0] if "/" in item.path else ""
        folders.setdefault(folder, []).append(item)
    return [item for group in folders.values() for item in sorted(group, key=lambda i: i.path)]


# --------------------------------------------------------------------------------------------------- steps


@dataclass(frozen=True, slots=True)
class StepMath:
    """How long training runs: the one step count every part of kiln uses (the trainer's loop, ``kiln train
    --check``, ``kiln buckets``, the TUI's run form).

    Each batch comes from one bucket and holds ``global_batch`` = ``batch_size`` (per process) x
    ``num_processes`` samples; a bucket's last batch is short (one process) or padded by repeating its images
    (several processes). ``batches_per_epoch`` = sum over buckets of ceil(images x repeats / global_batch);
    ``steps_per_epoch`` = ceil(batches / gradient accumulation), the last step of an epoch taking what is left;
    total = epochs x steps_per_epoch, or the target ``max_steps`` with ``epochs`` = ceil(max_steps /
    steps_per_epoch). With one process this is kohya's count."""

    with_repeats: int
    batch_size: int
    gradient_accumulation: int
    batches_per_epoch: int
    partial_batches: int
    steps_per_epoch: int
    epochs: int | None
    total_steps: int | None
    num_processes: int = 1

    @property
    def global_batch(self) -> int:
        """Samples per batch over all processes."""
        return self.batch_size * self.num_processes

    def batches_for(self, with_repeats: int) -> int:
        """The batches one bucket holding ``with_repeats`` samples gives per epoch."""
        return math.ceil(with_repeats / self.global_batch)

    def to_dict(self) -> dict[str, int | None]:
        return {
            "with_repeats": self.with_repeats,
            "batch_size": self.batch_size,
            "num_processes": self.num_processes,
            "gradient_accumulation": self.gradient_accumulation,
            "batches_per_epoch": self.batches_per_epoch,
            "partial_batches": self.partial_batches,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "total_steps": self.total_steps,
        }


def step_math(
    report_or_counts: BucketReport | Mapping[Any, int] | Iterable[int],
    batch_size: int,
    epochs: int | None = None,
    max_steps: int | None = None,
    gradient_accumulation: int = 1,
    num_processes: int = 1,
    batch_sizes: Mapping[Any, int] | None = None,
) -> StepMath:
    """Steps training will run. Give ``epochs`` for total steps, or ``max_steps`` for the epochs it takes.

    With both, ``epochs`` wins (kohya's ``--max_train_epochs`` overrides ``--max_train_steps``).
    ``report_or_counts``: a :class:`BucketReport`, a mapping bucket -> images x repeats, or those counts.
    ``batch_size`` is per process; ``num_processes`` processes (GPUs) each take that many samples of a batch.
    ``batch_sizes``: a batch size per key of a mapping of counts (a kohya dataset TOML's ``[[datasets]]`` each
    have their own); keys it lacks use ``batch_size``.
    """
    for name, value in (
        ("batch_size", batch_size),
        ("gradient_accumulation", gradient_accumulation),
        ("num_processes", num_processes),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
        raise ValueError(f"epochs must be a whole number >= 1, got {epochs!r}")
    if max_steps is not None and (not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"max_steps must be a whole number >= 1, got {max_steps!r}")

    sizes: list[int]
    if isinstance(report_or_counts, BucketReport):
        counts = [b.with_repeats for b in report_or_counts.buckets]
        sizes = [batch_size] * len(counts)
    elif isinstance(report_or_counts, Mapping):
        counts = [int(v) for v in report_or_counts.values()]
        sizes = [int((batch_sizes or {}).get(k, batch_size)) for k in report_or_counts]
    else:
        counts = [int(v) for v in report_or_counts]
        sizes = [batch_size] * len(counts)
    if any(c < 0 for c in counts):
        raise ValueError("bucket counts must not be negative")
    if any(b < 1 for b in sizes):
        raise ValueError(f"batch sizes must be whole numbers >= 1, got {sorted(set(sizes))}")

    batches = sum(math.ceil(c / (b * num_processes)) for c, b in zip(counts, sizes, strict=True))
    partial = sum(1 for c, b in zip(counts, sizes, strict=True) if c % (b * num_processes))
    steps_per_epoch = math.ceil(batches / gradient_accumulation)
    total: int | None = None
    if epochs is not None:
        total = epochs * steps_per_epoch
    elif max_steps is not None:
        epochs = math.ceil(max_steps / steps_per_epoch) if steps_per_epoch else None
        total = max_steps if steps_per_epoch else None
    return StepMath(
        with_repeats=sum(counts),
        batch_size=batch_size,
        gradient_accumulation=gradient_accumulation,
        batches_per_epoch=batches,
        partial_batches=partial,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        total_steps=total,
        num_processes=num_processes,
    )
