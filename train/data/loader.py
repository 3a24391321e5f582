"""Turning a planned batch (a list of Samples) into tensors: pixels or cached latents, captions, loss weights,
SDXL size conditioning and each sample's seed. Usable inside DataLoader workers (no CUDA here). Imports torch
(``EpochBatches`` is a torch Dataset): only the trainer imports this module."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NotRequired, TypedDict

import torch
import torch.utils.data as torch_data

from train.data.cache import LatentCache, latent_key
from train.data.captions import CaptionSettings, process_caption
from train.data.dataset import Sample, TrainItem, mix_seed
from train.data.images import Placement, load_rgb, place, render, to_tensor
from train.errors import TrainingError


class Batch(TypedDict):
    """One process's share of a planned batch, as tensors. ``latents`` when latents are cached, else ``pixels``
    (B, 3, H, W) in [-1, 1]; SDXL size conditioning as (height, width) / (top, left) rows; ``items``: each sample's
    index into the items list."""

    captions: list[str]
    loss_weights: torch.Tensor
    seeds: list[int]
    items: list[int]
    original_sizes: torch.Tensor
    crop_top_lefts: torch.Tensor
    target_sizes: torch.Tensor
    latents: NotRequired[torch.Tensor]
    pixels: NotRequired[torch.Tensor]


@dataclass
class BatchBuilder:
    """Builds the tensors of one batch. ``latents`` is set when latents are cached."""

    items: list[TrainItem]
    captions: CaptionSettings
    seed: int
    flip_aug: bool = False
    random_crop: bool = False
    prior_loss_weight: float = 1.0
    latents: LatentCache | None = None
    vae_id: str = ""

    def sample_seed(self, epoch: int, sample: Sample) -> int:
        return mix_seed(self.seed, epoch, sample.position)

    def placement(self, item: TrainItem, rng: random.Random, flip: bool) -> Placement:
        a = item.assignment
        return place(item.size, a.resized, a.crop, a.bucket, random_crop=self.random_crop, flip=flip, rng=rng)

    def build(self, samples: list[Sample], epoch: int) -> Batch:
        pixels: list[torch.Tensor] = []
        latents: list[torch.Tensor] = []
        captions: list[str] = []
        weights: list[float] = []
        seeds: list[int] = []
        original: list[tuple[int, int]] = []
        crops: list[tuple[int, int]] = []
        targets: list[tuple[int, int]] = []
        for sample in samples:
            item = self.items[sample.item]
            seed = self.sample_seed(epoch, sample)
            rng = random.Random(seed)
            flip = self.flip_aug and rng.random() < 0.5
            placement = self.placement(item, rng, flip)
            if self.latents is not None:
                key = latent_key(item.sha256, placement.bucket, placement.resized, placement.crop, flip, self.vae_id)
                latent = self.latents.get(key)
                if latent is None:
                    raise TrainingError(f"dataset.cache_latents_to_disk: the cached latent of {item.path} is gone "
                                        "(was .kiln/latents deleted while training?); resume to rebuild it")
                latents.append(latent)
            else:
                try:
                    image = load_rgb(item.abs_path)
                except OSError as exc:  # the file vanished or changed since the scan
                    raise TrainingError(
                        f"dataset.path: {item.abs_path} can no longer be read ({exc.strerror or exc}): was the "
                        "dataset moved, deleted or unmounted while training?"
                    ) from None
                pixels.append(to_tensor(render(image, placement)))
            captions.append(process_caption(item.caption, self.captions, epoch=epoch, rng=rng,
                                            subset_keep_tokens=item.keep_tokens))
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
        return batch


class EpochBatches(torch_data.Dataset[Batch]):
    """A map-style dataset over one process's share of an epoch plan (for torch's DataLoader, batch_size=None)."""

    def __init__(self, builder: BatchBuilder, plan: list[list[Sample]], epoch: int, rank: int,
                 per_process: int) -> None:
        self.builder, self.plan, self.epoch = builder, plan, epoch
        self.rank, self.per_process = rank, per_process

    def __len__(self) -> int:
        return len(self.plan)

    def local(self, index: int) -> list[Sample]:
        return self.plan[index][self.rank * self.per_process:(self.rank + 1) * self.per_process]

    def __getitem__(self, index: int) -> Batch:
        return self.builder.build(self.local(index), self.epoch)


def epoch_loader(builder: BatchBuilder, plan: list[list[Sample]], *, epoch: int, rank: int, per_process: int,
                 start: int, num_workers: int, pin_memory: bool = False) -> Iterable[Batch]:
    """This process's batches of one epoch, from batch ``start`` on (a resumed epoch), in plan order.

    The plan is sharded here, not by accelerate, so every sample keeps its place in the epoch (and its seed);
    the loader is accelerate's ``DataLoaderShard`` all the same, which tells ``accelerator.accumulate`` which
    batch ends the epoch (the last optimizer step of an epoch takes what is left). Its shuffling generator is
    its own, so the global RNG is left alone. ``pin_memory``: the batches' tensors come in page-locked memory
    (CUDA only), so their copies to the GPU need not block."""
    from accelerate.data_loader import DataLoaderShard

    loader: Iterable[Batch] = DataLoaderShard(
        EpochBatches(builder, plan, epoch, rank, per_process), batch_size=None,
        sampler=range(start, len(plan)), num_workers=num_workers, persistent_workers=False, pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(mix_seed(builder.seed, epoch)),
    )
    return loader
