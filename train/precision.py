"""Precision choices: the autocast dtype for mixed precision and dtypes for frozen weights and saved files."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


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
