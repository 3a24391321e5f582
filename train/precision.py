"""Precision choices: the autocast dtype for mixed precision and dtypes for frozen weights and saved files."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from train.config import TrainSection
    from train.models.loading import BaseModel


def native_bf16(capability: tuple[int, int] | None) -> bool:
    """bf16 in hardware: NVIDIA Ampere (compute capability 8.0) and newer. Older GPUs emulate it (torch's
    ``is_bf16_supported()`` says yes there too), many times slower than fp16."""
    return capability is not None and capability >= (8, 0)


def resolve_mixed_precision(choice: str, device: torch.device) -> str:
    """``auto``: bf16 on GPUs that have it natively, fp16 on other GPUs, no mixed precision on CPU."""
    import torch

    if choice != "auto":
        return choice
    if device.type == "cuda":
        return "bf16" if native_bf16(torch.cuda.get_device_capability(device)) else "fp16"
    return "no"


def compute_dtype(mixed: str) -> torch.dtype:
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed, torch.float32)


def save_dtype(name: str) -> torch.dtype:
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16, "float": torch.float32}[name]


def network_dtype(t: TrainSection, mixed: str) -> torch.dtype:
    """The trained network's weights: float32, or the mixed-precision dtype itself with ``full_fp16`` /
    ``full_bf16`` (kohya: gradients and optimizer state in it too), which need that mixed precision."""
    import torch

    from train.errors import TrainingError

    for flag, wanted in (("full_fp16", "fp16"), ("full_bf16", "bf16")):
        if getattr(t, flag):
            if mixed != wanted:
                raise TrainingError(f"train.{flag}: true is not allowed: it needs mixed precision {wanted}, and this "
                                    f"run's is {mixed!r} (train.mixed_precision = {t.mixed_precision!r}); set "
                                    f"train.mixed_precision = \"{wanted}\"")
            return compute_dtype(wanted)
    return torch.float32


FP8 = "float8_e4m3fn"  # kohya's fp8 storage type


def store_in_fp8(module: torch.nn.Module) -> int:
    """Keep the weights of ``module``'s Linear and Conv2d layers in float8 (e4m3), each up-cast to its input's
    dtype (the compute dtype under autocast) only while the layer runs; norms and embeddings stay as they are.
    The up-cast copy is a new tensor, so gradients flow through it to the LoRA modules hooked in (which keep
    their own float32 weights). Returns the number of layers stored so."""
    import types

    import torch

    fp8 = getattr(torch, FP8)
    stored = 0
    for layer in module.modules():
        if type(layer) not in (torch.nn.Linear, torch.nn.Conv2d) or layer.weight.dtype == fp8:
            continue
        layer.weight.data = layer.weight.data.to(fp8)
        forward = _fp8_linear_forward if isinstance(layer, torch.nn.Linear) else _fp8_conv_forward
        layer.forward = types.MethodType(forward, layer)  # the instance's own forward
        stored += 1
    return stored


def _fp8_linear_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    import torch

    bias = None if self.bias is None else self.bias.to(x.dtype)
    return torch.nn.functional.linear(x, self.weight.to(x.dtype), bias)


def _fp8_conv_forward(self: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    bias = None if self.bias is None else self.bias.to(x.dtype)
    out: torch.Tensor = self._conv_forward(x, self.weight.to(x.dtype), bias)
    return out


def is_fp8(dtype: torch.dtype) -> bool:
    return str(dtype).removeprefix("torch.") == FP8


def fp8_store_unet_and_text_encoders(base: BaseModel, t: TrainSection) -> None:
    """kohya's ``fp8_base`` (the UNet and the text encoders) and ``fp8_base_unet`` (the UNet only)."""
    if not (t.fp8_base or t.fp8_base_unet):
        return
    store_in_fp8(base.unet)
    if t.fp8_base and not t.fp8_base_unet:
        for te in base.text_encoders:
            store_in_fp8(te)
