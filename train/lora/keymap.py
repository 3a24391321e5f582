"""Where each LoRA module lands in a base model: kohya module name -> the layer (path, kind, weight shape).

Built from the model's own module tree (a meta-device model from the checkpoint's config, or the loaded
model), with kohya's names from ``train.network.targets`` (the one home of that naming): SD1/SD2 UNet names
follow the diffusers tree, SDXL names kohya's SGM tree, text encoders ``text_model.encoder.layers.N``.
Names in the other UNet convention (diffusers-style SDXL names some trainers write, SGM-style SD1 names) are
accepted as aliases, as A1111/Forge and ComfyUI accept them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from train.models.arch import Arch
from train.network import targets as tg
from train.network.targets import _kind as module_kind

COMPONENT_OF_PART = {"unet": "unet", "te": "text_encoder", "te1": "text_encoder", "te2": "text_encoder_2"}


@dataclass(frozen=True)
class Slot:
    """One layer a LoRA module can adapt."""

    name: str  # kohya module name
    part: str  # 'unet' | 'te' | 'te1' | 'te2'
    path: str  # module path inside its model (diffusers UNet / transformers CLIP)
    kind: str  # 'linear' | 'conv1x1' | 'conv'
    shape: tuple[int, ...]  # weight shape
    has_bias: bool

    @property
    def component(self) -> str:
        """The diffusers subfolder holding the layer: unet, text_encoder or text_encoder_2."""
        return COMPONENT_OF_PART[self.part]


@dataclass
class KeyMap:
    """Every adaptable layer of one model, by kohya name."""

    arch: Arch
    slots: dict[str, Slot]
    aliases: dict[str, str]
    lora_targets: frozenset[str]  # the modules kohya's LoRA trains
    locon_targets: frozenset[str]  # ... and with LoCon (ResNet / sampler convs) too
    layers_per_block: int

    def resolve(self, name: str) -> Slot | None:
        slot = self.slots.get(name)
        if slot is None and name in self.aliases:
            slot = self.slots[self.aliases[name]]
        return slot


def _layers_per_block(unet: Any) -> int:
    lpb = getattr(getattr(unet, "config", None), "layers_per_block", 2)
    return int(lpb[0] if isinstance(lpb, list | tuple) else lpb)


def build_keymap(arch: Arch | str, unet: Any, text_encoders: list[Any]) -> KeyMap:
    """The key map of a model given as module trees (meta device or real)."""
    arch = Arch(arch)
    slots: dict[str, Slot] = {}
    aliases: dict[str, str] = {}
    lpb = _layers_per_block(unet)
    up_with_attention = {i for i, block in enumerate(getattr(unet, "up_blocks", [])) if getattr(block, "attentions", None)}
    for path, module in unet.named_modules():
        kind = module_kind(module)
        if kind is None or not path:
            continue
        try:
            name = tg.unet_lora_name(arch.value, path, unet)
            sgm = "lora_unet_" + tg.diffusers_to_sgm(path, lpb, up_with_attention).replace(".", "_")
        except ValueError:
            continue
        diffusers_style = "lora_unet_" + path.replace(".", "_")
        slots[name] = Slot(name, "unet", path, kind, tuple(module.weight.shape), getattr(module, "bias", None) is not None)
        for alias in (sgm, diffusers_style):
            if alias != name:
                aliases.setdefault(alias, name)
    prefixes = tg.text_encoder_prefixes(arch.value, len(text_encoders))
    for prefix, encoder in zip(prefixes, text_encoders, strict=True):
        part = prefix.removeprefix("lora_")
        for path, module in encoder.named_modules():
            kind = module_kind(module)
            if kind is None or not path:
                continue
            try:
                hf_path = tg.text_encoder_path(path)
            except ValueError:
                continue
            name = f"{prefix}_{hf_path.replace('.', '_')}"
            slots[name] = Slot(name, part, path, kind, tuple(module.weight.shape),
                               getattr(module, "bias", None) is not None)
    lora_targets = frozenset(t.name for t in tg.find_targets(arch.value, unet, text_encoders, include_conv=False))
    locon_targets = frozenset(t.name for t in tg.find_targets(arch.value, unet, text_encoders, include_conv=True))
    return KeyMap(arch, slots, aliases, lora_targets, locon_targets, lpb)
