"""kohya-compatible LoRA / LoCon module: ``lora_down``, ``lora_up`` and ``alpha``, hooked into a module's forward.

The original module keeps its weights; only its ``forward`` is replaced by one that adds
``multiplier * scale * up(down(x))`` with ``scale = alpha / dim`` (kohya ``networks/lora.py`` LoRAModule).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import torch
from torch import nn


class LoRAModule(nn.Module):
    """LoRA on a Linear or Conv2d. Conv: ``lora_down`` has the original kernel/stride/padding, ``lora_up`` is 1x1."""

    def __init__(
        self,
        lora_name: str,
        org_module: nn.Module,
        multiplier: float = 1.0,
        lora_dim: int = 4,
        alpha: float | None = 1.0,
        dropout: float | None = None,
        rank_dropout: float | None = None,
        module_dropout: float | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.lora_name = lora_name
        self.lora_dim = int(lora_dim)
        place = device if device is not None else "cpu"
        self.lora_down: nn.Linear | nn.Conv2d
        self.lora_up: nn.Linear | nn.Conv2d
        if isinstance(org_module, nn.Conv2d):
            kernel, stride, padding = (cast(tuple[int, int], v) for v in
                                       (org_module.kernel_size, org_module.stride, org_module.padding))
            self.lora_down = nn.Conv2d(org_module.in_channels, self.lora_dim, kernel, stride, padding, bias=False,
                                       device=place, dtype=torch.float32)
            self.lora_up = nn.Conv2d(self.lora_dim, org_module.out_channels, (1, 1), (1, 1), bias=False,
                                     device=place, dtype=torch.float32)
        else:
            linear = cast(nn.Linear, org_module)  # a Linear, or a quantised one that keeps in/out_features
            self.lora_down = nn.Linear(linear.in_features, self.lora_dim, bias=False, device=place,
                                       dtype=torch.float32)
            self.lora_up = nn.Linear(self.lora_dim, linear.out_features, bias=False, device=place,
                                     dtype=torch.float32)
        if isinstance(alpha, torch.Tensor):
            alpha = float(alpha.detach().float().item())
        alpha = float(self.lora_dim) if alpha is None or alpha == 0 else float(alpha)
        self.scale = alpha / self.lora_dim
        self.register_buffer("alpha", torch.tensor(alpha, device=place))
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)

        self.multiplier = multiplier
        self.dropout = dropout
        self.rank_dropout = rank_dropout
        self.module_dropout = module_dropout
        self._org: list[nn.Module] = [org_module]  # a list, so it is not registered as a child
        self._org_forward: Callable[..., torch.Tensor] | None = None

    @property
    def org_module(self) -> nn.Module:
        return self._org[0]

    def apply_to(self) -> None:
        """Hook into the original module's forward (its weights are untouched)."""
        if self._org_forward is not None:
            return
        self._org_forward = self.org_module.forward
        self.org_module.forward = self.forward  # the hook: how LoRA attaches

    def restore(self) -> None:
        """Give the original module its own forward back."""
        if self._org_forward is None:
            return
        self.org_module.forward = self._org_forward
        self._org_forward = None

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        assert self._org_forward is not None, "apply_to() hooks the module in before it runs"
        org_out = self._org_forward(x, *args, **kwargs)
        if self.multiplier == 0:
            return org_out
        if self.module_dropout and self.training and torch.rand(1) < self.module_dropout:
            return org_out
        lx: torch.Tensor = self.lora_down(x.to(self.lora_down.weight.dtype))
        if self.dropout and self.training:
            lx = nn.functional.dropout(lx, p=self.dropout)
        scale = self.scale
        if self.rank_dropout and self.training:
            mask = torch.rand((lx.size(0), self.lora_dim), device=lx.device) > self.rank_dropout
            if lx.dim() == 3:
                mask = mask.unsqueeze(1)
            elif lx.dim() == 4:
                mask = mask.unsqueeze(-1).unsqueeze(-1)
            lx = lx * mask
            scale = self.scale / (1.0 - self.rank_dropout)
        lx = self.lora_up(lx)
        return org_out + (lx * (self.multiplier * scale)).to(org_out.dtype)

    @torch.no_grad()
    def delta_weight(self) -> torch.Tensor:
        """The weight difference this module adds (scale included, multiplier not), in float32."""
        up = self.lora_up.weight.float()
        down = self.lora_down.weight.float()
        if up.dim() == 2:
            w = up @ down
        elif down.shape[2:] == (1, 1):
            w = (up.flatten(1) @ down.flatten(1)).unsqueeze(2).unsqueeze(3)
        else:
            w = nn.functional.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3)
        return w * self.scale

    @torch.no_grad()
    def apply_max_norm(self, max_norm: float, device: torch.device | str | None = None) -> tuple[bool, float]:
        """kohya's max-norm regularisation for one module: scale up and down by sqrt(ratio) when the norm of
        the weight delta exceeds ``max_norm``. Returns (scaled, norm after scaling)."""
        updown = self.delta_weight().to(device) if device is not None else self.delta_weight()
        norm = updown.norm().clamp(min=max_norm / 2)
        desired = torch.clamp(norm, max=max_norm)
        ratio = float(desired / norm)
        scaled = ratio != 1.0
        if scaled:
            root = ratio**0.5
            self.lora_up.weight.mul_(root)
            self.lora_down.weight.mul_(root)
        return scaled, float(updown.norm()) * ratio
