"""The optimizer step inside backward (kohya's ``--fused_backward_pass``, PyTorch's "optimizer step in
backward" recipe): as soon as a weight's gradient is complete it is clipped (per tensor, as kohya does),
that weight alone is stepped and its gradient freed, so the full set of gradients never exists at once.

One optimizer still holds every group (the LR schedule drives it, its state is saved and resumed); a step is
narrowed to one tensor by showing the optimizer only that tensor for the moment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def step_param(optimizer: torch.optim.Optimizer, param: torch.Tensor, group_index: int) -> None:
    """``optimizer.step()`` for ``param`` alone (the other groups and tensors are hidden for the call)."""
    groups = optimizer.param_groups
    saved = [g["params"] for g in groups]
    try:
        for i, g in enumerate(groups):
            g["params"] = [param] if i == group_index else []
        optimizer.step()
    finally:
        for g, params in zip(groups, saved, strict=True):
            g["params"] = params


class FusedBackward:
    """Steps each optimizer parameter as backward completes its gradient. ``stepped_for(model_param)``: the
    optimizer parameter behind a model parameter (its fp32 master, or itself)."""

    def __init__(self, optimizer: torch.optim.Optimizer, model_params: list[torch.nn.Parameter],
                 stepped_for: Callable[[torch.Tensor], torch.Tensor], max_grad_norm: float) -> None:
        self.optimizer = optimizer
        self.stepped_for = stepped_for
        self.max_grad_norm = max_grad_norm
        self.group_of = {id(p): i for i, g in enumerate(optimizer.param_groups) for p in g["params"]}
        for p in model_params:
            p.register_post_accumulate_grad_hook(self._step)  # type: ignore[no-untyped-call]

    def _step(self, model_param: torch.Tensor) -> None:
        import torch

        target = self.stepped_for(model_param)
        if target.grad is None:
            return
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_([target], self.max_grad_norm)
        step_param(self.optimizer, target, self.group_of[id(target)])
        target.grad = None
        model_param.grad = None
