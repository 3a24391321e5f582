"""Filling the caches before training: every latent the run will see (VAE), every caption's text-encoder output.

Both run with the model visiting the device (train.staging) and report progress as ``phase`` events. A stop
asked for while caching ends the run before its first step (:class:`~train.errors.StoppedEarly`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from train.data.cache import LatentCache, TextCache, latent_key
from train.data.captions import process_caption
from train.data.dataset import TrainItem
from train.data.images import Placement, load_rgb, mask_source, mask_tensor, place, render, to_tensor
from train.errors import StoppedEarly

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from train.data.loader import SampleOptions
    from train.denoiser import TextConditioning
    from train.models.kinds import AutoencoderKL

Progress = Callable[[str, int, int], None]
"""``progress(phase, done, total)``: a ``phase`` event."""
StopCheck = Callable[[], "str | None"]
"""Why to stop now (a signal name, ``stop.request``), or None."""

TEXT_CHUNK = 32  # captions per text-encoder call while caching


def cache_latents(items: list[TrainItem], cache: LatentCache, vae: AutoencoderKL, *, vae_id: str,
                  options: Callable[[TrainItem], SampleOptions], batch_size: int, device: torch.device,
                  progress: Progress, should_stop: StopCheck) -> None:
    """Encode every (image, flip) the training will see into ``cache`` (skipping entries already there), each
    image's subset ``options`` saying whether it flips and has a loss mask (stored with it at latent size).
    Each latent is one draw from the VAE's distribution, seeded by its key: the same on every run."""
    import torch

    todo: list[tuple[str, TrainItem, Placement]] = []
    for item in items:
        opts = options(item)
        for flip in ((False, True) if opts.flip_aug else (False,)):
            a = item.assignment
            placement = place(item.size, a.resized, a.crop, a.bucket, random_crop=False, flip=flip,
                              rng=random.Random(0))
            key = latent_key(item.sha256, a.bucket, a.resized, a.crop, flip, vae_id, opts.mask_name())
            if not cache.has(key):  # entries are written atomically: present = complete
                todo.append((key, item, placement))
    total = len(todo)
    progress("caching latents", 0, total)
    if total == 0:
        return
    scaling = float(vae.config["scaling_factor"])
    # Group by bucket so images of one size are encoded together.
    todo.sort(key=lambda entry: entry[2].bucket)
    done = 0
    for start in range(0, total, batch_size):
        reason = should_stop()
        if reason:
            during = f"caching latents ({done} of {total} encoded)"
            if cache.folder is None:
                raise StoppedEarly(reason, during, "they were in memory only and are dropped "
                                   "(dataset.cache_latents_to_disk = true keeps them between runs)")
            raise StoppedEarly(reason, during, f"the {done} encoded latents stay in {cache.folder} and the next "
                               "run reuses them")
        chunk = todo[start:start + batch_size]
        groups: dict[tuple[int, int], list[tuple[str, TrainItem, Placement]]] = {}
        for entry in chunk:
            groups.setdefault(entry[2].bucket, []).append(entry)
        for group in groups.values():
            pixels = torch.stack([to_tensor(render(load_rgb(item.abs_path), pl)) for _, item, pl in group])
            with torch.no_grad():
                dist = vae.encode(pixels.to(device, dtype=torch.float32)).latent_dist
                for (key, item, pl), mean, std in zip(group, dist.mean, dist.std, strict=True):
                    g = torch.Generator().manual_seed(int(key[:15], 16))
                    eps = torch.randn(mean.shape, generator=g).to(device)
                    cache.put(key, (mean + std * eps) * scaling, mask=latent_mask(item, pl, options(item),
                                                                                  tuple(mean.shape[1:])))
        done += len(chunk)
        progress("caching latents", done, total)


def latent_mask(item: TrainItem, placement: Placement, opts: SampleOptions,
                latent_size: tuple[int, ...]) -> torch.Tensor | None:
    """The loss mask of a cached latent, area-resized to the latent's size (what the loss resizes it to)."""
    import torch

    if not opts.masks:
        return None
    mask = mask_tensor(mask_source(item.abs_path, opts.conditioning_dir), placement)
    return torch.nn.functional.interpolate(mask[None, None], size=latent_size, mode="area")[0, 0]


def cache_text_outputs(items: list[TrainItem], options: Callable[[TrainItem], SampleOptions],
                       encode: TextConditioning, *, progress: Progress, folder: Path | None = None) -> TextCache:
    """Encode every caption the training will use (captions are static when this cache is on: the config
    refuses shuffling and dropout with it) and return the cache the conditioning reads; with ``folder``, kept
    on disk (entries already there are not encoded again)."""
    import torch

    cache = TextCache(folder)
    texts = sorted({process_caption(i.caption, options(i).captions, epoch=1, rng=random.Random(0),
                                    subset_keep_tokens=options(i).keep_tokens) for i in items})
    texts = [t for t in texts if not cache.has(t)]
    progress("caching text encoder outputs", 0, len(texts))
    with torch.no_grad(), encode.autocast():
        for start in range(0, len(texts), TEXT_CHUNK):
            chunk = texts[start:start + TEXT_CHUNK]
            hidden, pooled = encode.encoders(chunk)
            for i, caption in enumerate(chunk):
                cache.put(caption, hidden[i], None if pooled is None else pooled[i])
            progress("caching text encoder outputs", start + len(chunk), len(texts))
    return cache
