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


def rebase_learning_rates(optimizer: Optimizer, scheduler: LRScheduler, base_lrs: list[float]) -> list[str]:
    """After a resume restored the saved optimizer and schedule: make ``base_lrs`` (the config's, one per
    parameter group) the schedule's base from the resumed step on. Returns one line per group that changed."""
    from torch.optim.lr_scheduler import LambdaLR

    changed = []
    saved = [float(lr) for lr in scheduler.base_lrs]
    for i, (group, old, new) in enumerate(zip(optimizer.param_groups, saved, base_lrs, strict=True)):
        if abs(old - new) <= 1e-12 * max(abs(old), abs(new)):
            continue
        factor = scheduler.lr_lambdas[i](scheduler.last_epoch) if isinstance(scheduler, LambdaLR) else \
            group["lr"] / old if old else 1.0
        group["initial_lr"] = new
        group["lr"] = new * factor
        scheduler.base_lrs[i] = new
        changed.append(f"{group.get('name', i)}: {old:g} -> {new:g}")
    if changed:
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]  # what get_last_lr() reports
    return changed


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
