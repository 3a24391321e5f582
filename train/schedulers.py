"""Learning-rate schedules with warmup in steps or as a ratio of the total: diffusers' ``get_scheduler`` for
kohya's classic names, transformers' for ``cosine_with_min_lr`` and ``warmup_stable_decay`` (kohya's
``get_scheduler_fix`` takes all of them from transformers; the curves are the same)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LRScheduler

    from train.config import TrainSection


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
                     power: float = 1.0, min_lr_ratio: float | None = None, lr_decay: float = 0) -> LRScheduler:
    """The schedule ``name`` over ``total_steps`` optimizer steps. ``min_lr_ratio``: the floor of
    ``cosine_with_min_lr`` / ``warmup_stable_decay`` as a ratio of the initial LR; ``lr_decay``: the decay length
    of ``warmup_stable_decay`` (steps, or a ratio of the total below 1)."""
    warmup = warmup_steps(lr_warmup, total_steps)
    if name == "cosine_with_min_lr":
        from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

        # kohya passes half the cycles: num_cycles 1 is one half cosine from the LR down to the floor
        scheduler: LRScheduler = get_cosine_with_min_lr_schedule_with_warmup(
            optimizer, num_warmup_steps=warmup, num_training_steps=total_steps, num_cycles=num_cycles / 2,
            min_lr_rate=min_lr_ratio or 0.0)
        return scheduler
    if name == "warmup_stable_decay":
        from transformers.optimization import get_wsd_schedule

        decay = warmup_steps(lr_decay, total_steps)
        stable = total_steps - warmup - decay
        if stable < 0:
            raise ValueError(f"train.lr_warmup + train.lr_decay_steps: {warmup} + {decay} steps do not fit the "
                             f"run's {total_steps} steps; shorten them")
        scheduler = get_wsd_schedule(optimizer, num_warmup_steps=warmup, num_stable_steps=stable,
                                     num_decay_steps=decay, num_cycles=num_cycles / 2,
                                     min_lr_ratio=min_lr_ratio or 0.0)
        return scheduler
    from diffusers.optimization import get_scheduler

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


LrLambda = Callable[[int], float]


def create_schedule(t: TrainSection, optimizer: Optimizer, *, total_steps: int, steps_per_epoch: int) -> LRScheduler:
    """The run's LR schedule: ``[train] lr_scheduler`` over the whole run, or the ``[[train.phases]]`` one after
    the other (each restarting its own scheduler and warmup at its first step, times its ``lr_scale``).

    A phased schedule is one ``LambdaLR`` whose factor is a pure function of the step, so its state is just
    the step count and a resume lands on the same learning rate at, before or after a phase boundary."""
    if not t.phases:
        return create_scheduler(t.lr_scheduler, optimizer, total_steps=total_steps, lr_warmup=t.lr_warmup,
                                num_cycles=t.lr_scheduler_num_cycles, power=t.lr_scheduler_power,
                                min_lr_ratio=t.lr_scheduler_min_lr_ratio, lr_decay=t.lr_decay_steps)
    from torch.optim.lr_scheduler import LambdaLR

    spans = t.phase_spans(total_steps, steps_per_epoch)
    initial = [group["lr"] for group in optimizer.param_groups]
    pieces: list[tuple[int, int, float, list[LrLambda]]] = []
    for start, end, phase in spans:
        # Each phase's factors come from the scheduler kiln would build for a run of the phase's length.
        one = create_scheduler(phase.lr_scheduler, optimizer, total_steps=end - start, lr_warmup=phase.lr_warmup,
                               num_cycles=phase.lr_scheduler_num_cycles, power=phase.lr_scheduler_power,
                               min_lr_ratio=t.lr_scheduler_min_lr_ratio, lr_decay=t.lr_decay_steps)
        lambdas = getattr(one, "lr_lambdas", None)
        if lambdas is None:
            raise ValueError(f"train.phases: {phase.lr_scheduler} is not a step-factor schedule; it cannot be a phase")
        pieces.append((start, end, phase.lr_scale, list(lambdas)))
        for group, lr in zip(optimizer.param_groups, initial, strict=True):
            group["lr"] = lr  # building a scheduler moves the rate to its step 0: undo
    for group in optimizer.param_groups:
        group.pop("initial_lr", None)

    def factor(index: int) -> LrLambda:
        def at(step: int) -> float:
            for start, end, scale, lambdas in pieces:
                if step < end or end == pieces[-1][1]:
                    return scale * float(lambdas[index](max(step, start) - start))
            return 0.0

        return at

    return LambdaLR(optimizer, [factor(i) for i in range(len(optimizer.param_groups))])


def phase_at(t: TrainSection, step: int, total_steps: int, steps_per_epoch: int) -> int | None:
    """The index of the phase that optimizer step ``step`` (0-based) belongs to (None without phases)."""
    if not t.phases:
        return None
    for index, (start, end, _) in enumerate(t.phase_spans(total_steps, steps_per_epoch)):
        if start <= step < end:
            return index
    return len(t.phases) - 1
