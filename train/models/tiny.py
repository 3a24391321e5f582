"""Tiny randomly initialised SD1-, SD2- and SDXL-like models for tests and benchmarks.

Same module classes and key layouts as the real models, only narrow (32-64 channels, 2-5 text layers). The
tokenizers are the real CLIP BPE tokenizers, so the text encoders keep the full 49408-token vocabulary.

`save_tiny(arch, out_dir)` writes each model three ways: a diffusers folder, a single-file checkpoint in the
original LDM/SGM layout, and a weight-free config folder (pass it as `ModelConfig.config_dir` when loading the
single file, since the shipped configs describe the full-size models).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .arch import Arch
from .assemble import assemble_config_dir, shipped_config_name

if TYPE_CHECKING:
    import torch
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

    from .kinds import AutoencoderKL, CLIPTokenizer, TextEncoder, UNet2DConditionModel

CLIP_VOCAB = 49408
TINY_ARCHS = (Arch.SD1, Arch.SD2, Arch.SDXL)


def _clip_config(hidden: int, layers: int, act: str, projection: int) -> dict[str, Any]:
    return {
        "vocab_size": CLIP_VOCAB, "hidden_size": hidden, "intermediate_size": hidden * 2 + 5,
        "num_hidden_layers": layers, "num_attention_heads": 4, "max_position_embeddings": 77,
        "hidden_act": act, "layer_norm_eps": 1e-5, "projection_dim": projection,
        "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
    }


def tiny_configs(arch: Arch) -> dict[str, dict[str, Any]]:
    """Config dicts for the tiny model's components (keys: unet, vae, text_encoder[, text_encoder_2])."""
    vae = {
        "in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": [32, 64],
        "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2,
        "layers_per_block": 1, "norm_num_groups": 32, "sample_size": 64,
        "scaling_factor": 0.13025 if arch is Arch.SDXL else 0.18215,
    }
    unet: dict[str, Any] = {
        "sample_size": 16, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
        "block_out_channels": [32, 64], "norm_num_groups": 32,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "cross_attention_dim": 32, "attention_head_dim": 8,
    }
    configs = {"unet": unet, "vae": vae}
    if arch is Arch.SD1:
        configs["text_encoder"] = _clip_config(32, 3, "quick_gelu", 32)
    elif arch is Arch.SD2:
        unet.update(attention_head_dim=[2, 4], use_linear_projection=True)
        configs["text_encoder"] = _clip_config(32, 3, "gelu", 32)
    else:
        # Text encoder widths differ (32 vs 48) as in the real model (768 vs 1280): diffusers' single-file
        # loader tells the two apart by width.
        unet.update(
            down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
            up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
            attention_head_dim=[2, 4], use_linear_projection=True, transformer_layers_per_block=[1, 2],
            cross_attention_dim=32 + 48, addition_embed_type="text_time", addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + 32,
        )
        configs["text_encoder"] = _clip_config(32, 2, "quick_gelu", 32)
        configs["text_encoder_2"] = _clip_config(48, 3, "gelu", 32)
    return configs


@dataclass
class TinyModel:
    arch: Arch
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoders: list[TextEncoder]
    tokenizers: list[CLIPTokenizer]


def build_tiny(arch: Arch | str, seed: int = 0) -> TinyModel:
    """Randomly initialised tiny model (deterministic for a seed)."""
    import torch
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    arch = Arch(arch)
    cfgs = tiny_configs(arch)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**cfgs["unet"])
    vae = AutoencoderKL(**cfgs["vae"])
    tes: list[TextEncoder] = [CLIPTextModel(CLIPTextConfig(**cfgs["text_encoder"]))]
    shipped = assemble_config_dir(shipped_config_name(arch.value, arch is Arch.SD2))
    toks = [CLIPTokenizer.from_pretrained(shipped / "tokenizer", local_files_only=True)]
    if arch is Arch.SDXL:
        tes.append(CLIPTextModelWithProjection(CLIPTextConfig(**cfgs["text_encoder_2"])))
        toks.append(CLIPTokenizer.from_pretrained(shipped / "tokenizer_2", local_files_only=True))
    # Default inits leave some tensors constant (norms = 1, biases = 0); randomise everything a little so that
    # tests comparing tensors after a save/load round trip can catch swapped or dropped keys.
    modules: list[torch.nn.Module] = [unet, vae, *tes]
    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.02)
    for module in modules:
        module.eval()
    return TinyModel(arch=arch, unet=unet, vae=vae, text_encoders=tes, tokenizers=toks)


@dataclass
class TinyPaths:
    diffusers_dir: Path
    single_file: Path
    config_dir: Path


def _scheduler(arch: Arch) -> SchedulerMixin:
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler
    from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler
    from diffusers.schedulers.scheduling_pndm import PNDMScheduler

    base = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "num_train_timesteps": 1000, "steps_offset": 1}
    scheduler: SchedulerMixin
    if arch is Arch.SDXL:
        scheduler = EulerDiscreteScheduler(**base, timestep_spacing="leading")
    elif arch is Arch.SD2:
        scheduler = DDIMScheduler(**base, clip_sample=False, set_alpha_to_one=False, prediction_type="v_prediction")
    else:
        scheduler = PNDMScheduler(**base, skip_prk_steps=True)
    return scheduler


def save_tiny(arch: Arch | str, out_dir: Path, seed: int = 0, model: TinyModel | None = None) -> TinyPaths:
    """Write a tiny model as `<out>/diffusers/`, `<out>/tiny-<arch>.safetensors` and `<out>/config/`."""
    from safetensors.torch import save_file

    from .convert import pipeline_to_single_file
    from .pipeline import text_to_image_pipeline

    arch = Arch(arch)
    m = model or build_tiny(arch, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    diffusers_dir = out_dir / "diffusers"
    pipe = text_to_image_pipeline(m.unet, m.vae, m.text_encoders, m.tokenizers, _scheduler(arch))
    pipe.save_pretrained(diffusers_dir, safe_serialization=True)

    config_dir = out_dir / "config"
    if config_dir.exists():
        shutil.rmtree(config_dir)
    shutil.copytree(diffusers_dir, config_dir, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))

    single = out_dir / f"tiny-{arch.value}.safetensors"
    sd = pipeline_to_single_file(arch, m.unet, m.vae, m.text_encoders)
    save_file(sd, str(single), metadata={"format": "pt", "kiln_tiny": json.dumps({"arch": arch.value})})
    return TinyPaths(diffusers_dir=diffusers_dir, single_file=single, config_dir=config_dir)
