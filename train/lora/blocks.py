"""UNet blocks the way trainers name them (IN00-IN11, M00, OUT00-OUT11, BASE for the text encoders) and
per-block strength presets, as hako-mikan's LoRA Block Weight extension defines them.

A preset is a list of 12, 17, 20 or 26 weights; each length names its blocks (the extension's BLOCKID tables
below). Blocks a shorter list does not name get weight 0, as in the extension: use a 26-value list (or an
SDXL 20-value one) to weight the ResNet blocks a LoCon also trains. ``X`` in a preset stands for the value
given after a colon (``INX:0.5``; 1 when none is given). Modules outside every block (time embedding, the
final conv) keep weight 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BLOCK_IDS_26 = ("BASE", *(f"IN{i:02d}" for i in range(12)), "M00", *(f"OUT{i:02d}" for i in range(12)))
BLOCK_IDS_17 = ("BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00",
                "OUT03", "OUT04", "OUT05", "OUT06", "OUT07", "OUT08", "OUT09", "OUT10", "OUT11")
BLOCK_IDS_12 = ("BASE", "IN04", "IN05", "IN07", "IN08", "M00", "OUT00", "OUT01", "OUT02", "OUT03", "OUT04", "OUT05")
BLOCK_IDS_20 = ("BASE", *(f"IN{i:02d}" for i in range(9)), "M00", *(f"OUT{i:02d}" for i in range(9)))
BLOCK_IDS_BY_LENGTH = {26: BLOCK_IDS_26, 17: BLOCK_IDS_17, 12: BLOCK_IDS_12, 20: BLOCK_IDS_20}

# The extension's default presets (17 values: SD1/SD2 LoRA blocks), then the lora-training guide's INX / LINX /
# LOUTX (its OUTX is LOUTX's 17-block form: text encoder, IN and MID at X, OUT at 1).
PRESETS: dict[str, str] = {
    "NONE": "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0",
    "ALL": "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1",
    "INS": "1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0",
    "IND": "1,0,0,0,1,1,1,0,0,0,0,0,0,0,0,0,0",
    "INALL": "1,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0",
    "MIDD": "1,0,0,0,1,1,1,1,1,1,1,1,0,0,0,0,0",
    "OUTD": "1,0,0,0,0,0,0,0,1,1,1,1,0,0,0,0,0",
    "OUTS": "1,0,0,0,0,0,0,0,0,0,0,0,1,1,1,1,1",
    "OUTALL": "1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1",
    "ALL0.5": "0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5",
    "INX": "1,1,1,1,1,1,1,1,X,X,X,X,X,X,X,X,X",
    "OUTX": "X,X,X,X,X,X,X,X,1,1,1,1,1,1,1,1,1",
    "LINX": "1,1,1,1,1,1,1,1,1,1,1,1,1,X,X,X,X,X,X,X,X,X,X,X,X,X",
    "LOUTX": "X,X,X,X,X,X,X,X,X,X,X,X,X,1,1,1,1,1,1,1,1,1,1,1,1,1",
}

# Every SD UNet kiln knows has 2 layers per down block and 3 per up block (the LDM block numbering below).
_LAYERS_PER_BLOCK = 2
_SGM = re.compile(r"^lora_unet_(input_blocks|middle_block|output_blocks)_(\d+)_")
_DIFFUSERS = re.compile(r"^lora_unet_(down|up)_blocks_(\d+)_(attentions|resnets|downsamplers|upsamplers)_(\d+)_")


def block_id(module_name: str) -> str | None:
    """The block of a kohya module name (``lora_unet_...`` in diffusers or SGM naming, ``lora_te*_``):
    'BASE', 'IN00'..'IN11', 'M00', 'OUT00'..'OUT11', or None outside every block."""
    if module_name.startswith("lora_te"):
        return "BASE"
    m = _SGM.match(module_name)
    if m:
        if m.group(1) == "middle_block":
            return "M00"
        return ("IN" if m.group(1) == "input_blocks" else "OUT") + f"{int(m.group(2)):02d}"
    m = _DIFFUSERS.match(module_name)
    if m:
        n = _LAYERS_PER_BLOCK
        i, kind, j = int(m.group(2)), m.group(3), int(m.group(4))
        if m.group(1) == "down":
            index = (i + 1) * (n + 1) if kind == "downsamplers" else i * (n + 1) + j + 1
            return f"IN{index:02d}"
        index = i * (n + 1) + n if kind == "upsamplers" else i * (n + 1) + j
        return f"OUT{index:02d}"
    if module_name.startswith("lora_unet_mid_block_"):
        return "M00"
    if module_name.startswith("lora_unet_conv_in"):
        return "IN00"
    return None


def block_group(block: str | None) -> str:
    """'TE', 'IN', 'MID', 'OUT' or 'other' for a block id."""
    if block is None:
        return "other"
    if block == "BASE":
        return "TE"
    if block == "M00":
        return "MID"
    return "IN" if block.startswith("IN") else "OUT"


@dataclass(frozen=True)
class BlockWeights:
    """Per-block multipliers for a LoRA's modules."""

    label: str
    weights: dict[str, float]

    def weight(self, module_name: str) -> float:
        block = block_id(module_name)
        return 1.0 if block is None else self.weights.get(block, 0.0)

    @property
    def is_all_ones(self) -> bool:
        return all(self.weights.get(b, 0.0) == 1.0 for b in BLOCK_IDS_26)


def parse_weights(values: str, x: float, label: str) -> BlockWeights:
    """A comma-separated list of 12 / 17 / 20 / 26 weights (``X`` = ``x``) -> BlockWeights."""
    items = [v.strip() for v in values.split(",")]
    ids = BLOCK_IDS_BY_LENGTH.get(len(items))
    if ids is None:
        raise ValueError(f"--blocks {label}: {len(items)} weights given; give 17 or 26 (SD1/SD2 LoRA / all blocks) "
                         "or 12 or 20 (SDXL LoRA / all blocks)")
    weights: dict[str, float] = dict.fromkeys(BLOCK_IDS_26, 0.0)
    for block, item in zip(ids, items, strict=True):
        if item.upper() == "X":
            weights[block] = x
            continue
        try:
            weights[block] = float(item)
        except ValueError:
            raise ValueError(f"--blocks {label}: {item!r} is not a number (or X)") from None
    return BlockWeights(label, weights)


def parse_block_spec(spec: str) -> BlockWeights:
    """``NAME`` or ``NAME:x`` (a preset, X = x), or a list of weights (``1,0,0,...``)."""
    spec = spec.strip()
    name, _, x_text = spec.partition(":")
    if "," in name:
        return parse_weights(spec, 1.0, "custom")
    key = name.upper()
    if key not in PRESETS:
        raise ValueError(f"--blocks: unknown preset {name!r}; use one of {', '.join(PRESETS)} (optionally ':X', "
                         "e.g. INX:0.5) or 12/17/20/26 comma-separated weights")
    x = 1.0
    if x_text:
        try:
            x = float(x_text)
        except ValueError:
            raise ValueError(f"--blocks {spec}: the value after ':' must be a number") from None
    return parse_weights(PRESETS[key], x, spec if x_text else key)
