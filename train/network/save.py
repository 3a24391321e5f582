"""Write kohya-format LoRA ``.safetensors``: tensors in the chosen precision, ``ss_*`` metadata, and the
``sshs_model_hash`` / ``sshs_legacy_hash`` pair kohya precomputes for sd-webui-additional-networks.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from train.network.config import NetworkConfig

SAVE_DTYPES = ("fp32", "fp16", "bf16")
LORA_NETWORK_MODULE = "networks.lora"
DYLORA_NETWORK_MODULE = "networks.dylora"

_MODELSPEC_ARCH = {
    "sd1": "stable-diffusion-v1",
    "sd2": "stable-diffusion-v2-512",
    "sd2-v": "stable-diffusion-v2-768-v",
    "sdxl": "stable-diffusion-xl-v1-base",
}


def torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """'fp16' / 'bf16' / 'fp32' (or a torch.dtype) -> torch.dtype."""
    import torch

    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"save dtype {dtype} is not allowed: use fp32, fp16 or bf16")
        return dtype
    table = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
             "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if dtype not in table:
        raise ValueError(f"save dtype {dtype!r} is not allowed: use one of {', '.join(SAVE_DTYPES)}")
    return table[dtype]


def base_model_version(arch: str, v_prediction: bool = False) -> str:
    """kohya's ``ss_base_model_version``: sd_v1, sd_v2 (+ ``_v`` for v-prediction), sdxl_base_v1-0."""
    if arch == "sdxl":
        return "sdxl_base_v1-0"
    if arch not in ("sd1", "sd2"):
        raise ValueError(f"arch: unknown architecture {arch!r}; use sd1, sd2 or sdxl")
    return ("sd_v2" if arch == "sd2" else "sd_v1") + ("_v" if v_prediction else "")


def network_args(cfg: NetworkConfig) -> dict[str, str]:
    """``ss_network_args`` as kohya writes it: the ``--network_args`` key=value pairs, values as strings."""
    args: dict[str, str] = {}
    if cfg.is_lycoris:
        args["algo"] = {"dora": "lora"}.get(cfg.type, cfg.type)
        if cfg.type == "dora":
            args["dora_wd"] = "True"
        if cfg.type == "lokr" and cfg.lokr_factor != -1:
            args["factor"] = str(cfg.lokr_factor)
    conv_dim, conv_alpha = cfg.effective_conv_dim, cfg.effective_conv_alpha
    if conv_dim is not None:
        args["conv_dim"] = str(conv_dim)
        args["conv_alpha"] = _num(conv_alpha)
    for key in ("rank_dropout", "module_dropout"):
        value = getattr(cfg, key)
        if value is not None:
            args[key] = _num(value)
    for key in ("down_lr_weight", "mid_lr_weight", "up_lr_weight"):
        value = getattr(cfg, key)
        if value is not None:
            args[key] = value if isinstance(value, str) else ",".join(_num(v) for v in value)
    if cfg.has_block_lr and cfg.block_lr_zero_threshold:
        args["block_lr_zero_threshold"] = _num(cfg.block_lr_zero_threshold)
    for key in ("block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas"):
        value = getattr(cfg, key)
        if value is not None:
            args[key] = ",".join(_num(v) for v in value)
    for key in ("loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio"):
        value = getattr(cfg, key)
        if value is not None:
            args[key] = _num(value)
    if cfg.type == "dylora":
        args["unit"] = str(cfg.dylora_unit)
    return args


def _num(value: float | int | None) -> str:
    """Numbers as kohya writes them (``str(value)``: 1.0, 0.1, None)."""
    return str(value)


def network_metadata(cfg: NetworkConfig, arch: str, v_prediction: bool = False) -> dict[str, str]:
    """The network part of kohya's metadata (the training loop adds the training values)."""
    from train.network.lycoris import LYCORIS_NETWORK_MODULE

    md = {
        "ss_network_module": LYCORIS_NETWORK_MODULE if cfg.is_lycoris
        else DYLORA_NETWORK_MODULE if cfg.type == "dylora" else LORA_NETWORK_MODULE,
        "ss_network_dim": str(cfg.dim),
        "ss_network_alpha": _num(cfg.alpha),
        "ss_network_dropout": _num(cfg.dropout),
        "ss_v2": str(arch == "sd2"),
        "ss_base_model_version": base_model_version(arch, v_prediction),
        "ss_scale_weight_norms": _num(cfg.scale_weight_norms),
    }
    args = network_args(cfg)
    if args:
        md["ss_network_args"] = json.dumps(args)
    return md


def modelspec_metadata(arch: str, cfg: NetworkConfig, md: dict[str, str], v_prediction: bool = False) -> dict[str, str]:
    """The Stability AI model-spec keys (``modelspec.*``) as kohya's ``sai_model_spec`` writes them for a
    network (architecture always ``<arch>/lora``, LyCORIS included), unless the caller set them."""
    del cfg  # kohya writes the same spec for every network type
    key = "sd2-v" if arch == "sd2" and v_prediction else arch
    default_side = {"sdxl": 1024, "sd2-v": 768}.get(key, 512)
    spec = {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{_MODELSPEC_ARCH[key]}/lora",
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models" if arch == "sdxl"
        else "diffusers",
        "modelspec.title": md.get("ss_output_name") or "LoRA",
        "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime()),
        "modelspec.resolution": _resolution(md.get("ss_resolution"), default_side),
    }
    return {k: v for k, v in spec.items() if k not in md}


def _resolution(value: str | None, default_side: int) -> str:
    """'(512, 768)' / '[512, 768]' / '512' -> '512x768' (kohya's determine_resolution)."""
    numbers = [int(n) for n in re.findall(r"\d+", value or "")]
    if not numbers:
        numbers = [default_side]
    if len(numbers) == 1:
        numbers = numbers * 2
    return f"{numbers[0]}x{numbers[1]}"


def stringify_metadata(metadata: Mapping[str, object]) -> dict[str, str]:
    """safetensors metadata is str -> str: dicts/lists become JSON (ss_tag_frequency, ss_dataset_dirs...),
    everything else ``str(value)`` as kohya does (``True``, ``None``, ``0.0001``)."""
    out: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise TypeError(f"metadata key {key!r} is not a string")
        if isinstance(value, str):
            out[key] = value
        elif isinstance(value, dict | list | tuple) and not key.startswith("ss_resolution"):
            out[key] = json.dumps(value, ensure_ascii=False)
        else:
            out[key] = str(value)
    return out


def safetensors_hashes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[str, str]:
    """kohya's ``precalculate_safetensors_hashes``: serialise with only the ``ss_*`` metadata, then
    (sha256 of everything after the header, sha256 of the 64 KiB at offset 1 MiB truncated to 8 hex chars)."""
    from safetensors.torch import save

    data = save(tensors, {k: v for k, v in metadata.items() if k.startswith("ss_")})
    header_len = int.from_bytes(data[:8], "little")
    model_hash = hashlib.sha256(data[8 + header_len :]).hexdigest()
    buf = BytesIO(data)
    buf.seek(0x100000)
    legacy_hash = hashlib.sha256(buf.read(0x10000)).hexdigest()[:8]
    return model_hash, legacy_hash


def file_hashes(path: Path | str) -> tuple[str, str]:
    """(sshs_model_hash, sshs_legacy_hash) recomputed from a saved file, as A1111's additional-networks does."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        md = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    return safetensors_hashes(tensors, md)


def cast_state_dict(state_dict: dict[str, torch.Tensor], dtype: str | torch.dtype) -> dict[str, torch.Tensor]:
    """Detached contiguous CPU copies in ``dtype`` (integer tensors such as IA3's ``on_input`` keep theirs)."""
    target = torch_dtype(dtype)
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        t = value.detach().to("cpu")
        if t.is_floating_point():
            t = t.to(target)
        out[key] = t.contiguous().clone()
    return out


def save_kohya(
    path: Path | str, state_dict: dict[str, torch.Tensor], dtype: str | torch.dtype, metadata: Mapping[str, object] | None
) -> dict[str, str]:
    """Write ``state_dict`` as a kohya LoRA file (atomic: temp file + fsync + rename). Returns the metadata
    written, hashes included."""
    from safetensors.torch import save

    from curator.fsutil import atomic_write_bytes

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: kiln saves LoRAs as .safetensors only (kohya format)")
    tensors = cast_state_dict(state_dict, dtype)
    md = stringify_metadata(metadata or {})
    model_hash, legacy_hash = safetensors_hashes(tensors, md)
    md["sshs_model_hash"] = model_hash
    md["sshs_legacy_hash"] = legacy_hash
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save(tensors, md))
    return md
