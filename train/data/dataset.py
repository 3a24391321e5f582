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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from curator.buckets import BucketAssignment, BucketSettings, assign_bucket, kohya_reg_repeats
from train.data.captions import first_line

if TYPE_CHECKING:
    from curator.buckets import StepMath
    from curator.dataset import Dataset
    from curator.records import ImageRecord
    from train.config import DatasetConfig, TrainSection
    from train.data.subsets import RunData, SubsetSpec

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
    subset: int = 0
    """Index of its subset in the run's ``RunData.subsets`` (its caption and augmentation options)."""
    dataset: int = 0
    """Index of its ``[[datasets]]`` block (its resolution, buckets and batch size)."""
    tags: str = ""
    """A metadata_file subset's ``tags`` (what kohya counts in ss_tag_frequency for such subsets)."""

    @property
    def bucket(self) -> tuple[int, int]:
        return self.assignment.bucket

    @property
    def group(self) -> tuple[int, tuple[int, int]]:
        """What a batch never mixes: the dataset and the bucket."""
        return (self.dataset, self.assignment.bucket)


@dataclass
class TrainData:
    """A run's data: the items, the curator dataset they come from, and its datasets and subsets."""

    items: list[TrainItem]
    dataset: Dataset
    run: RunData
    subset_images: dict[int, list[str]] = field(default_factory=dict)
    """Per subset, one text per usable image (reg images kohya leaves unused too): its raw caption, or a
    metadata_file subset's tags: what kohya's ss_tag_frequency counts, and its img_count."""
    held_out: list[TrainItem] = field(default_factory=list)
    """The images ``dataset.validation_split`` holds out (not in ``items``), for the validation loss."""

    def batch_sizes(self) -> dict[int, int]:
        """Batch size (per process) of each ``[[datasets]]`` block."""
        return {d.index: d.batch_size for d in self.run.datasets}

    def step_math(self, t: TrainSection, num_processes: int = 1) -> StepMath:
        """The run's length: every (dataset, bucket) in batches of its dataset's size."""
        counts = group_counts(self.items)
        sizes = self.batch_sizes()
        return t.step_math(counts, num_processes=num_processes, batch_sizes={k: sizes[k[0]] for k in counts})


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
    *,
    batch_size: int = 1,
    masked_loss: bool = False,
) -> TrainData:
    """Scan the dataset (incrementally, through the curator's index) and return the usable items with the
    datasets and subsets they belong to. ``warn(message, path)`` is called once per skipped image and for
    whatever a dataset TOML asks that kiln cannot honour. ``should_stop()`` is asked after every commit to the
    index (at least every 0.5 s while files are read); a reason to stop ends the scan with
    :class:`~train.errors.StoppedEarly`, keeping what was indexed. ``batch_size``: ``train.batch_size``, the
    batch size of datasets whose TOML block names none; ``masked_loss``: loss masks for every subset."""
    from curator.dataset import Dataset
    from curator.scan.scanner import ScanProgress
    from train.data.metadata import metadata_captions
    from train.data.subsets import resolve

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
        if key in cfg.model_fields_set and mine is not None and _differs(mine, value):
            warn(f"the dataset TOML sets {key} = {value!r}, which wins over [dataset] {key} = {mine!r} as in "
                 "kohya ([dataset] applies where the TOML is silent)", None)
    run = resolve(cfg, dataset.layout, batch_size=batch_size, masked_loss=masked_loss, warn=warn)
    records = sorted(dataset.images(), key=lambda r: r.path)

    readable = []
    for record in records:
        blocking = [f for f in record.flags if f.kind in BLOCKING_FLAGS]
        if blocking:
            warn(f"skipped {record.path}: {blocking[0].kind} ({blocking[0].detail})", record.path)
            continue
        readable.append(record)
    by_folder: dict[str, list[ImageRecord]] = {}
    for record in readable:
        by_folder.setdefault(record.subset.rel_dir, []).append(record)

    items: list[TrainItem] = []
    counted: dict[int, list[str]] = {}
    unusable: set[str] = set()
    for spec in run.datasets:
        settings = spec.buckets
        subsets = [s for s in run.subsets if s.dataset == spec.index]
        chosen: list[tuple[SubsetSpec, ImageRecord, BucketAssignment, str, str]] = []
        for sub in subsets:
            folder = by_folder.get(sub.subset.rel_dir, [])
            captions = metadata_captions(sub.subset, folder, warn) if sub.subset.metadata_file else None
            for record in folder:
                if captions is not None and record.path not in captions:
                    continue  # a fine-tuning subset trains the images its JSON lists
                if spec.config.enable_bucket:
                    assignment = assign_bucket(record.width, record.height, settings)
                else:
                    assignment = _fixed_assignment(record.width, record.height, spec.config.resolution_wh)
                if not assignment.usable:
                    if record.path not in unusable:
                        unusable.add(record.path)
                        warn(f"skipped {record.path}: {record.width}x{record.height} fits no bucket with "
                             "bucket_no_upscale; turn bucket_no_upscale off or remove the image", record.path)
                    continue
                caption, tags = captions[record.path] if captions is not None else (_caption(record, sub, warn), "")
                chosen.append((sub, record, assignment, caption, tags))
                counted.setdefault(sub.index, []).append(tags if captions is not None
                                                         else caption or sub.subset.class_tokens)
        train = [c for c in chosen if not c[0].subset.is_reg]
        # kohya, per dataset: reg images are repeated (subsets in order, files sorted) until they match the
        # dataset's train images x repeats.
        reg = [c for c in chosen if c[0].subset.is_reg]
        train_total = sum(c[0].subset.repeats for c in train)
        reg_repeats = kohya_reg_repeats([c[0].subset.repeats for c in reg], train_total)
        weighted = [(c, c[0].subset.repeats) for c in train] + list(zip(reg, reg_repeats, strict=True))
        for (sub, record, assignment, caption, tags), repeats in weighted:
            if repeats <= 0:
                continue
            items.append(TrainItem(
                index=len(items), path=record.path, abs_path=Path(record.abs_path),
                size=(record.width, record.height), sha256=record.sha256, assignment=assignment, repeats=repeats,
                is_reg=sub.subset.is_reg, caption=caption or sub.subset.class_tokens, keep_tokens=sub.keep_tokens,
                subset=sub.index, dataset=spec.index, tags=tags,
            ))
    if not any(not i.is_reg for i in items):
        raise DatasetError(
            f"dataset.path: {str(path)!r} has no usable training images "
            f"({len(records)} found, {len(records) - len(readable) + len(unusable)} skipped); "
            "check the folder layout (<repeats>_<name>/ for kohya) and `kiln check`"
        )
    training, held_out = split_validation(items, cfg.validation_split, cfg.validation_seed)
    return TrainData(items=training, dataset=dataset, run=run, subset_images=counted, held_out=held_out)


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


def _caption(record: ImageRecord, sub: SubsetSpec, warn: Callable[[str, str | None], object]) -> str:
    """The first line of the image's caption file (the subset's extension, as kohya reads it); '' if none."""
    from curator.captions.files import caption_file_for

    caption_file = caption_file_for(record.abs_path, sub.subset.caption_extension)
    try:
        return first_line(caption_file.read_bytes())
    except FileNotFoundError:
        return ""
    except OSError as exc:
        warn(f"cannot read caption {caption_file.name}: {exc.strerror}; using the class tokens", record.path)
        return ""


def _differs(mine: object, theirs: object) -> bool:
    if isinstance(mine, tuple | list) or isinstance(theirs, tuple | list):
        def pair(v: object) -> tuple[object, ...]:
            return tuple(v) if isinstance(v, tuple | list) else (v, v)

        return pair(mine) != pair(theirs)
    return bool(mine != theirs)


def plan_epoch(items: list[TrainItem], global_batch: int | Mapping[int, int], seed: int, epoch: int,
               pad: bool = False) -> list[list[Sample]]:
    """The batches of one epoch (1-based): every batch from one dataset's bucket; kohya's shuffle of buckets
    and batches. ``global_batch``: samples per batch over all processes, or that per dataset index.

    ``pad`` fills a bucket's last batch up to its global batch by cycling that bucket (several processes).
    """
    rng = random.Random(mix_seed(seed, epoch, 0x5EED))
    by_group: dict[tuple[int, tuple[int, int]], list[int]] = {}
    for item in items:
        by_group.setdefault(item.group, []).extend([item.index] * item.repeats)
    batches: list[list[int]] = []
    for group in sorted(by_group):
        members = by_group[group]
        size = global_batch if isinstance(global_batch, int) else global_batch[group[0]]
        rng.shuffle(members)
        for start in range(0, len(members), size):
            batch = members[start:start + size]
            if pad and len(batch) < size:
                batch = batch + [members[i % len(members)] for i in range(size - len(batch))]
            batches.append(batch)
    rng.shuffle(batches)
    plan: list[list[Sample]] = []
    position = 0
    for batch in batches:
        plan.append([Sample(item=i, position=position + k) for k, i in enumerate(batch)])
        position += len(batch)
    return plan


def bucket_counts(items: list[TrainItem]) -> dict[tuple[int, int], int]:
    """Samples (images x repeats) per bucket in one epoch, over every dataset (what ``--check`` shows)."""
    counts: dict[tuple[int, int], int] = {}
    for item in items:
        counts[item.bucket] = counts.get(item.bucket, 0) + item.repeats
    return counts


def group_counts(items: list[TrainItem]) -> dict[tuple[int, tuple[int, int]], int]:
    """Samples per (dataset, bucket) in one epoch: the input of ``TrainSection.step_math`` (with each
    dataset's batch size)."""
    counts: dict[tuple[int, tuple[int, int]], int] = {}
    for item in items:
        counts[item.group] = counts.get(item.group, 0) + item.repeats
    return counts
