"""The weight change a LoRA / LyCORIS module makes to its layer, as A1111/Forge and ComfyUI apply it.

``delta(module, base_weight)`` is ΔW at strength 1 in float32, shaped like the layer's weight; a layer at
strength s becomes ``W + s * ΔW`` (for DoRA too: ΔW there is ``DoRA(W + ΔW_lora) - W``, as both UIs apply a
strength to DoRA). The low-rank rebuilds for LoHa, LoKr and Tucker LoCon come from ``lycoris-lora``'s
functional API; scale factors follow the file format (alpha / rank; LoKr: 1 unless a side is factorised).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from train.lora.adapters import AdapterModule
from train.lora.errors import LoraToolError

if TYPE_CHECKING:
    import torch

UNSUPPORTED = {"norm": "norm-layer modules", "glora": "GLoRA modules", "oft": "OFT / BOFT modules"}


def needs_base_weight(module: AdapterModule) -> bool:
    """IA³ and DoRA depend on the base weight, not only on the module's own tensors."""
    return module.algo == "ia3" or module.dora


def check_supported(module: AdapterModule) -> None:
    if module.algo in UNSUPPORTED:
        raise LoraToolError(f"{module.name}: {UNSUPPORTED[module.algo]} are not supported by kiln's merge / resize "
                            "(A1111/Forge and ComfyUI apply them at run time)")
    if module.algo == "lokr" and "lokr_t1" in module.tensors:
        raise LoraToolError(f"{module.name}: LoKr with a Tucker core on its first factor (lokr_t1) is not supported")


def _f32(t: torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    import torch

    return t.to(device=device, dtype=torch.float32)


def low_rank_delta(module: AdapterModule, shape: tuple[int, ...], device: torch.device | str | None = None
                   ) -> torch.Tensor:
    """ΔW of the module's own tensors (no DoRA / IA³ step), float32, ``shape``."""
    check_supported(module)
    t = module.tensors
    scale = module.scale
    if module.algo == "lora":
        down, up = _f32(t["lora_down.weight"], device), _f32(t["lora_up.weight"], device)
        mid = t.get("lora_mid.weight")
        if mid is not None:
            from lycoris.functional.locon import diff_weight as locon_diff

            return locon_diff(down, up, _f32(mid, device), gamma=scale).reshape(shape)  # type: ignore[no-any-return]
        return (up.flatten(1) @ down.flatten(1)).reshape(shape) * scale
    if module.algo == "loha":
        from lycoris.functional.loha import diff_weight as loha_diff

        t1, t2 = t.get("hada_t1"), t.get("hada_t2")
        result = loha_diff(
            _f32(t["hada_w1_b"], device), _f32(t["hada_w1_a"], device), _f32(t["hada_w2_b"], device),
            _f32(t["hada_w2_a"], device), None if t1 is None else _f32(t1, device),
            None if t2 is None else _f32(t2, device), gamma=scale,
        )
        return result.reshape(shape)  # type: ignore[no-any-return]
    if module.algo == "lokr":
        from lycoris.functional.lokr import diff_weight as lokr_diff

        def opt(key: str) -> torch.Tensor | None:
            return None if key not in t else _f32(t[key], device)

        rank = module.rank
        gamma = module.alpha if module.alpha else float(rank or 1)
        result = lokr_diff(opt("lokr_w1"), opt("lokr_w1_a"), opt("lokr_w1_b"), opt("lokr_w2"), opt("lokr_w2_a"),
                           opt("lokr_w2_b"), opt("lokr_t2"), gamma=gamma)
        return result.reshape(shape)  # type: ignore[no-any-return]
    if module.algo == "full":
        return _f32(t["diff"], device).reshape(shape)
    raise LoraToolError(f"{module.name}: {module.algo} modules need the base weight")


def delta(module: AdapterModule, shape: tuple[int, ...], base_weight: torch.Tensor | None = None,
          device: torch.device | str | None = None) -> torch.Tensor:
    """ΔW at strength 1 (see the module docstring); ``base_weight`` is needed for IA³ and DoRA."""
    if needs_base_weight(module):
        if base_weight is None:
            raise LoraToolError(f"{module.name}: {'IA³' if module.algo == 'ia3' else 'DoRA'} modules depend on the base "
                                "weights; merge the file into a checkpoint instead")
        weight = _f32(base_weight, device).reshape(shape)
        if module.algo == "ia3":
            scale = _f32(module.tensors["weight"], device).reshape(-1)
            on_input = bool(int(module.tensors["on_input"].reshape(-1)[0])) if "on_input" in module.tensors else False
            view = (1, -1, *[1] * (weight.dim() - 2)) if on_input else (-1, *[1] * (weight.dim() - 1))
            return weight * scale.reshape(view)
        merged = weight + low_rank_delta(module, shape, device)
        return dora_weight(merged, _f32(module.tensors["dora_scale"], device)) - weight
    return low_rank_delta(module, shape, device)


def dora_weight(merged: torch.Tensor, dora_scale: torch.Tensor) -> torch.Tensor:
    """DoRA's re-normalisation of ``merged = W + ΔW``: the magnitude ``dora_scale`` times the direction, the
    norm taken per output row or per input column, whichever axis ``dora_scale`` has (LyCORIS, ComfyUI)."""
    import torch

    eps = torch.finfo(merged.dtype).eps
    rest = [1] * (merged.dim() - 1)
    if dora_scale.shape[0] == merged.shape[0] and dora_scale.numel() == merged.shape[0]:
        norm: torch.Tensor = merged.reshape(merged.shape[0], -1).norm(dim=1).reshape(merged.shape[0], *rest) + eps
        return merged * (dora_scale.reshape(merged.shape[0], *rest) / norm)
    norm = (merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1, keepdim=True)
            .reshape(merged.shape[1], *rest).transpose(0, 1)) + eps
    return merged * (dora_scale.reshape(norm.shape) / norm)


def bias_delta(module: AdapterModule) -> torch.Tensor | None:
    """The bias change (LyCORIS full diff only)."""
    value = module.tensors.get("diff_b") if module.algo == "full" else None
    return None if value is None else _f32(value, None)
