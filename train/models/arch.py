"""Tell which Stable Diffusion architecture a checkpoint holds, from its key names (and a few shapes).

Pure Python: no torch import. Works on single-file checkpoints in the original LDM (SD1/SD2) or SGM (SDXL)
layout and on diffusers folders (via `model_index.json` / `unet/config.json`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any


class Arch(StrEnum):
    """Model family. v-prediction is orthogonal (see `BaseModel.v_prediction`)."""

    SD1 = "sd1"
    SD2 = "sd2"
    SDXL = "sdxl"


class ModelLoadError(ValueError):
    """A base model (or VAE) cannot be loaded; the message says why and what to do."""


class ArchitectureError(ModelLoadError):
    """The checkpoint is not a base model kiln can train on (or not the one the user said)."""


UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_TE_PREFIX = "cond_stage_model.transformer."
SD2_TE_PREFIX = "cond_stage_model.model."
SDXL_TE1_PREFIX = "conditioner.embedders.0.transformer."
SDXL_TE2_PREFIX = "conditioner.embedders.1.model."
REFINER_TE_PREFIX = "conditioner.embedders.0.model."
CONV_IN_KEY = UNET_PREFIX + "input_blocks.0.0.weight"
V_PRED_KEYS = ("v_pred",)

_CONVERT_HINT = (
    "kiln trains LoRAs on SD1.x, SD2.x and SDXL base checkpoints (single .safetensors file in the original "
    "layout, or a diffusers folder)."
)


def _any_prefix(keys: Iterable[str], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in keys)


def _reject_non_base(keys: set[str], shapes: Mapping[str, tuple[int, ...]] | None, where: str) -> None:
    """Raise a clear ArchitectureError for files that are not an SD1/SD2/SDXL base checkpoint."""
    if not keys:
        raise ArchitectureError(f"{where}: the checkpoint holds no tensors.")
    if any(k.startswith(("lora_unet_", "lora_te", "lora_te1_", "lora_te2_")) for k in keys) or any(
        ".lora_down." in k or ".lora_A." in k or ".lora.down." in k or "lora_linear_layer" in k
        or k.endswith(".hada_w1_a") or ".lokr_w1" in k or k.endswith(".oft_blocks")
        for k in keys
    ):
        raise ArchitectureError(
            f"{where}: this is a LoRA/LyCORIS file, not a base model. Set model.path to the base checkpoint "
            "the LoRA was trained on (e.g. an SD1.5 or SDXL .safetensors)."
        )
    if any(k in keys for k in ("string_to_param", "emb_params", "clip_l", "clip_g")) and len(keys) <= 4:
        raise ArchitectureError(f"{where}: this is a textual-inversion embedding, not a base model.")
    if _any_prefix(keys, "text_encoders.") or any(".joint_blocks." in k or k.startswith("joint_blocks.")
                                                  for k in keys):
        raise ArchitectureError(f"{where}: this is a Stable Diffusion 3 checkpoint, which kiln does not train. "
                                + _CONVERT_HINT)
    if any("double_blocks." in k or "single_blocks." in k for k in keys):
        raise ArchitectureError(f"{where}: this is a Flux checkpoint, which kiln does not train. " + _CONVERT_HINT)
    if "edm_mean" in keys or "edm_vae.mean" in keys:
        raise ArchitectureError(f"{where}: this is a Playground v2.5 (EDM) checkpoint, which kiln does not train.")
    has_unet = _any_prefix(keys, UNET_PREFIX)
    if not has_unet:
        vae_starts = ("encoder.down.", "decoder.up.", "encoder.down_blocks.", "decoder.up_blocks.")
        if any(k.removeprefix(VAE_PREFIX).startswith(vae_starts) for k in keys):
            raise ArchitectureError(
                f"{where}: this is a VAE file, not a base model. Pass it as model.vae and set model.path to the "
                "base checkpoint."
            )
        if any(k.startswith(("down_blocks.", "mid_block.", "up_blocks.")) for k in keys):
            raise ArchitectureError(
                f"{where}: this is a diffusers-layout UNet weights file. Point model.path at the whole diffusers "
                "folder (the one with model_index.json), or at a single-file checkpoint."
            )
        if any(k.startswith("control_model.") for k in keys) or any("input_hint_block" in k for k in keys):
            raise ArchitectureError(f"{where}: this is a ControlNet, not a base model.")
        raise ArchitectureError(
            f"{where}: no UNet weights (keys starting with '{UNET_PREFIX}') found; this is not a Stable "
            "Diffusion base checkpoint. " + _CONVERT_HINT
        )
    if any("motion_modules." in k for k in keys):
        raise ArchitectureError(f"{where}: this is an AnimateDiff checkpoint, not an image base model.")
    if shapes is not None and CONV_IN_KEY in shapes:
        channels = shapes[CONV_IN_KEY][1] if len(shapes[CONV_IN_KEY]) > 1 else 4
        if channels == 9:
            raise ArchitectureError(
                f"{where}: this is an inpainting model (UNet takes 9 input channels). Train on the matching "
                "non-inpainting base model; the LoRA will also work on the inpainting model."
            )
        if channels != 4:
            raise ArchitectureError(
                f"{where}: the UNet takes {channels} input channels (instruct-pix2pix or a similar variant); "
                "kiln trains on 4-channel text-to-image base models."
            )


def detect_architecture(
    keys: Iterable[str],
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    *,
    where: str = "checkpoint",
) -> Arch:
    """Architecture of a single-file checkpoint from its key names.

    `shapes` (key -> shape, e.g. from a safetensors header) lets inpainting / pix2pix models be recognised
    and rejected. Raises `ArchitectureError` with a user-facing message for anything that is not an
    SD1.x / SD2.x / SDXL base checkpoint (LoRA, VAE, refiner, inpainting, SD3, Flux, ...).
    """
    keyset = set(keys)
    _reject_non_base(keyset, shapes, where)
    if _any_prefix(keyset, SDXL_TE2_PREFIX):
        return Arch.SDXL
    if _any_prefix(keyset, REFINER_TE_PREFIX):
        raise ArchitectureError(
            f"{where}: this is the SDXL refiner, which is not a base model. Train on SDXL base (or a fine-tune "
            "of it) instead."
        )
    if _any_prefix(keyset, "conditioner.embedders."):
        raise ArchitectureError(f"{where}: SGM-layout checkpoint without the SDXL OpenCLIP-bigG text encoder "
                                "('conditioner.embedders.1.model.'); not an SDXL base model.")
    if _any_prefix(keyset, SD2_TE_PREFIX):
        return Arch.SD2
    if _any_prefix(keyset, SD1_TE_PREFIX):
        return Arch.SD1
    # No text encoder in the file: fall back on the UNet's cross-attention width, when shapes are known.
    if shapes is not None:
        for key, shape in shapes.items():
            if key.startswith(UNET_PREFIX) and key.endswith("attn2.to_k.weight") and len(shape) == 2:
                if shape[1] == 768:
                    return Arch.SD1
                if shape[1] == 1024:
                    return Arch.SD2
                if shape[1] == 2048:
                    return Arch.SDXL
    raise ArchitectureError(
        f"{where}: the checkpoint has UNet weights but no text encoder kiln recognises "
        f"('{SD1_TE_PREFIX}', '{SD2_TE_PREFIX}' or '{SDXL_TE2_PREFIX}'). kiln needs a full checkpoint "
        "(UNet + text encoder(s) + VAE)."
    )


def has_v_prediction_marker(keys: Iterable[str]) -> bool:
    """Some v-prediction checkpoints (SD2 768-v conversions, NoobAI/SDXL v-pred) carry a `v_pred` key."""
    return any(k in V_PRED_KEYS for k in keys)


_PIPELINE_ARCH = {"StableDiffusionPipeline": Arch.SD1, "StableDiffusionXLPipeline": Arch.SDXL}
_REJECTED_PIPELINES = {
    "StableDiffusionXLImg2ImgPipeline": "the SDXL refiner",
    "StableDiffusionInpaintPipeline": "an inpainting model",
    "StableDiffusionXLInpaintPipeline": "an inpainting model",
    "StableDiffusion3Pipeline": "a Stable Diffusion 3 model",
    "FluxPipeline": "a Flux model",
    "StableDiffusionUpscalePipeline": "the x4 upscaler",
    "StableDiffusionInstructPix2PixPipeline": "an instruct-pix2pix model",
}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ArchitectureError(f"{path}: cannot read ({exc}).") from exc
    if not isinstance(data, dict):
        raise ArchitectureError(f"{path}: not a JSON object.")
    return data


def detect_diffusers_folder(folder: Path) -> tuple[Arch, bool | None]:
    """(architecture, v_prediction or None if the folder does not say) of a diffusers model folder."""
    where = str(folder)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise ArchitectureError(f"{where}: not a diffusers model folder (no model_index.json).")
    index = _read_json(index_path)
    cls = str(index.get("_class_name", ""))
    if cls in _REJECTED_PIPELINES:
        raise ArchitectureError(f"{where}: this is {_REJECTED_PIPELINES[cls]} ({cls}); not a base model kiln "
                                "trains on. " + _CONVERT_HINT)
    unet_cfg_path = folder / "unet" / "config.json"
    if not unet_cfg_path.is_file():
        raise ArchitectureError(f"{where}: no unet/config.json; kiln needs a full SD/SDXL diffusers folder.")
    unet_cfg = _read_json(unet_cfg_path)
    if int(unet_cfg.get("in_channels", 4)) != 4:
        raise ArchitectureError(
            f"{where}: the UNet takes {unet_cfg.get('in_channels')} input channels (inpainting or similar); kiln "
            "trains on 4-channel text-to-image base models."
        )
    if cls not in _PIPELINE_ARCH:
        raise ArchitectureError(f"{where}: unsupported pipeline class {cls!r}. " + _CONVERT_HINT)
    arch = _PIPELINE_ARCH[cls]
    if arch is Arch.SDXL:
        if "text_encoder" not in index or index.get("text_encoder") in (None, [None, None]):
            raise ArchitectureError(f"{where}: SDXL folder without the first text encoder (the refiner?).")
    else:
        # SD2's OpenCLIP-H text encoder: 1024-wide cross-attention and plain gelu (CLIP-L uses quick_gelu).
        te_cfg_path = folder / "text_encoder" / "config.json"
        te_act = _read_json(te_cfg_path).get("hidden_act") if te_cfg_path.is_file() else None
        cross = unet_cfg.get("cross_attention_dim")
        arch = Arch.SD2 if cross == 1024 or te_act == "gelu" else Arch.SD1
    sched_path = folder / "scheduler" / "scheduler_config.json"
    v_pred: bool | None = None
    if sched_path.is_file():
        # diffusers' default prediction_type is epsilon (SD1.5's scheduler config does not name it)
        v_pred = _read_json(sched_path).get("prediction_type", "epsilon") == "v_prediction"
    return arch, v_pred
