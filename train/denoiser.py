"""The model a LoRA run trains, as one module: the network (its only parameters) and a forward that conditions
on the captions and predicts the noise (or v) with the frozen UNet, the network hooked into it.

The network's modules run inside the frozen models' forward (hooks), so distributed training must go through
this module's forward: that is what lets DDP (``accelerator.prepare``) see and average the network's gradients.
The frozen models are held outside the module tree, so DDP neither broadcasts nor watches their weights.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Literal

import torch

from train.data.dataset import mix_seed
from train.data.loader import Batch
from train.precision import is_fp8

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from train.config import TrainSection
    from train.data.cache import TextCache
    from train.finetune.model import FullModel
    from train.models.kinds import AutoencoderKL
    from train.models.loading import BaseModel
    from train.network.network import Network


class TextConditioning:
    """Captions to conditioning ``(hidden states, pooled or None)``: from the text-encoder cache when there is
    one, else from the text encoders (with gradients when they are being trained)."""

    def __init__(self, base: BaseModel, *, device: torch.device, dtype: torch.dtype, max_token_length: int,
                 clip_skip: int, trains_text_encoder: bool, cache: TextCache | None = None) -> None:
        self.base = base
        self.device = device
        self.max_token_length = max_token_length
        self.clip_skip = clip_skip
        self.dtype = dtype
        self.trains_text_encoder = trains_text_encoder
        self.cache = cache

    def autocast(self) -> torch.autocast:
        """Mixed precision for the forward passes (off when the compute dtype is float32)."""
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    def encoders(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the text encoders (kohya's 75-token chunks; SDXL: both encoders and the pooled output)."""
        from train.data.tokens import encode_sd, encode_sdxl, tokenize

        base, length = self.base, self.max_token_length
        if base.is_sdxl:
            ids1 = tokenize(base.tokenizers[0], captions, length)
            ids2 = tokenize(base.tokenizers[1], captions, length)
            return encode_sdxl(base.text_encoders, base.tokenizers, ids1, ids2, length)
        ids = tokenize(base.tokenizers[0], captions, length)
        return encode_sd(base.text_encoders[0], ids, length, self.clip_skip), None

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.cache is not None:
            entries = [self.cache.get(c) for c in captions]
            hidden = torch.stack([e[0] for e in entries]).to(self.device)
            pooled = [e[1] for e in entries if e[1] is not None]
            return hidden, torch.stack(pooled).to(self.device) if pooled else None
        if self.trains_text_encoder:
            return self.encoders(captions)
        with torch.no_grad():
            return self.encoders(captions)


class Denoiser(torch.nn.Module):
    """``forward(noisy latents, timesteps, batch)`` -> the UNet's prediction, with the network applied."""

    def __init__(self, network: Network | FullModel, base: BaseModel, conditioning: TextConditioning,
                 sdpa_backend: SdpaBackend = "auto") -> None:
        super().__init__()
        self.network = network  # the only registered child: the trained parameters (a full fine-tune: the UNet)
        self.base = base  # a dataclass, not a module: not part of the module tree
        self.conditioning = conditioning
        self.sdpa_backend = sdpa_backend

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, batch: Batch) -> torch.Tensor:
        unet = self.base.unet
        with self.conditioning.autocast(), attention_kernels(self.sdpa_backend):
            hidden, pooled = self.conditioning(batch["captions"])
            extra = None
            if self.base.is_sdxl:
                assert pooled is not None, "SDXL conditioning has a pooled output"
                time_ids = torch.cat([batch["original_sizes"], batch["crop_top_lefts"], batch["target_sizes"]],
                                     dim=1).to(noisy.device, dtype=hidden.dtype)
                extra = {"text_embeds": pooled.to(hidden.dtype), "time_ids": time_ids}
            weights = unet.dtype
            if is_fp8(weights):  # fp8_base: stored in float8, computed in the autocast dtype
                weights = self.conditioning.dtype
            prediction: torch.Tensor = unet(noisy.to(weights), timesteps, hidden.to(weights),
                                            added_cond_kwargs=extra).sample
        return prediction


SdpaBackend = Literal["auto", "flash", "efficient", "cudnn", "math"]
_SDPA_BACKENDS = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION",
                  "math": "MATH"}


def attention_kernels(backend: SdpaBackend) -> contextlib.AbstractContextManager[None]:
    """Scaled-dot-product attention restricted to one kernel (``auto``: PyTorch's own choice). Backward runs the
    kernel the forward chose."""
    if backend == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, _SDPA_BACKENDS[backend])])


def batch_latents(batch: Batch, vae: AutoencoderKL, device: torch.device) -> torch.Tensor:
    """The batch's latents: cached ones, or the VAE's encoding of its pixels (one draw from the latent
    distribution per sample, seeded by the sample: the same however batches are split). The copies do not
    block (they overlap with queued GPU work when the batch is in pinned memory: ``dataset.pin_memory``)."""
    if "latents" in batch:
        return batch["latents"].to(device, dtype=torch.float32, non_blocking=True)
    with torch.no_grad():
        pixels = batch["pixels"].to(device, dtype=torch.float32, non_blocking=True)
        dist = vae.encode(pixels).latent_dist
        eps = torch.stack([torch.randn(dist.mean.shape[1:], generator=torch.Generator().manual_seed(
            mix_seed(s, 1))) for s in batch["seeds"]]).to(device)
        latents: torch.Tensor = (dist.mean + dist.std * eps) * float(vae.config["scaling_factor"])
        return latents


def prepare_for_training(base: BaseModel, t: TrainSection, *, trains_text_encoder: bool) -> None:
    """The frozen models as training runs them: the VAE in fp32 (fp16 VAEs overflow to NaN), the attention
    implementation asked for, and activation checkpointing when asked (it works only in train mode; SD UNets
    and CLIP have no active dropout)."""
    # nn.Module's own .to: diffusers' ModelMixin.to logs a warning about keep-in-fp32 modules on every cast,
    # and the whole VAE is cast to fp32 here on purpose
    torch.nn.Module.to(base.vae, torch.float32)
    if t.channels_last:
        unet: torch.nn.Module = base.unet
        unet.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack this overload
    if t.attention == "eager":
        from diffusers.models.attention_processor import AttnProcessor

        base.unet.set_attn_processor(AttnProcessor())
    elif t.attention == "xformers":  # the pre-flight checked that xformers is installed and CUDA is there
        base.unet.enable_xformers_memory_efficient_attention()
    if t.gradient_checkpointing:
        base.unet.enable_gradient_checkpointing()
        base.unet.train()
        if trains_text_encoder:
            for te in base.text_encoders:
                enable_checkpointing(te)
                te.train()


def compile_unet(base: BaseModel, mode: str) -> None:
    """``torch.compile`` the UNet in place (``nn.Module.compile``: the module stays the one the network hooks
    and the staging moves) with ``mode``; ``off`` leaves it alone. Call it after the network is applied so its
    hooks are traced with the UNet. Nothing compiles until the first step; each new bucket size compiles again."""
    if mode == "off":
        return
    unet: torch.nn.Module = base.unet
    unet.compile(mode=mode)


def enable_checkpointing(text_encoder: PreTrainedModel) -> None:
    """Activation checkpointing for a transformers model (non-reentrant: the inputs need no grad)."""
    kwargs = {"use_reentrant": False}
    if hasattr(text_encoder, "activation_checkpointing_enable"):  # transformers >= 5
        text_encoder.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        text_encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
