"""Shared pieces of the network tests (no tests here): kiln's meta-device and tiny models, a helper that makes
a fresh network non-trivial, and diffusers pipelines around tiny models."""

from __future__ import annotations

from typing import Any

import torch


def meta_models(arch: str) -> tuple[Any, list[Any]]:
    """Full-size (unet, [text encoders]) on the meta device, from kiln's shipped configs."""
    from train.models.meta import meta_model

    m = meta_model(arch)
    return m.unet, m.text_encoders


def tiny(arch: str, seed: int = 0):
    """kiln's tiny random model for ``arch`` (train.models.tiny.build_tiny)."""
    from train.models.tiny import build_tiny

    return build_tiny(arch, seed=seed)


def randomize(network, seed: int = 1, scale: float = 0.05) -> None:
    """Give every adapter parameter a random value (a fresh LoRA's up weights are zero, so it does nothing)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in network.named_parameters():
            if name.endswith("dora_scale"):
                continue
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def unet_inputs(model, seed: int = 0) -> dict[str, Any]:
    """Deterministic UNet inputs for a tiny model (token ids, latents, SDXL added conditioning)."""
    g = torch.Generator().manual_seed(seed)
    sample = model.unet.config.sample_size
    return {
        "ids": torch.randint(0, 1000, (1, 77), generator=g),
        "x": torch.randn(1, 4, sample, sample, generator=g),
        "t": torch.tensor([10]),
    }


@torch.no_grad()
def unet_output(model, inputs: dict[str, Any]) -> torch.Tensor:
    """Text encoders -> UNet, the way the pipelines condition it (SDXL: penultimate layers + pooled)."""
    tes = model.text_encoders
    ids = inputs["ids"]
    if len(tes) == 1:
        enc = tes[0](ids)[0]
        return model.unet(inputs["x"], inputs["t"], enc).sample
    h1 = tes[0](ids, output_hidden_states=True).hidden_states[-2]
    o2 = tes[1](ids, output_hidden_states=True)
    enc = torch.cat([h1, o2.hidden_states[-2]], dim=-1)
    side = float(inputs["x"].shape[-1] * 8)
    cond = {"text_embeds": o2.text_embeds, "time_ids": torch.tensor([[side, side, 0, 0, side, side]])}
    return model.unet(inputs["x"], inputs["t"], enc, added_cond_kwargs=cond).sample


def pipeline(model):
    """A diffusers pipeline holding the tiny model's own modules (so LoRA injection changes them)."""
    from diffusers import (
        EulerDiscreteScheduler,
        PNDMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )

    base = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}
    if len(model.text_encoders) == 2:
        return StableDiffusionXLPipeline(
            vae=model.vae, text_encoder=model.text_encoders[0], text_encoder_2=model.text_encoders[1],
            tokenizer=model.tokenizers[0], tokenizer_2=model.tokenizers[1], unet=model.unet,
            scheduler=EulerDiscreteScheduler(**base, steps_offset=1),
        )
    return StableDiffusionPipeline(
        vae=model.vae, text_encoder=model.text_encoders[0], tokenizer=model.tokenizers[0], unet=model.unet,
        scheduler=PNDMScheduler(**base, skip_prk_steps=True, steps_offset=1), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
