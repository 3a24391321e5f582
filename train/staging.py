"""Device staging: which device each frozen model sits on as a run moves from loading to caching, training and
sampling.

Low-VRAM order (kohya): with caches on a GPU, every model loads to the CPU, the VAE and the text encoders visit
the GPU one at a time to fill the caches, and only then does the UNet move in, so the peak is max(caching,
training) rather than their sum. A model whose output is cached goes back to the CPU after a visit (samples
bring it back for a moment).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from train.models.loading import BaseModel


class DeviceStaging:
    """Moves a base model's parts between ``device`` and the CPU. ``latents_cached`` / ``text_cached``: the VAE /
    the text encoders are only needed to fill their cache (and for samples)."""

    def __init__(self, device: torch.device, *, latents_cached: bool, text_cached: bool) -> None:
        import torch

        self.device = device
        self.latents_cached = latents_cached
        self.text_cached = text_cached
        self.staged = device.type == "cuda" and (latents_cached or text_cached)
        self.home = torch.device("cpu") if self.staged else device
        """Where the models load (and wait until they are needed)."""

    def park(self, base: BaseModel) -> None:
        """Every model to its loading place (a base handed in already on the GPU goes back to the CPU)."""
        if self.staged:
            for module in modules_of(base):
                module.to(self.home)
            release_gpu_memory(self.device)

    @contextlib.contextmanager
    def visit(self, modules: Sequence[torch.nn.Module]) -> Iterator[None]:
        """``modules`` on the device for the duration (filling a cache), then back to the CPU."""
        for module in modules:
            module.to(self.device)
        try:
            yield
        finally:
            for module in modules:
                module.to("cpu")
            release_gpu_memory(self.device)

    def for_training(self, base: BaseModel) -> float | None:
        """Move in what the training step runs (the UNet; the VAE / text encoders unless cached). Returns the
        peak memory so far (loading and caching, MiB) and starts counting the training peak."""
        import torch

        setup_mb = memory_mb(self.device)
        if self.staged:
            unet, vae, *text_encoders = modules_of(base)
            unet.to(self.device)
            if not self.text_cached:
                for te in text_encoders:
                    te.to(self.device)
            if not self.latents_cached:
                vae.to(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return setup_mb

    @contextlib.contextmanager
    def for_sampling(self, base: BaseModel) -> Iterator[None]:
        """The VAE and the text encoders on the device while samples render; cached ones leave again after."""
        _, vae, *text_encoders = modules_of(base)
        visitors = ([vae] if self.latents_cached else []) + (text_encoders if self.text_cached else [])
        for module in (vae, *text_encoders):
            module.to(self.device)
        try:
            yield
        finally:
            for module in visitors:
                module.to("cpu")
            release_gpu_memory(self.device)


def modules_of(base: BaseModel) -> list[torch.nn.Module]:
    """UNet, VAE, text encoder(s), as plain torch modules (diffusers' wrapped ``.to`` defeats type checkers)."""
    return [base.unet, base.vae, *base.text_encoders]


def release_gpu_memory(device: torch.device) -> None:
    """Give the CUDA caching allocator's free blocks back after modules left the GPU (no-op elsewhere)."""
    import torch

    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def memory_mb(device: torch.device) -> float | None:
    """Peak CUDA memory allocated on ``device`` since the last reset, in MiB (None off CUDA)."""
    import torch

    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return None
