"""Precision choices: the autocast dtype for mixed precision and dtypes for frozen weights and saved files."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def resolve_mixed_precision(choice: str, device: torch.device) -> str:
    """``auto``: bf16 on GPUs that support it, fp16 on other GPUs, no mixed precision on CPU."""
    import torch

    if choice != "auto":
        return choice
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def compute_dtype(mixed: str) -> torch.dtype:
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed, torch.float32)


def save_dtype(name: str) -> torch.dtype:
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16, "float": torch.float32}[name]
