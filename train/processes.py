"""One or several training processes, through accelerate: the Accelerator a config asks for, and what every
process must agree on (the step's loss, stop and save requests).

Gradients are averaged by DDP (``accelerator.prepare`` of the :class:`~train.denoiser.Denoiser`) during
``accelerator.backward``; gradient accumulation is ``accelerator.accumulate``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from train.rundir import RunLog, StopSignal

if TYPE_CHECKING:
    import torch

    from train.config import TrainSection

Accelerator = Any  # accelerate ships no type information


def make_accelerator(t: TrainSection) -> Accelerator:
    """The Accelerator for ``[train]``: the mixed precision it resolves to (fp16 brings accelerate's gradient
    scaler on CUDA), gradient accumulation, and DDP settings for a network hooked into frozen models."""
    import torch
    from accelerate import Accelerator as AccelerateAccelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs

    from train.precision import resolve_mixed_precision

    cuda = torch.cuda.is_available()
    mixed = resolve_mixed_precision(t.mixed_precision, torch.device("cuda" if cuda else "cpu"))
    # Unused parameters are normal here: modules after clip_skip or SDXL's first encoder's last layer never see
    # a gradient, and module_dropout skips whole modules at random.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)

    def build() -> Accelerator:
        return AccelerateAccelerator(cpu=not cuda, mixed_precision=mixed,
                                     gradient_accumulation_steps=t.gradient_accumulation_steps,
                                     step_scheduler_with_optimizer=False, kwargs_handlers=[ddp])

    try:
        return build()
    except ValueError as exc:
        # A second run in one Python session with another precision: accelerate keeps one state per process
        # and refuses the change. A single process can start afresh (what accelerate's own tests do).
        if "already been initialized" not in str(exc) or "RANK" in os.environ:
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        return build()


def allow_fp16_gradients(accelerator: Accelerator) -> None:
    """``full_fp16``: the gradient scaler unscales fp16 gradients too (torch refuses them by default; kohya's
    ``patch_accelerator_for_fp16_training`` does the same)."""
    scaler = accelerator.scaler
    if scaler is None:
        return
    unscale = scaler._unscale_grads_

    def unscale_fp16_too(optimizer: object, inv_scale: object, found_inf: object, allow_fp16: bool) -> object:
        del allow_fp16
        return unscale(optimizer, inv_scale, found_inf, True)

    scaler._unscale_grads_ = unscale_fp16_too


def mean_loss(accelerator: Accelerator, losses: list[torch.Tensor]) -> float:
    """The loss of one optimizer step: the mean over its accumulated batches and over the processes."""
    import torch

    local = torch.stack(losses).float().mean()
    return float(accelerator.reduce(local, reduction="mean").item())


def poll_requests(run: RunLog, stop: StopSignal, accelerator: Accelerator) -> tuple[str | None, bool]:
    """Stop (signal or stop.request) and save (save.request) requests, agreed by all processes: (why to
    stop or None, whether to save now)."""
    import torch

    stop_reason = stop.requested or ("stop.request" if run.stop_requested() else None)
    save_now = run.take_save_request()
    if accelerator.num_processes > 1:
        flags = torch.tensor([1.0 if stop_reason else 0.0, 1.0 if save_now else 0.0], device=accelerator.device)
        flags = accelerator.reduce(flags, reduction="sum")
        stop_reason = stop_reason or ("another process" if flags[0] > 0 else None)
        save_now = bool(flags[1] > 0)
    return stop_reason, save_now
