"""From a curator dataset to training items and per-epoch batch plans.

Every image gets the curator's kohya bucket assignment and kohya's repeats (regularization images re-counted
the kohya way). Images with a blocking flag (unreadable, truncated, not an image, too large, empty file) are
skipped with a warning. An epoch is planned up front: each bucket's samples are shuffled and cut into batches,
then the batches are shuffled, all from ``(seed, epoch)``, so any step can be re-planned exactly on resume.
Each sample has a position in its epoch, and its own random stream (noise, timestep, caption shuffle, flip)
is seeded from ``(seed, epoch, position)``: the same sample sees the same randomness however batches are
split over processes.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from curator.buckets import BucketAssignment, BucketSettings, assign_bucket, kohya_reg_repeats
from curator.captions.files import caption_path
from train.data.captions import first_line

if TYPE_CHECKING:
    from curator.dataset import Dataset
    from train.config import DatasetConfig

BLOCKING_FLAGS = ("unreadable", "truncated", "empty-file", "not-image", "too-large")


class DatasetError(ValueError):
    """The dataset cannot be trained on; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class TrainItem:
    """One usable image with everything training needs to know about it."""

    index: int
    path: str
    abs_path: Path
    size: tuple[int, int]
    sha256: str
    assignment: BucketAssignment
    repeats: int
    is_reg: bool
    caption: str
    keep_tokens: int

    @property
    def bucket(self) -> tuple[int, int]:
        return self.assignment.bucket


@dataclass(frozen=True, slots=True)
class Sample:
    """One draw of an item in an epoch: ``position`` is its place in the epoch's order."""

    item: int
    position: int


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across processes and Python versions."""
    digest = hashlib.blake2b(",".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def bucket_settings(cfg: DatasetConfig) -> BucketSettings:
    """The curator's BucketSettings from ``[dataset]``. Without buckets, every image is cropped to resolution."""
    res = cfg.resolution_wh
    if not cfg.enable_bucket:
        side = max(res)
        return BucketSettings(resolution=res, min_bucket=min(res), max_bucket=side, step=8, no_upscale=False)
    return BucketSettings(
        resolution=res, min_bucket=cfg.min_bucket_reso, max_bucket=cfg.max_bucket_reso,
        step=cfg.bucket_reso_steps, no_upscale=cfg.bucket_no_upscale,
    )


def _fixed_assignment(width: int, height: int, res: tuple[int, int]) -> BucketAssignment:
    """No bucketing: scale to cover the resolution, centre crop (kohya without --enable_bucket)."""
    scale = max(res[0] / width, res[1] / height)
    resized = (max(res[0], round(width * scale)), max(res[1], round(height * scale)))
    crop = ((resized[0] - res[0]) // 2, (resized[1] - res[1]) // 2)
    return BucketAssignment(bucket=res, resized=resized, crop=crop, ar_error=0.0, upscaled=scale > 1)


def build_items(
    cfg: DatasetConfig,
    warn: Callable[[str, str | None], object],
    progress: bool | None = None,
    should_stop: Callable[[], str | None] | None = None,
) -> tuple[list[TrainItem], Dataset]:
    """Scan the dataset (incrementally, through the curator's index) and return the usable training items
    (without the images ``validation_split`` holds out) and the curator Dataset. ``warn(message, path)`` is
    called once per skipped image. ``should_stop()`` is asked after every commit to the index (at least every
    0.5 s while files are read); a reason to stop ends the scan with :class:`~train.errors.StoppedEarly`,
    keeping what was indexed."""
    items, _, dataset = build_split(cfg, warn, progress, should_stop)
    return items, dataset


def build_split(
    cfg: DatasetConfig,
    warn: Callable[[str, str | None], object],
    progress: bool | None = None,
    should_stop: Callable[[], str | None] | None = None,
) -> tuple[list[TrainItem], list[TrainItem], Dataset]:
    """:func:`build_items` with the held-out validation items too: (training items, validation items,
    dataset)."""
    items, dataset = _all_items(cfg, warn, progress, should_stop)
    train, held_out = split_validation(items, cfg.validation_split, cfg.validation_seed)
    return train, held_out, dataset


def split_validation(items: list[TrainItem], fraction: float, seed: int) -> tuple[list[TrainItem], list[TrainItem]]:
    """Hold out ``fraction`` of each folder's training images (kohya's ``split_train_val``: shuffle with the
    seed, the last ``round(n x fraction)`` are held out), at least one image staying in training per folder.
    Regularization images always train. Both lists are re-indexed from 0. The split depends only on the
    images, the fraction and the seed, so runs with other settings hold out the same images."""
    from dataclasses import replace

    if fraction <= 0:
        return items, []
    by_folder: dict[str, list[TrainItem]] = {}
    for item in items:
        if not item.is_reg:
            by_folder.setdefault(str(Path(item.path).parent), []).append(item)
    held: set[int] = set()
    for folder, members in sorted(by_folder.items()):
        order = sorted(members, key=lambda i: i.path)
        folder_key = int.from_bytes(hashlib.blake2b(folder.encode(), digest_size=8).digest(), "little")
        random.Random(mix_seed(seed, folder_key)).shuffle(order)
        count = min(round(len(order) * fraction), len(order) - 1)
        held.update(i.index for i in order[len(order) - count:] if count > 0)
    train = [replace(i, index=n) for n, i in enumerate(i for i in items if i.index not in held)]
    val = [replace(i, index=n) for n, i in enumerate(i for i in items if i.index in held)]
    return train, val


def _all_items(
    cfg: DatasetConfig,
    warn: Callable[[str, str | None], object],
    progress: bool | None = None,
    should_stop: Callable[[], str | None] | None = None,
) -> tuple[list[TrainItem], Dataset]:
    from curator.dataset import Dataset
    from curator.scan.scanner import ScanProgress

    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset.path: {str(path)!r} does not exist; point it at a dataset folder or TOML")
    dataset = Dataset.open(path, caption_extension=cfg.caption_extension)

    def check_stop(report: ScanProgress) -> None:
        reason = should_stop() if should_stop is not None else None
        if reason:
            from train.errors import StoppedEarly

            raise StoppedEarly(reason, f"scanning the dataset ({report.done} of {report.total} new or changed "
                               "images read)", f"the {report.done} read are kept in the dataset index "
                               f"({dataset.index.kiln_dir}) and the next run reads only the rest")

    dataset.scan(progress=progress, on_progress=check_stop)
    for message in getattr(dataset.layout, "warnings", []):
        warn(message, None)
    for key, value in (getattr(dataset.layout, "toml_settings", None) or {}).items():
        mine = getattr(cfg, key, None)
        if mine is not None and _differs(mine, value):
            warn(f"the dataset TOML sets {key} = {value!r} but [dataset] {key} = {mine!r} is used; "
                 f"set dataset.{key} in the training config to match", None)
    settings = bucket_settings(cfg)
    records = sorted(dataset.images(), key=lambda r: r.path)

    usable = []
    for record in records:
        blocking = [f for f in record.flags if f.kind in BLOCKING_FLAGS]
        if blocking:
            warn(f"skipped {record.path}: {blocking[0].kind} ({blocking[0].detail})", record.path)
            continue
        if cfg.enable_bucket:
            assignment = assign_bucket(record.width, record.height, settings)
        else:
            assignment = _fixed_assignment(record.width, record.height, cfg.resolution_wh)
        if not assignment.usable:
            warn(f"skipped {record.path}: {record.width}x{record.height} fits no bucket with bucket_no_upscale; "
                 "turn bucket_no_upscale off or remove the image", record.path)
            continue
        usable.append((record, assignment))

    train = [(r, a) for r, a in usable if not r.subset.is_reg]
    if not train:
        raise DatasetError(
            f"dataset.path: {str(path)!r} has no usable training images "
            f"({len(records)} found, {len(records) - len(usable)} skipped); "
            "check the folder layout (<repeats>_<name>/ for kohya) and `kiln check`"
        )
    # kohya: reg images are repeated (in folder order, files sorted) until they match the train images x repeats.
    reg = sorted(((r, a) for r, a in usable if r.subset.is_reg), key=lambda ra: (ra[0].subset.rel_dir, ra[0].path))
    train_total = sum(r.subset.repeats for r, _ in train)
    reg_repeats = kohya_reg_repeats([r.subset.repeats for r, _ in reg], train_total)

    items: list[TrainItem] = []
    weighted = [(ra, ra[0].subset.repeats) for ra in train] + list(zip(reg, reg_repeats, strict=True))
    for (record, assignment), repeats in weighted:
        if repeats <= 0:
            continue
        caption_file = caption_path(record)  # the subset's caption extension, as kohya reads it
        caption = ""
        if caption_file is not None:
            try:
                caption = first_line(caption_file.read_bytes())
            except OSError as exc:
                warn(f"cannot read caption {caption_file.name}: {exc.strerror}; using the class tokens", record.path)
        if not caption:
            caption = record.subset.class_tokens
        items.append(TrainItem(
            index=len(items), path=record.path, abs_path=Path(record.abs_path), size=(record.width, record.height),
            sha256=record.sha256, assignment=assignment, repeats=repeats, is_reg=record.subset.is_reg,
            caption=caption, keep_tokens=record.subset.keep_tokens,
        ))
    return items, dataset


def _differs(mine: object, theirs: object) -> bool:
    if isinstance(mine, tuple | list) or isinstance(theirs, tuple | list):
        def pair(v: object) -> tuple[object, ...]:
            return tuple(v) if isinstance(v, tuple | list) else (v, v)

        return pair(mine) != pair(theirs)
    return bool(mine != theirs)


def plan_epoch(items: list[TrainItem], global_batch: int, seed: int, epoch: int, pad: bool = False) -> list[list[Sample]]:
    """The batches of one epoch (1-based): every batch from one bucket; kohya's shuffle of buckets and batches.

    ``pad`` fills a bucket's last batch up to ``global_batch`` by cycling that bucket (several processes).
    """
    rng = random.Random(mix_seed(seed, epoch, 0x5EED))
    by_bucket: dict[tuple[int, int], list[int]] = {}
    for item in items:
        by_bucket.setdefault(item.bucket, []).extend([item.index] * item.repeats)
    batches: list[list[int]] = []
    for bucket in sorted(by_bucket):
        members = by_bucket[bucket]
        rng.shuffle(members)
        for start in range(0, len(members), global_batch):
            batch = members[start:start + global_batch]
            if pad and len(batch) < global_batch:
                batch = batch + [members[i % len(members)] for i in range(global_batch - len(batch))]
            batches.append(batch)
    rng.shuffle(batches)
    plan: list[list[Sample]] = []
    position = 0
    for batch in batches:
        plan.append([Sample(item=i, position=position + k) for k, i in enumerate(batch)])
        position += len(batch)
    return plan


def bucket_counts(items: list[TrainItem]) -> dict[tuple[int, int], int]:
    """Samples (images x repeats) per bucket in one epoch: the input of ``TrainSection.step_math``."""
    counts: dict[tuple[int, int], int] = {}
    for item in items:
        counts[item.bucket] = counts.get(item.bucket, 0) + item.repeats
    return counts
