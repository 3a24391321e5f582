"""Full-size SD1.5 / SD2 / SDXL modules from the shipped configs, on the meta device (no memory, no weights).

For key-count tests (LoRA module names) and benchmarks: `materialize(module, device)` turns a meta module into
a randomly initialised real one (`to_empty` + small random values).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .arch import Arch
from .assemble import CONFIGS_DIR, shipped_config_name

if TYPE_CHECKING:
    import torch

    from .kinds import AutoencoderKL, TextEncoder, UNet2DConditionModel

ModuleT = TypeVar("ModuleT", bound="torch.nn.Module")


def _config(name: str, sub: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((CONFIGS_DIR / name / sub / "config.json").read_text(encoding="utf-8"))
    return config


def _name(arch: Arch | str, v_prediction: bool | None) -> str:
    arch = Arch(arch)
    return shipped_config_name(arch.value, True if v_prediction is None else v_prediction)


def meta_unet(arch: Arch | str, v_prediction: bool | None = None) -> UNet2DConditionModel:
    """UNet2DConditionModel of the full-size architecture, on the meta device."""
    import torch
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

    config = _config(_name(arch, v_prediction), "unet")
    with torch.device("meta"):
        unet: UNet2DConditionModel = UNet2DConditionModel.from_config(config)
    return unet


def meta_text_encoders(arch: Arch | str) -> list[TextEncoder]:
    """Text encoder(s) of the full-size architecture (SDXL: CLIP-L, then OpenCLIP-bigG with projection)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    arch = Arch(arch)
    name = _name(arch, None)
    encoders: list[TextEncoder] = []
    with torch.device("meta"):
        encoders.append(CLIPTextModel(CLIPTextConfig(**_config(name, "text_encoder"))))
        if arch is Arch.SDXL:
            encoders.append(CLIPTextModelWithProjection(CLIPTextConfig(**_config(name, "text_encoder_2"))))
    return encoders


def meta_vae(arch: Arch | str) -> AutoencoderKL:
    import torch
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    with torch.device("meta"):
        vae: AutoencoderKL = AutoencoderKL.from_config(_config(_name(arch, None), "vae"))
    return vae


@dataclass
class MetaModel:
    arch: Arch
    unet: UNet2DConditionModel
    vae: AutoencoderKL | None
    text_encoders: list[TextEncoder]


def meta_model(arch: Arch | str, *, with_vae: bool = False) -> MetaModel:
    """UNet + text encoders (+ VAE) of a full-size architecture on the meta device."""
    arch = Arch(arch)
    return MetaModel(arch=arch, unet=meta_unet(arch), vae=meta_vae(arch) if with_vae else None,
                     text_encoders=meta_text_encoders(arch))


def meta_model_from_dir(folder: Path, arch: Arch | str) -> MetaModel:
    """UNet + text encoder(s) described by a diffusers config folder (a diffusers model folder or a weight-free
    config folder such as ``model.config_dir``), on the meta device: for models of any size."""
    import torch
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    arch = Arch(arch)

    def read(sub: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((folder / sub / "config.json").read_text(encoding="utf-8"))
        return data

    encoders: list[TextEncoder] = []
    with torch.device("meta"):
        unet: UNet2DConditionModel = UNet2DConditionModel.from_config(read("unet"))
        encoders.append(CLIPTextModel(CLIPTextConfig(**read("text_encoder"))))
        if arch is Arch.SDXL:
            encoders.append(CLIPTextModelWithProjection(CLIPTextConfig(**read("text_encoder_2"))))
    return MetaModel(arch=arch, unet=unet, vae=None, text_encoders=encoders)


def materialize(module: ModuleT, device: torch.device | str = "cpu", dtype: torch.dtype | None = None, seed: int = 0,
                std: float = 0.02) -> ModuleT:
    """Allocate a meta module's tensors on `device` and fill them with N(0, std) (norm weights with 1)."""
    import torch

    if dtype is not None:
        module = module.to(dtype)  # free on the meta device; avoids allocating float32 first
    module = module.to_empty(device=device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if tensor.is_floating_point():
                values = torch.randn(tensor.shape, generator=gen, dtype=torch.float32) * std
                if "norm" in name and name.endswith("weight"):
                    values += 1.0
                tensor.copy_(values.to(tensor.dtype))
            else:
                # integer buffers (position_ids): arange along the last dim
                tensor.copy_(torch.arange(tensor.shape[-1]).expand(tensor.shape).to(tensor.dtype))
    return module


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
