"""Apply LoRAs to a loaded model's weights and take them off again exactly (what A1111/Forge do at run time).

``WeightPatcher(arch, unet, text_encoders)`` puts ``s * block_weight * dW`` onto each adapted layer (dW from
``train.lora.delta``, so every LyCORIS type kiln reads works, DoRA and IA³ included) after saving the layer's
original weight on the CPU; ``restore()`` copies the originals back bit for bit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from train.lora.adapters import LoraFile
from train.lora.blocks import BlockWeights
from train.lora.delta import bias_delta, delta, needs_base_weight
from train.lora.keymap import KeyMap, Slot, build_keymap

if TYPE_CHECKING:
    import torch


class WeightPatcher:
    """Reversible in-place LoRA application on live diffusers / transformers modules."""

    def __init__(self, arch: str, unet: Any, text_encoders: list[Any]) -> None:
        self.unet = unet
        self.text_encoders = text_encoders
        self.keymap: KeyMap = build_keymap(arch, unet, text_encoders)
        self._saved: dict[int, tuple[Any, torch.Tensor, torch.Tensor | None]] = {}

    def _module(self, slot: Slot) -> Any:
        if slot.part == "unet":
            return self.unet.get_submodule(slot.path)
        index = 1 if slot.part == "te2" else 0
        return self.text_encoders[index].get_submodule(slot.path)

    def apply(self, lora: LoraFile, strength: float, blocks: BlockWeights | None = None, target: str = "the model"
              ) -> int:
        """Add the LoRA at ``strength`` (times each module's block weight); returns the layers changed.
        Checks every module first (``merge.match_modules``), so an unfit LoRA changes nothing."""
        import torch

        from train.lora.merge import match_modules

        matched = match_modules(lora, self.keymap, target)
        changed = 0
        with torch.no_grad():
            for module, slot in matched:
                factor = strength * (blocks.weight(module.name) if blocks is not None else 1.0)
                if factor == 0.0:
                    continue
                layer = self._module(slot)
                weight = layer.weight
                key = id(layer)
                if key not in self._saved:
                    bias = layer.bias.detach().cpu().clone() if getattr(layer, "bias", None) is not None else None
                    self._saved[key] = (layer, weight.detach().cpu().clone(), bias)
                original = self._saved[key][1].to(device=weight.device, dtype=torch.float32)
                change = delta(module, slot.shape, original if needs_base_weight(module) else None, weight.device)
                weight.copy_((weight.float() + factor * change.reshape(weight.shape)).to(weight.dtype))
                bias_change = bias_delta(module)
                if bias_change is not None and layer.bias is not None:
                    layer.bias.copy_((layer.bias.float() + factor * bias_change.to(layer.bias.device)).to(layer.bias.dtype))
                changed += 1
        return changed

    def restore(self) -> None:
        """Every changed layer gets its original weight (and bias) back."""
        import torch

        with torch.no_grad():
            for layer, weight, bias in self._saved.values():
                layer.weight.copy_(weight.to(layer.weight.device))
                if bias is not None:
                    layer.bias.copy_(bias.to(layer.bias.device))
        self._saved.clear()
