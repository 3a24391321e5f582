"""Optimizers by name: AdamW, the bitsandbytes 8-bit family, Lion, Prodigy, DAdaptAdam, Adafactor, SGD, or any
``module.Class`` with ``optimizer_args``. Missing packages and CPU-only machines get an error naming a fix.
Also the optimizer step of the training loop (clipping, scaling, schedule) and the learning rates it reports."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch.optim.lr_scheduler import LRScheduler

    from train.processes import Accelerator


class OptimizerError(RuntimeError):
    pass


_BNB = {"AdamW8bit": "AdamW8bit", "PagedAdamW8bit": "PagedAdamW8bit", "Lion8bit": "Lion8bit"}


def _import(module: str, package: str, name: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise OptimizerError(
            f"train.optimizer: {name!r} needs the '{package}' package: pip install {package}"
        ) from None


def create_optimizer(name: str, param_groups: list[dict[str, Any]], lr: float,
                     args: dict[str, Any]) -> torch.optim.Optimizer:
    """Build the optimizer for ``param_groups`` (each may carry its own ``lr``)."""
    import torch

    if "lr" in args:
        raise OptimizerError("train.optimizer_args: lr is not an optimizer argument here; set train.learning_rate "
                             "(or unet_lr / text_encoder_lr)")
    kwargs: dict[str, Any] = {**args, "lr": lr}
    if "betas" in kwargs and isinstance(kwargs["betas"], list):
        kwargs["betas"] = tuple(kwargs["betas"])
    cls: Callable[..., torch.optim.Optimizer]
    if name == "AdamW":
        cls = torch.optim.AdamW
    elif name == "SGD":
        cls = torch.optim.SGD
    elif name in _BNB:
        if not torch.cuda.is_available():
            alt = "Lion" if "Lion" in name else "AdamW (or Adafactor to save memory)"
            raise OptimizerError(
                f"train.optimizer: {name!r} runs on CUDA GPUs only (bitsandbytes) and this machine has none; "
                f"use optimizer = \"{alt.split(' ')[0]}\" instead ({alt})"
            )
        cls = getattr(_import("bitsandbytes.optim", "bitsandbytes", name), _BNB[name])
    elif name == "Lion":
        cls = _import("lion_pytorch", "lion-pytorch", name).Lion
    elif name == "Prodigy":
        cls = _import("prodigyopt", "prodigyopt", name).Prodigy
    elif name == "DAdaptAdam":
        cls = _import("dadaptation", "dadaptation", name).DAdaptAdam
    elif name == "Adafactor":
        cls = _import("transformers.optimization", "transformers", name).Adafactor
        kwargs.setdefault("relative_step", False)
        kwargs.setdefault("scale_parameter", False)
        kwargs.setdefault("warmup_init", False)
        kwargs["lr"] = None if kwargs["relative_step"] else lr
    else:
        module_name, _, class_name = name.rpartition(".")
        found = getattr(_import(module_name, module_name.split(".")[0], name), class_name, None)
        if found is None:
            raise OptimizerError(f"train.optimizer: {module_name} has no {class_name!r}")
        cls = found
    return cls(param_groups, **kwargs)


def optimizer_problem(name: str) -> str | None:
    """Why ``name`` cannot be used on this machine (missing package, no CUDA), without building it."""
    import importlib.util

    if name in ("AdamW", "SGD"):
        return None
    if name in _BNB:
        import torch

        if not torch.cuda.is_available():
            alt = "Lion" if "Lion" in name else "AdamW"
            return (f"train.optimizer: {name!r} runs on CUDA GPUs only (bitsandbytes) and this machine has none; "
                    f"use optimizer = \"{alt}\" instead")
    module, package = {
        "AdamW8bit": ("bitsandbytes", "bitsandbytes"), "PagedAdamW8bit": ("bitsandbytes", "bitsandbytes"),
        "Lion8bit": ("bitsandbytes", "bitsandbytes"), "Lion": ("lion_pytorch", "lion-pytorch"),
        "Prodigy": ("prodigyopt", "prodigyopt"), "DAdaptAdam": ("dadaptation", "dadaptation"),
        "Adafactor": ("transformers", "transformers"),
    }.get(name, (name.rpartition(".")[0].split(".")[0], name.rpartition(".")[0].split(".")[0]))
    if importlib.util.find_spec(module) is None:
        return f"train.optimizer: {name!r} needs the '{package}' package: pip install {package}"
    return None


def is_adaptive(name: str) -> bool:
    """Optimizers that choose their own step size (learning rate ~1.0)."""
    return name in ("Prodigy", "DAdaptAdam")


def optimizer_step(accelerator: Accelerator, optimizer: torch.optim.Optimizer, scheduler: LRScheduler,
                   params: list[torch.nn.Parameter], max_grad_norm: float) -> None:
    """After every backward pass: once the accumulation is complete (``accelerator.sync_gradients``), clip the
    gradients (accelerate unscales fp16 gradients first), step the optimizer (the fp16 scaler skips a step
    whose gradients overflowed), advance the LR schedule and clear the gradients. In between, nothing."""
    if not accelerator.sync_gradients:
        return
    if max_grad_norm:
        accelerator.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def current_lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    """The effective learning rate per group (d * lr for DAdaptation / Prodigy)."""
    lrs = []
    for group in optimizer.param_groups:
        lr = group["lr"]
        if "d" in group:
            lr = group["d"] * lr
        lrs.append(float(lr))
    return lrs
