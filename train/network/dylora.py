"""kohya's DyLoRA module (``networks/dylora.py``): a LoRA whose ranks are trained a block of ``unit`` at a time,
so that the first r ranks make a usable LoRA for any r up to ``dim``.

Each training forward draws a rank ``b`` (a multiple of ``unit`` below ``dim``); only rows ``b .. b+unit`` of
``lora_down`` and columns ``b .. b+unit`` of ``lora_up`` take gradients this step (the others have none, so the
optimizer leaves them alone), and the update is scaled by ``alpha / dim * sqrt(dim / (b + unit))``, as kohya
does. Outside training the module is a plain LoRA of rank ``dim`` — what the saved file is when it is loaded.

The rank rows are separate parameters (``lora_A.i`` / ``lora_B.i``, what ``state/`` holds); the LoRA file has
kohya's keys: ``lora_down.weight``, ``lora_up.weight`` and ``alpha``, shaped as a LoRA of rank ``dim``. The
rank is drawn from torch's RNG, so activation checkpointing recomputes the same forward.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import cast

import torch
from torch import nn


class DyLoRAModule(nn.Module):
    """DyLoRA on a Linear or a Conv2d (1x1 convs run as linears over the pixels, 3x3 convs as convs)."""

    alpha: torch.Tensor  # a buffer: saved, moved with the module, not trained

    def __init__(self, lora_name: str, org_module: nn.Module, multiplier: float = 1.0, lora_dim: int = 4,
                 alpha: float | None = 1.0, unit: int = 1, device: torch.device | str | None = None) -> None:
        super().__init__()
        if lora_dim % unit:
            raise ValueError(f"DyLoRA: dim {lora_dim} is not a multiple of unit {unit}")
        self.lora_name = lora_name
        self.lora_dim = int(lora_dim)
        self.unit = int(unit)
        place = device if device is not None else "cpu"
        self.is_conv = isinstance(org_module, nn.Conv2d)
        self.kernel: tuple[int, int] = (1, 1)
        self.stride: tuple[int, int] = (1, 1)
        self.padding: tuple[int, int] | str = (0, 0)
        if isinstance(org_module, nn.Conv2d):
            in_dim, out_dim = org_module.in_channels, org_module.out_channels
            self.kernel = cast(tuple[int, int], org_module.kernel_size)
            self.stride = cast(tuple[int, int], org_module.stride)
            self.padding = cast("tuple[int, int] | str", org_module.padding)
        else:
            linear = cast(nn.Linear, org_module)
            in_dim, out_dim = linear.in_features, linear.out_features
        self.conv3x3 = self.is_conv and self.kernel != (1, 1)
        down_shape = (1, in_dim, *self.kernel) if self.conv3x3 else (1, in_dim)
        up_shape = (out_dim, 1, 1, 1) if self.conv3x3 else (out_dim, 1)
        self.lora_A = nn.ParameterList([nn.Parameter(torch.empty(down_shape, device=place)) for _ in range(lora_dim)])
        self.lora_B = nn.ParameterList([nn.Parameter(torch.zeros(up_shape, device=place)) for _ in range(lora_dim)])
        for row in self.lora_A:
            nn.init.kaiming_uniform_(row, a=math.sqrt(5))
        alpha = float(self.lora_dim) if alpha is None or alpha == 0 else float(alpha)
        self.scale = alpha / self.lora_dim
        self.register_buffer("alpha", torch.tensor(alpha, device=place))
        self.multiplier = multiplier
        self._org: list[nn.Module] = [org_module]
        self._org_forward: Callable[..., torch.Tensor] | None = None

    @property
    def org_module(self) -> nn.Module:
        return self._org[0]

    def apply_to(self) -> None:
        if self._org_forward is not None:
            return
        self._org_forward = self.org_module.forward
        self.org_module.forward = self.forward

    def restore(self) -> None:
        if self._org_forward is None:
            return
        self.org_module.forward = self._org_forward
        self._org_forward = None

    def trained_rank(self) -> int:
        """The first rank trained this step: a multiple of ``unit`` below ``dim``, uniformly (kohya)."""
        drawn = int(torch.randint(0, self.lora_dim, (1,)).item())
        return drawn - drawn % self.unit

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        assert self._org_forward is not None, "apply_to() hooks the module in before it runs"
        out = self._org_forward(x, *args, **kwargs)
        if self.multiplier == 0:
            return out
        scale = self.scale
        if self.training:
            b = self.trained_rank()
            for i, (down, up) in enumerate(zip(self.lora_A, self.lora_B, strict=True)):
                trained = b <= i < b + self.unit
                down.requires_grad_(trained)
                up.requires_grad_(trained)
            scale = self.scale * math.sqrt(self.lora_dim / (b + self.unit))
        down_w = torch.cat(tuple(self.lora_A), dim=0)
        up_w = torch.cat(tuple(self.lora_B), dim=1)
        h = x.to(down_w.dtype)
        if self.conv3x3:
            h = nn.functional.conv2d(h, down_w, stride=self.stride, padding=self.padding)
            h = nn.functional.conv2d(h, up_w)
        elif self.is_conv:  # 1x1: (N, C, H, W) -> (N, H*W, C), linears, back
            n, _, height, width = h.shape
            h = h.reshape(n, h.shape[1], -1).transpose(1, 2)
            h = nn.functional.linear(nn.functional.linear(h, down_w), up_w)
            h = h.transpose(1, 2).reshape(n, -1, height, width)
        else:
            h = nn.functional.linear(nn.functional.linear(h, down_w), up_w)
        return out + (h * (self.multiplier * scale)).to(out.dtype)

    # ------------------------------------------------------------------ the kohya file's view
    def kohya_state_dict(self) -> dict[str, torch.Tensor]:
        """``lora_down.weight`` / ``lora_up.weight`` / ``alpha`` as a rank-``dim`` LoRA (kohya's file keys)."""
        down = torch.cat(tuple(p.detach() for p in self.lora_A), dim=0)
        up = torch.cat(tuple(p.detach() for p in self.lora_B), dim=1)
        if self.is_conv and not self.conv3x3:
            down, up = down[:, :, None, None], up[:, :, None, None]
        return {"lora_down.weight": down, "lora_up.weight": up, "alpha": self.alpha.detach()}

    @torch.no_grad()
    def load_kohya_state_dict(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Take a rank-``dim`` LoRA's ``lora_down.weight`` / ``lora_up.weight`` (and ``alpha``) into the rows."""
        down, up = tensors["lora_down.weight"], tensors["lora_up.weight"]
        if self.is_conv and not self.conv3x3:
            down, up = down.flatten(1), up.flatten(1)
        for i, (row, col) in enumerate(zip(self.lora_A, self.lora_B, strict=True)):
            row.copy_(down[i : i + 1].to(row.dtype))
            col.copy_(up[:, i : i + 1].reshape(col.shape).to(col.dtype))
        if "alpha" in tensors:
            self.alpha.copy_(tensors["alpha"].to(self.alpha.dtype))
            self.scale = float(self.alpha) / self.lora_dim

    @torch.no_grad()
    def delta_weight(self) -> torch.Tensor:
        """The weight difference of the full-rank module (scale included, multiplier not), in float32."""
        tensors = self.kohya_state_dict()
        down, up = tensors["lora_down.weight"].float(), tensors["lora_up.weight"].float()
        if up.dim() == 2:
            return (up @ down) * self.scale
        if down.shape[2:] == (1, 1):
            return (up.flatten(1) @ down.flatten(1))[:, :, None, None] * self.scale
        return nn.functional.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3) * self.scale

    @torch.no_grad()
    def apply_max_norm(self, max_norm: float, device: torch.device | str | None = None) -> tuple[bool, float]:
        """kohya's max-norm regularisation: scale every row by sqrt(ratio) when the update's norm is too big."""
        updown = self.delta_weight().to(device) if device is not None else self.delta_weight()
        norm = updown.norm().clamp(min=max_norm / 2)
        ratio = float(torch.clamp(norm, max=max_norm) / norm)
        if ratio != 1.0:
            for p in (*self.lora_A, *self.lora_B):
                p.mul_(ratio**0.5)
        return ratio != 1.0, float(updown.norm()) * ratio
