"""Convert diffusers/transformers state dicts to the original single-file layout (LDM for SD1/SD2, SGM for SDXL).

The inverse of diffusers' single-file loader, for UNet, VAE and the CLIP / OpenCLIP text encoders. Used to
write tiny test checkpoints and to save full checkpoints in the layout A1111/ComfyUI/kohya read.

Key names are derived from the diffusers/transformers *state dict* keys after normalisation: transformers 5.x
`CLIPTextModel` drops the `text_model.` level, older versions keep it; both are accepted here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .arch import (
    SD1_TE_PREFIX,
    SD2_TE_PREFIX,
    SDXL_TE1_PREFIX,
    SDXL_TE2_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    Arch,
)

if TYPE_CHECKING:
    from torch import Tensor

    from .kinds import AutoencoderKL, TextEncoder, UNet2DConditionModel

_UNET_RESNET = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
)
_UNET_TOP = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "add_embedding.linear_1.": "label_emb.0.0.",
    "add_embedding.linear_2.": "label_emb.0.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}


def _resnet_rest(rest: str) -> str:
    head, _, tail = rest.partition(".")
    for new, old in _UNET_RESNET:
        if head == new:
            return f"{old}.{tail}"
    raise KeyError(rest)


def unet_key_to_ldm(key: str, layers_per_block: int) -> str:
    """One diffusers UNet2DConditionModel key -> its LDM/SGM name (without the `model.diffusion_model.` prefix)."""
    for new, old in _UNET_TOP.items():
        if key.startswith(new):
            return old + key[len(new) :]
    n = layers_per_block
    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.+)$", key)
    if m:
        b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "downsamplers":
            return f"input_blocks.{1 + b * (n + 1) + n}.0.{rest.replace('conv.', 'op.', 1)}"
        idx = 1 + b * (n + 1) + j
        return f"input_blocks.{idx}.0.{_resnet_rest(rest)}" if kind == "resnets" else f"input_blocks.{idx}.1.{rest}"
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)$", key)
    if m:
        kind, j, rest = m[1], int(m[2]), m[3]
        if kind == "resnets":
            return f"middle_block.{2 * j}.{_resnet_rest(rest)}"
        return f"middle_block.1.{rest}"
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.+)$", key)
    if m:
        b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "upsamplers":
            # placeholder slot; fixed up by unet_to_ldm (1 without attention, 2 with)
            return f"output_blocks.{b * (n + 1) + n}.@up.{rest}"
        idx = b * (n + 1) + j
        return f"output_blocks.{idx}.0.{_resnet_rest(rest)}" if kind == "resnets" else f"output_blocks.{idx}.1.{rest}"
    raise KeyError(f"unexpected UNet key {key!r}")


def unet_to_ldm(state_dict: Mapping[str, Tensor], layers_per_block: int,
                prefix: str = UNET_PREFIX) -> dict[str, Tensor]:
    """diffusers UNet state dict -> LDM/SGM single-file keys (with `prefix`)."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        out[unet_key_to_ldm(key, layers_per_block)] = value
    fixed: dict[str, Tensor] = {}
    for key, value in out.items():
        if ".@up." in key:
            block = key.split(".@up.")[0]
            slot = 2 if any(k.startswith(block + ".1.") for k in out) else 1
            key = key.replace(".@up.", f".{slot}.")
        fixed[prefix + key] = value
    return fixed


def _vae_resnet(rest: str) -> str:
    return rest.replace("conv_shortcut.", "nin_shortcut.", 1)


_VAE_ATTN = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out.",
             "query.": "q.", "key.": "k.", "value.": "v.", "proj_attn.": "proj_out."}


def vae_key_to_ldm(key: str, num_blocks: int) -> str:
    """One diffusers AutoencoderKL key -> its LDM name (without `first_stage_model.`)."""
    for part in ("encoder", "decoder"):
        for new, old in (("conv_norm_out.", "norm_out."), ("conv_in.", "conv_in."), ("conv_out.", "conv_out.")):
            if key.startswith(f"{part}.{new}"):
                return f"{part}.{old}{key[len(part) + 1 + len(new):]}"
    if key.startswith(("quant_conv.", "post_quant_conv.")):
        return key
    m = re.match(r"encoder\.down_blocks\.(\d+)\.(resnets\.(\d+)|downsamplers\.0)\.(.+)$", key)
    if m:
        i, rest = int(m[1]), m[4]
        if m[3] is None:
            return f"encoder.down.{i}.downsample.{rest}"
        return f"encoder.down.{i}.block.{m[3]}.{_vae_resnet(rest)}"
    m = re.match(r"decoder\.up_blocks\.(\d+)\.(resnets\.(\d+)|upsamplers\.0)\.(.+)$", key)
    if m:
        i, rest = num_blocks - 1 - int(m[1]), m[4]
        if m[3] is None:
            return f"decoder.up.{i}.upsample.{rest}"
        return f"decoder.up.{i}.block.{m[3]}.{_vae_resnet(rest)}"
    m = re.match(r"(encoder|decoder)\.mid_block\.(resnets\.(\d+)|attentions\.0)\.(.+)$", key)
    if m:
        part, rest = m[1], m[4]
        if m[3] is not None:
            return f"{part}.mid.block_{int(m[3]) + 1}.{_vae_resnet(rest)}"
        for new, old in _VAE_ATTN.items():
            if rest.startswith(new):
                return f"{part}.mid.attn_1.{old}{rest[len(new):]}"
    raise KeyError(f"unexpected VAE key {key!r}")


def vae_to_ldm(state_dict: Mapping[str, Tensor], num_blocks: int, prefix: str = VAE_PREFIX) -> dict[str, Tensor]:
    """diffusers AutoencoderKL state dict -> LDM keys; attention projections become 1x1 conv weights."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new = vae_key_to_ldm(key, num_blocks)
        if ".mid.attn_1." in new and new.endswith(".weight") and value.ndim == 2:
            value = value.reshape(*value.shape, 1, 1)
        out[prefix + new] = value
    return out


def normalise_clip_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """transformers CLIP text state dict with a `text_model.` level on every text-model key (any version)."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("text_projection.") or key.startswith("text_model."):
            out[key] = value
        else:
            out["text_model." + key] = value
    return out


def clip_to_ldm(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """HF CLIPTextModel -> `<prefix>text_model....` (SD1: cond_stage_model.transformer., SDXL embedders.0)."""
    sd = normalise_clip_keys(state_dict)
    return {prefix + k: v for k, v in sd.items() if not k.startswith("text_projection.")}


def openclip_key_to_ldm(key: str) -> tuple[str, str | None]:
    """One HF CLIP text key (with the `text_model.` level) -> (its OpenCLIP name without prefix, fused part).

    The fused part is 'q', 'k' or 'v' for the attention projections, which OpenCLIP stores as row blocks of one
    `attn.in_proj_weight` / `in_proj_bias` (q first); None otherwise. Raises KeyError for keys OpenCLIP has no
    place for (`position_ids`).
    """
    if key == "text_model.embeddings.token_embedding.weight":
        return "token_embedding.weight", None
    if key == "text_model.embeddings.position_embedding.weight":
        return "positional_embedding", None
    if key.startswith("text_model.final_layer_norm."):
        return "ln_final." + key.rsplit(".", 1)[1], None
    if key == "text_projection.weight":
        return "text_projection", None
    m = re.match(r"text_model\.encoder\.layers\.(\d+)\.(.+)$", key)
    if not m:
        raise KeyError(f"unexpected text encoder key {key!r}")
    layer, rest = int(m[1]), m[2]
    base = f"transformer.resblocks.{layer}."
    pm = re.match(r"self_attn\.([qkv])_proj\.(weight|bias)$", rest)
    if pm:
        return f"{base}attn.in_proj_{pm[2]}", pm[1]
    rest = (rest.replace("self_attn.out_proj.", "attn.out_proj.").replace("layer_norm1.", "ln_1.")
            .replace("layer_norm2.", "ln_2.").replace("mlp.fc1.", "mlp.c_fc.")
            .replace("mlp.fc2.", "mlp.c_proj."))
    return base + rest, None


def openclip_to_ldm(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """HF CLIPTextModel(WithProjection) -> OpenCLIP layout (fused in_proj qkv, resblocks, ln_final, ...)."""
    import torch

    sd = normalise_clip_keys(state_dict)
    out: dict[str, Tensor] = {}
    fused: dict[str, dict[str, Tensor]] = {}
    for key, value in sd.items():
        if key == "text_model.embeddings.position_ids":
            continue
        name, part = openclip_key_to_ldm(key)
        if part is not None:
            fused.setdefault(prefix + name, {})[part] = value
        elif name == "text_projection":
            out[prefix + name] = value.T.contiguous()
        else:
            out[prefix + name] = value
    for name, parts in fused.items():
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def state_dicts_to_single_file(
    arch: Arch,
    unet: Mapping[str, Tensor],
    vae: Mapping[str, Tensor],
    text_encoders: Sequence[Mapping[str, Tensor]],
    layers_per_block: int,
    vae_blocks: int,
) -> dict[str, Tensor]:
    """Full single-file state dict (original layout) from diffusers/transformers state dicts."""
    sd: dict[str, Tensor] = {}
    sd.update(unet_to_ldm(unet, layers_per_block))
    sd.update(vae_to_ldm(vae, vae_blocks))
    if arch is Arch.SD1:
        sd.update(clip_to_ldm(text_encoders[0], SD1_TE_PREFIX))
    elif arch is Arch.SD2:
        sd.update(openclip_to_ldm(text_encoders[0], SD2_TE_PREFIX))
    else:
        sd.update(clip_to_ldm(text_encoders[0], SDXL_TE1_PREFIX))
        sd.update(openclip_to_ldm(text_encoders[1], SDXL_TE2_PREFIX))
    return {k: v.contiguous() for k, v in sd.items()}


def pipeline_to_single_file(
    arch: Arch,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    text_encoders: list[TextEncoder],
) -> dict[str, Tensor]:
    """Full single-file state dict (original layout) from loaded diffusers/transformers modules."""
    return state_dicts_to_single_file(arch, unet.state_dict(), vae.state_dict(),
                                      [te.state_dict() for te in text_encoders],
                                      int(unet.config["layers_per_block"]), len(vae.config["block_out_channels"]))
