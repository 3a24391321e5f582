"""Turning a planned batch (a list of Samples) into tensors: pixels or cached latents, captions, loss weights,
SDXL size conditioning and each sample's seed. Usable inside DataLoader workers (no CUDA here). Imports torch
(``EpochBatches`` is a torch Dataset): only the trainer imports this module."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NotRequired, TypedDict

import torch
import torch.utils.data as torch_data

from train.data.cache import LatentCache, latent_key
from train.data.captions import CaptionSettings, process_caption
from train.data.dataset import Sample, TrainItem, mix_seed
from train.data.images import (
    Placement,
    color_augment,
    load_rgb,
    mask_source,
    mask_tensor,
    place,
    render,
    to_tensor,
)
from train.errors import TrainingError

if TYPE_CHECKING:
    from train.data.subsets import SubsetSpec


class Batch(TypedDict):
    """One process's share of a planned batch, as tensors. ``latents`` when latents are cached, else ``pixels``
    (B, 3, H, W) in [-1, 1]; SDXL size conditioning as (height, width) / (top, left) rows; ``masks`` (B, H, W)
    in [0, 1] when a subset trains with loss masks; ``items``: each sample's index into the items list."""

    captions: list[str]
    loss_weights: torch.Tensor
    seeds: list[int]
    items: list[int]
    original_sizes: torch.Tensor
    crop_top_lefts: torch.Tensor
    target_sizes: torch.Tensor
    latents: NotRequired[torch.Tensor]
    pixels: NotRequired[torch.Tensor]
    masks: NotRequired[torch.Tensor]


@dataclass(frozen=True)
class SampleOptions:
    """How the samples of one subset are made (its caption processing, augmentation and mask)."""

    captions: CaptionSettings
    keep_tokens: int = 0
    flip_aug: bool = False
    random_crop: bool = False
    color_aug: bool = False
    masks: bool = False
    conditioning_dir: Path | None = None

    @classmethod
    def of(cls, spec: SubsetSpec) -> SampleOptions:
        c = spec.config
        return cls(captions=spec.captions, keep_tokens=spec.keep_tokens, flip_aug=c.flip_aug,
                   random_crop=c.random_crop, color_aug=c.color_aug, masks=spec.masks,
                   conditioning_dir=spec.conditioning_dir)

    def mask_name(self) -> str:
        """What a cached latent's mask comes from ('' without masks)."""
        if not self.masks:
            return ""
        return f"cond:{self.conditioning_dir}" if self.conditioning_dir is not None else "alpha"


@dataclass
class BatchBuilder:
    """Builds the tensors of one batch. ``subsets``: each subset's options (an item's ``subset`` indexes it);
    without them every item uses ``captions`` / ``flip_aug`` / ``random_crop``. ``latents`` is set when
    latents are cached."""

    items: list[TrainItem]
    captions: CaptionSettings
    seed: int
    flip_aug: bool = False
    random_crop: bool = False
    prior_loss_weight: float = 1.0
    latents: LatentCache | None = None
    vae_id: str = ""
    subsets: list[SubsetSpec] | None = None
    _options: dict[int, SampleOptions] = field(default_factory=dict, repr=False)

    def options(self, item: TrainItem) -> SampleOptions:
        found = self._options.get(item.subset)
        if found is None:
            if self.subsets is not None:
                found = SampleOptions.of(self.subsets[item.subset])
            else:
                found = SampleOptions(captions=self.captions, flip_aug=self.flip_aug, random_crop=self.random_crop)
            self._options[item.subset] = found
        return found

    def sample_seed(self, epoch: int, sample: Sample) -> int:
        return mix_seed(self.seed, epoch, sample.position)

    def placement(self, item: TrainItem, rng: random.Random, flip: bool) -> Placement:
        a = item.assignment
        return place(item.size, a.resized, a.crop, a.bucket, random_crop=self.options(item).random_crop, flip=flip,
                     rng=rng)

    def build(self, samples: list[Sample], epoch: int) -> Batch:
        pixels: list[torch.Tensor] = []
        latents: list[torch.Tensor] = []
        masks: list[torch.Tensor] = []
        captions: list[str] = []
        weights: list[float] = []
        seeds: list[int] = []
        original: list[tuple[int, int]] = []
        crops: list[tuple[int, int]] = []
        targets: list[tuple[int, int]] = []
        any_mask = False
        for sample in samples:
            item = self.items[sample.item]
            opts = self.options(item)
            seed = self.sample_seed(epoch, sample)
            rng = random.Random(seed)
            flip = opts.flip_aug and rng.random() < 0.5
            placement = self.placement(item, rng, flip)
            mask: torch.Tensor | None = None
            if self.latents is not None:
                key = latent_key(item.sha256, placement.bucket, placement.resized, placement.crop, flip, self.vae_id,
                                 opts.mask_name())
                latent = self.latents.get(key)
                if latent is None:
                    raise TrainingError(f"dataset.cache_latents_to_disk: the cached latent of {item.path} is gone "
                                        "(was .kiln/latents deleted while training?); resume to rebuild it")
                latents.append(latent)
                if opts.masks:
                    mask = self.latents.get_mask(key)
            else:
                try:
                    image = load_rgb(item.abs_path)
                    if opts.masks:
                        mask = mask_tensor(mask_source(item.abs_path, opts.conditioning_dir), placement)
                except OSError as exc:  # the file vanished or changed since the scan
                    raise TrainingError(
                        f"dataset.path: {item.abs_path} can no longer be read ({exc.strerror or exc}): was the "
                        "dataset moved, deleted or unmounted while training?"
                    ) from None
                img = render(image, placement)
                if opts.color_aug:  # its own random stream: the caption shuffle below draws as before
                    img = color_augment(img, random.Random(mix_seed(seed, 0xC010)))
                pixels.append(to_tensor(img))
            any_mask = any_mask or mask is not None
            masks.append(mask if mask is not None else torch.ones(0))
            captions.append(process_caption(item.caption, opts.captions, epoch=epoch, rng=rng,
                                            subset_keep_tokens=opts.keep_tokens or item.keep_tokens))
            weights.append(self.prior_loss_weight if item.is_reg else 1.0)
            seeds.append(seed)
            original.append((item.size[1], item.size[0]))
            crops.append(placement.crop_top_left)
            targets.append((placement.bucket[1], placement.bucket[0]))
        batch: Batch = {
            "captions": captions,
            "loss_weights": torch.tensor(weights, dtype=torch.float32),
            "seeds": seeds,
            "items": [sample.item for sample in samples],
            "original_sizes": torch.tensor(original, dtype=torch.float32),
            "crop_top_lefts": torch.tensor(crops, dtype=torch.float32),
            "target_sizes": torch.tensor(targets, dtype=torch.float32),
        }
        if latents:
            batch["latents"] = torch.stack(latents)
        else:
            batch["pixels"] = torch.stack(pixels)
        if any_mask:  # a sample without a mask (no alpha) counts fully, as in kohya
            size = next(m.shape for m in masks if m.numel())
            batch["masks"] = torch.stack([m if m.numel() else torch.ones(size) for m in masks])
        return batch


class EpochBatches(torch_data.Dataset[Batch]):
    """A map-style dataset over one process's share of an epoch plan (for torch's DataLoader, batch_size=None)."""

    def __init__(self, builder: BatchBuilder, plan: list[list[Sample]], epoch: int, rank: int,
                 world: int) -> None:
        self.builder, self.plan, self.epoch = builder, plan, epoch
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return len(self.plan)

    def local(self, index: int) -> list[Sample]:
        """This process's share of batch ``index`` (several processes: the plan pads every batch to a multiple
        of the process count, each dataset's batch size per process)."""
        batch = self.plan[index]
        share = len(batch) // self.world if self.world > 1 else len(batch)
        return batch[self.rank * share:(self.rank + 1) * share]

    def __getitem__(self, index: int) -> Batch:
        return self.builder.build(self.local(index), self.epoch)


def epoch_loader(builder: BatchBuilder, plan: list[list[Sample]], *, epoch: int, rank: int, world: int,
                 start: int, num_workers: int, pin_memory: bool = False) -> Iterable[Batch]:
    """This process's batches of one epoch, from batch ``start`` on (a resumed epoch), in plan order.

    The plan is sharded here, not by accelerate, so every sample keeps its place in the epoch (and its seed);
    the loader is accelerate's ``DataLoaderShard`` all the same, which tells ``accelerator.accumulate`` which
    batch ends the epoch (the last optimizer step of an epoch takes what is left). Its shuffling generator is
    its own, so the global RNG is left alone. ``pin_memory``: the batches' tensors come in page-locked memory
    (CUDA only), so their copies to the GPU need not block."""
    from accelerate.data_loader import DataLoaderShard

    loader: Iterable[Batch] = DataLoaderShard(
        EpochBatches(builder, plan, epoch, rank, world), batch_size=None,
        sampler=range(start, len(plan)), num_workers=num_workers, persistent_workers=False, pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(mix_seed(builder.seed, epoch)),
    )
    return loader
