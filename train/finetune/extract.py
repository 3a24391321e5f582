"""``output.extract_dim``: when a full fine-tune ends, a LoRA is extracted from base -> the final checkpoint with
`kiln lora extract`'s code (train.lora.extract), so fine-tune -> extract -> resize is one run and one command."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from train.config import TrainConfig


def extracted_file(name: str, dim: int) -> str:
    """``<name>-lora<dim>.safetensors`` beside the checkpoint."""
    return f"{name}-lora{dim}.safetensors"


def extract_lora(cfg: TrainConfig, tuned: Path, *, device: torch.device, say: Callable[[str], None]) -> Path:
    """Extract ``output.extract_dim`` (and ``extract_conv_dim``) from ``model.path`` -> ``tuned``; the text
    encoders too when they were trained (one that did not change is left out, as the command does). Writes
    next to ``tuned``, replacing an earlier extraction of this run; ``say`` gets the extraction's notes."""
    from train.lora.extract import extract
    from train.lora.options import ExtractOptions

    o = cfg.output
    assert o.extract_dim is not None, "called only when output.extract_dim is set"
    out = tuned.with_name(extracted_file(o.name, o.extract_dim))
    opts = ExtractOptions(
        base=cfg.model.path, tuned=tuned, out=out, dim=o.extract_dim, conv_dim=o.extract_conv_dim,
        clamp_quantile=o.extract_clamp_quantile, min_diff=o.extract_min_diff, text_encoders=cfg.trains_text_encoder,
        dtype="fp32" if o.save_precision == "float" else o.save_precision, config_dir=cfg.model.config_dir,
        allow_pickle=cfg.model.allow_pickle, force=True, device=str(device),
    )
    extract(opts, progress=False, say=say)
    return out
