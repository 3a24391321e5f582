"""Which modules a network trains, and the names kohya sd-scripts gives them.

kohya's rule (``networks/lora.py``, ``LoRANetwork.create_modules``): inside every module whose class is a
target class, every ``Linear`` and ``Conv2d`` child is trained.

* LoRA ("LierLa"): UNet ``Transformer2DModel`` blocks (attention q/k/v/out, feed-forward, the 1x1 or linear
  ``proj_in``/``proj_out``); text encoders' ``CLIPAttention`` and ``CLIPMLP`` (q/k/v/out_proj, fc1/fc2).
* LoCon ("C3Lier"): additionally ``ResnetBlock2D`` (conv1, conv2, time_emb_proj, conv_shortcut),
  ``Downsample2D`` and ``Upsample2D`` convs. Linears and 1x1 convs use ``dim``/``alpha``; convs with a larger
  kernel use ``conv_dim``/``conv_alpha``.

Names: ``lora_unet_`` + module path with dots replaced by underscores. SD1/SD2 use the diffusers UNet path;
SDXL uses kohya's own SGM-style UNet tree (``input_blocks.4.1...``), derived here from the diffusers tree.
Text encoders always use the Hugging Face CLIP path ``text_model.encoder.layers.N...``, whatever the installed
transformers version calls it (5.x drops the ``text_model.`` level in ``CLIPTextModel``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from torch import nn

    from train.models.kinds import TextEncoder, UNet2DConditionModel

ARCHS = ("sd1", "sd2", "sdxl")

UNET_TARGET_CLASSES = ("Transformer2DModel",)
UNET_CONV_TARGET_CLASSES = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TEXT_ENCODER_TARGET_CLASSES = ("CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP")

PREFIX_UNET = "lora_unet"
PREFIX_TE = "lora_te"
PREFIX_TE1 = "lora_te1"
PREFIX_TE2 = "lora_te2"

# kohya's block counts for block-wise learning rates (networks/lora.py, LoRANetwork).
NUM_BLOCKS_SD = 12
NUM_MID_BLOCKS_SD = 1
NUM_BLOCKS_SDXL = 9
NUM_MID_BLOCKS_SDXL = 3

Kind = Literal["linear", "conv1x1", "conv"]
Part = Literal["unet", "te", "te1", "te2"]
_TE_PARTS: dict[str, Part] = {PREFIX_TE: "te", PREFIX_TE1: "te1", PREFIX_TE2: "te2"}

_RESNET_SGM = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_TOP_SGM = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_TE_LAYER_RE = re.compile(r"(?:^|\.)(encoder\.layers\.\d+\..+)$")
_RE_UPDOWN = re.compile(r"(up|down)_blocks_(\d+)_(resnets|upsamplers|downsamplers|attentions)_(\d+)_")


@dataclass
class Target:
    """One trained module: its kohya name, where it sits in the live model, and its shape."""

    name: str  # kohya name, e.g. lora_unet_down_blocks_0_attentions_0_proj_in
    path: str  # path in the live model (named_modules)
    module: nn.Module  # a Linear (or Linear-like) or a Conv2d
    kind: Kind
    part: Part
    block_index: int  # kohya block index (for block-wise lr); -1 for text encoders

    @property
    def is_conv3x3(self) -> bool:
        """A conv whose kernel is larger than 1x1 (trained with conv_dim / conv_alpha)."""
        return self.kind == "conv"


def check_arch(arch: str) -> str:
    if arch not in ARCHS:
        raise ValueError(f"arch: unknown architecture {arch!r}; use one of {', '.join(ARCHS)}")
    return arch


def _kind(module: nn.Module) -> Kind | None:
    """linear / conv1x1 / conv (larger kernel), or None. Accepts the subclasses older diffusers used
    (``LoRACompatibleLinear``, ``LoRACompatibleConv``) and quantised linears that keep in/out_features."""
    cls = module.__class__.__name__
    if cls.endswith("Linear") and hasattr(module, "in_features") and hasattr(module, "out_features"):
        return "linear"
    if cls in ("Conv2d", "LoRACompatibleConv"):
        return "conv1x1" if tuple(getattr(module, "kernel_size", ())) == (1, 1) else "conv"
    return None


def _children_of_targets(root: nn.Module, classes: tuple[str, ...]) -> list[tuple[str, nn.Module]]:
    """(path, module) of every Linear/Conv2d inside a module whose class name is in ``classes``, model order."""
    found: dict[str, nn.Module] = {}
    for name, module in root.named_modules():
        if module.__class__.__name__ not in classes:
            continue
        for child_name, child in module.named_modules():
            if child_name and _kind(child) is not None:
                path = f"{name}.{child_name}" if name else child_name
                found.setdefault(path, child)
    return list(found.items())


# ---------------------------------------------------------------- UNet names
def _layers_per_block(unet: nn.Module) -> int:
    lpb = getattr(getattr(unet, "config", None), "layers_per_block", 2)
    if isinstance(lpb, list | tuple):
        if len(set(lpb)) != 1:
            raise ValueError(f"unet.layers_per_block={lpb}: per-block layer counts have no SGM naming")
        lpb = lpb[0]
    return int(lpb)


def diffusers_to_sgm(path: str, layers_per_block: int, up_blocks_with_attention: set[int]) -> str:
    """Map a diffusers UNet module path to kohya's SGM-style (SDXL) path.

    ``down_blocks.i.resnets.j`` -> ``input_blocks.(i*(L+1)+j+1).0`` (attentions -> ``.1``), downsamplers ->
    ``input_blocks.((i+1)*(L+1)).0.op``; ``mid_block`` -> ``middle_block.0/1/2``; ``up_blocks.i.resnets.j`` ->
    ``output_blocks.(i*(L+1)+j).0`` (attentions -> ``.1``), upsamplers -> ``output_blocks.(i*(L+1)+L).2``
    (``.1`` when the up block has no attention); resnet children conv1 -> in_layers.2, conv2 -> out_layers.3,
    time_emb_proj -> emb_layers.1, conv_shortcut -> skip_connection. L is layers_per_block (2 for SDXL).
    """
    n = layers_per_block
    parts = path.split(".")
    head = parts[0]

    def resnet_tail(rest: list[str]) -> list[str]:
        if rest and rest[0] in _RESNET_SGM:
            return _RESNET_SGM[rest[0]].split(".") + rest[1:]
        return rest

    if head == "down_blocks":
        i, kind = int(parts[1]), parts[2]
        if kind == "downsamplers":
            rest = parts[4:]
            if rest and rest[0] == "conv":
                rest = ["op"] + rest[1:]
            return ".".join(["input_blocks", str((i + 1) * (n + 1)), "0", *rest])
        j = int(parts[3])
        idx = i * (n + 1) + j + 1
        if kind == "resnets":
            return ".".join(["input_blocks", str(idx), "0", *resnet_tail(parts[4:])])
        return ".".join(["input_blocks", str(idx), "1", *parts[4:]])
    if head == "mid_block":
        kind, j = parts[1], int(parts[2])
        if kind == "attentions":
            return ".".join(["middle_block", "1", *parts[3:]])
        return ".".join(["middle_block", str(2 * j), *resnet_tail(parts[3:])])
    if head == "up_blocks":
        i, kind = int(parts[1]), parts[2]
        if kind == "upsamplers":
            slot = "2" if i in up_blocks_with_attention else "1"
            return ".".join(["output_blocks", str(i * (n + 1) + n), slot, *parts[4:]])
        j = int(parts[3])
        idx = i * (n + 1) + j
        if kind == "resnets":
            return ".".join(["output_blocks", str(idx), "0", *resnet_tail(parts[4:])])
        return ".".join(["output_blocks", str(idx), "1", *parts[4:]])
    for hf, sgm in _TOP_SGM.items():
        if path == hf or path.startswith(hf + "."):
            return sgm + path[len(hf) :]
    raise ValueError(f"no SGM name for UNet module {path!r}")


def _up_blocks_with_attention(unet: nn.Module) -> set[int]:
    blocks = getattr(unet, "up_blocks", [])
    return {i for i, block in enumerate(blocks) if getattr(block, "attentions", None)}


def unet_lora_name(arch: str, path: str, unet: nn.Module) -> str:
    """kohya's LoRA name for a UNet module path (diffusers tree)."""
    if arch == "sdxl":
        path = diffusers_to_sgm(path, _layers_per_block(unet), _up_blocks_with_attention(unet))
    return f"{PREFIX_UNET}_{path.replace('.', '_')}"


def block_index(lora_name: str, is_sdxl: bool) -> int:
    """kohya's ``get_block_index``: which UNet block a LoRA name belongs to (-1 for none)."""
    if not is_sdxl:
        m = _RE_UPDOWN.search(lora_name)
        if m:
            direction, i, kind, j = m.group(1), int(m.group(2)), m.group(3), int(m.group(4))
            idx = 3 * i + 2 if kind in ("upsamplers", "downsamplers") else 3 * i + j
            return 1 + idx if direction == "down" else NUM_BLOCKS_SD + 1 + idx
        if "mid_block_" in lora_name:
            return NUM_BLOCKS_SD
        return -1
    if not lora_name.startswith(PREFIX_UNET + "_"):
        return -1
    name = lora_name[len(PREFIX_UNET) + 1 :]
    if name.startswith(("time_embed_", "label_emb_")):
        return 0
    if name.startswith("input_blocks_"):
        return 1 + int(name.split("_")[2])
    if name.startswith("middle_block_"):
        return 10 + int(name.split("_")[2])
    if name.startswith("output_blocks_"):
        return 13 + int(name.split("_")[2])
    if name.startswith("out_"):
        return 22
    return -1


# ---------------------------------------------------------------- text encoder names
def text_encoder_path(path: str) -> str:
    """Normalise a CLIP module path to Hugging Face's ``text_model.encoder.layers.N...`` form.

    transformers 4.x ``CLIPTextModel`` has ``text_model.encoder.layers.0.self_attn.q_proj``; 5.x flattens it to
    ``encoder.layers.0.self_attn.q_proj``; ``CLIPTextModelWithProjection`` keeps ``text_model.`` in both.
    """
    m = _TE_LAYER_RE.search(path)
    if not m:
        raise ValueError(f"text encoder module {path!r} is not inside encoder.layers.N")
    return "text_model." + m.group(1)


def text_encoder_prefixes(arch: str, count: int) -> list[str]:
    if arch == "sdxl":
        if count != 2:
            raise ValueError(f"text_encoders: SDXL has 2 text encoders, got {count}")
        return [PREFIX_TE1, PREFIX_TE2]
    if count != 1:
        raise ValueError(f"text_encoders: {arch} has 1 text encoder, got {count}")
    return [PREFIX_TE]


# ---------------------------------------------------------------- discovery
def unet_targets(arch: str, unet: nn.Module, include_conv: bool) -> list[Target]:
    """The UNet modules kohya trains: Transformer2DModel children, plus ResNet/up/down convs for LoCon."""
    check_arch(arch)
    classes = UNET_TARGET_CLASSES + (UNET_CONV_TARGET_CLASSES if include_conv else ())
    targets = []
    for path, module in _children_of_targets(unet, classes):
        name = unet_lora_name(arch, path, unet)
        kind = _kind(module)
        assert kind is not None
        targets.append(Target(name, path, module, kind, "unet", block_index(name, arch == "sdxl")))
    return targets


def text_encoder_targets(arch: str, text_encoders: list[TextEncoder]) -> list[Target]:
    """The text-encoder modules kohya trains: every Linear of CLIPAttention and CLIPMLP."""
    check_arch(arch)
    targets = []
    for prefix, te in zip(text_encoder_prefixes(arch, len(text_encoders)), text_encoders, strict=True):
        part = _TE_PARTS[prefix]
        for path, module in _children_of_targets(te, TEXT_ENCODER_TARGET_CLASSES):
            name = f"{prefix}_{text_encoder_path(path).replace('.', '_')}"
            kind = _kind(module)
            assert kind is not None
            targets.append(Target(name, path, module, kind, part, -1))
    return targets


def find_targets(
    arch: str, unet: UNet2DConditionModel | None, text_encoders: list[TextEncoder] | None, include_conv: bool
) -> list[Target]:
    """All targets (text encoders first, like kohya), checked for duplicate names."""
    targets = []
    if text_encoders:
        targets += text_encoder_targets(arch, text_encoders)
    if unet is not None:
        targets += unet_targets(arch, unet, include_conv)
    seen: set[str] = set()
    for t in targets:
        if t.name in seen:
            raise ValueError(f"duplicate LoRA module name {t.name} (two modules map to one kohya name)")
        seen.add(t.name)
    return targets
