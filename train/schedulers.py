"""Learning-rate schedules with warmup in steps or as a ratio of the total (diffusers' get_scheduler)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LRScheduler


def warmup_steps(lr_warmup: float, total_steps: int) -> int:
    """``lr_warmup`` >= 1 is a step count; below 1 a ratio of ``total_steps``."""
    if lr_warmup >= 1:
        return int(lr_warmup)
    return int(round(lr_warmup * total_steps))


def create_scheduler(name: str, optimizer: Optimizer, *, total_steps: int, lr_warmup: float, num_cycles: int = 1,
                     power: float = 1.0) -> LRScheduler:
    from diffusers.optimization import get_scheduler

    warmup = warmup_steps(lr_warmup, total_steps)
    if name == "constant" and warmup:
        name = "constant_with_warmup"
    kwargs: dict[str, Any] = {"num_warmup_steps": warmup, "num_training_steps": total_steps}
    if name == "cosine_with_restarts":
        kwargs["num_cycles"] = num_cycles
    if name == "polynomial":
        kwargs["power"] = power
    if name == "constant":
        kwargs = {}
    return get_scheduler(name, optimizer, **kwargs)
