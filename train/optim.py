"""Optimizers by name: AdamW, the bitsandbytes 8-bit family, Lion, Prodigy, the DAdaptation family, Adafactor,
SGD, or any ``module.Class`` with ``optimizer_args``. Missing packages and CPU-only machines get an error naming
a fix. The schedule-free ones (AdamWScheduleFree, RAdamScheduleFree, SGDScheduleFree) train in train mode and
sample and save in evaluation mode (their averaged weights). :data:`OPTIMIZERS` is the one table of the names kiln knows: where each class lives, its package, its
family (how its learning rate is read, for the pre-flight) and whether it needs CUDA.
Also the optimizer step of the training loop (clipping, scaling, schedule) and the learning rates it reports."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

if TYPE_CHECKING:
    import torch
    from torch.optim.lr_scheduler import LRScheduler

    from train.processes import Accelerator


class OptimizerError(RuntimeError):
    pass


Family = Literal["fixed", "adaptive", "schedule-free", "unknown"]
"""How an optimizer reads its learning rate: ``fixed`` (the step size itself: AdamW, Lion, SGD, Adafactor
without relative_step), ``adaptive`` (a multiplier of the step size it estimates: Prodigy, DAdaptation, ~1.0),
``schedule-free`` (a fixed step size, no decay schedule), ``unknown`` (a ``module.Class`` kiln cannot place)."""


@dataclass(frozen=True)
class OptimizerSpec:
    """Where an optimizer class lives and how it is driven."""

    module: str
    attr: str
    package: str  # what `pip install` needs
    family: Family = "fixed"
    cuda_only: bool = False  # bitsandbytes' 8-bit optimizers
    defaults: dict[str, object] = field(default_factory=dict)  # kiln's defaults over the class's own
    usual_lr: float = 1e-4  # a learning rate that works for LoRA (the pre-flight's suggested fix)
    lr_range: str = "1e-5 to 5e-4 (LoRA: UNet 1e-4, text encoder 5e-5)"  # what LoRA trainers use

    @property
    def path(self) -> str:
        return f"{self.module}.{self.attr}"


_ADAFACTOR_DEFAULTS: dict[str, object] = {"relative_step": False, "scale_parameter": False, "warmup_init": False}
ADAPTIVE_RANGE = "0.5 to 1.0 (1.0 lets it choose the step size)"
LION_RANGE = "1e-5 to 1e-4 (3-10x lower than AdamW's)"


def _adaptive(module: str, attr: str) -> OptimizerSpec:
    return OptimizerSpec(module, attr, module, family="adaptive", usual_lr=1.0, lr_range=ADAPTIVE_RANGE)


def _bnb(attr: str, *, lion: bool = False) -> OptimizerSpec:
    if lion:
        return OptimizerSpec("bitsandbytes.optim", attr, "bitsandbytes", cuda_only=True, usual_lr=3e-5,
                             lr_range=LION_RANGE)
    return OptimizerSpec("bitsandbytes.optim", attr, "bitsandbytes", cuda_only=True)


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "AdamW": OptimizerSpec("torch.optim", "AdamW", "torch"),
    "AdamW8bit": _bnb("AdamW8bit"),
    "PagedAdamW8bit": _bnb("PagedAdamW8bit"),
    "Lion": OptimizerSpec("lion_pytorch", "Lion", "lion-pytorch", usual_lr=3e-5, lr_range=LION_RANGE),
    "Lion8bit": _bnb("Lion8bit", lion=True),
    "Prodigy": _adaptive("prodigyopt", "Prodigy"),
    "DAdaptAdam": _adaptive("dadaptation", "DAdaptAdam"),
    "DAdaptLion": _adaptive("dadaptation", "DAdaptLion"),
    "DAdaptAdaGrad": _adaptive("dadaptation", "DAdaptAdaGrad"),
    "DAdaptAdan": _adaptive("dadaptation", "DAdaptAdan"),
    "DAdaptSGD": _adaptive("dadaptation", "DAdaptSGD"),
    "Adafactor": OptimizerSpec("transformers.optimization", "Adafactor", "transformers",
                               defaults=_ADAFACTOR_DEFAULTS, lr_range="1e-5 to 1e-3"),
    "SGD": OptimizerSpec("torch.optim", "SGD", "torch", usual_lr=1e-3, lr_range="1e-4 to 5e-3"),
    **{name: OptimizerSpec("schedulefree", name, "schedulefree", family="schedule-free")
       for name in ("AdamWScheduleFree", "RAdamScheduleFree", "SGDScheduleFree")},
}
SCHEDULE_FREE_OPTIMIZERS: tuple[str, ...] = tuple(n for n, s in OPTIMIZERS.items() if s.family == "schedule-free")


def spec_of(name: str) -> OptimizerSpec:
    """The spec of a built-in name, or of a ``module.Class`` path (family guessed from the class name)."""
    if name in OPTIMIZERS:
        return OPTIMIZERS[name]
    module, _, attr = name.rpartition(".")
    for known in OPTIMIZERS.values():
        if known.path == name:
            return known
    lowered = attr.lower()
    family: Family = "unknown"
    if "prodigy" in lowered or "dadapt" in lowered:
        family = "adaptive"
    elif "schedulefree" in lowered:
        family = "schedule-free"
    elif lowered in ("adam", "adamw", "lion", "sgd", "radam", "nadam", "adagrad", "rmsprop", "adamax", "came"):
        family = "fixed"
    return OptimizerSpec(module, attr, module.split(".")[0], family=family,
                         cuda_only=module.startswith("bitsandbytes"))


def family_of(name: str, args: dict[str, Any] | None = None) -> Family:
    """The optimizer's family for these arguments (Adafactor with ``relative_step`` chooses its own step)."""
    if name == "Adafactor" and (args or {}).get("relative_step"):
        return "adaptive"
    return spec_of(name).family


def _import(module: str, package: str, name: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise OptimizerError(
            f"train.optimizer: {name!r} needs the '{package}' package: pip install {package}"
        ) from None


def _no_cuda(name: str) -> str:
    alt = "Lion" if "Lion" in name else "AdamW"
    return (f"train.optimizer: {name!r} runs on CUDA GPUs only (bitsandbytes) and this machine has none; "
            f"use optimizer = \"{alt}\" instead" + (" (or Adafactor to save memory)" if alt == "AdamW" else ""))


def optimizer_class(name: str) -> Callable[..., torch.optim.Optimizer]:
    """The optimizer class ``name`` stands for, imported (raises OptimizerError naming the fix)."""
    spec = spec_of(name)
    if spec.cuda_only:
        import torch

        if not torch.cuda.is_available():
            raise OptimizerError(_no_cuda(name))
    found = getattr(_import(spec.module, spec.package, name), spec.attr, None)
    if found is None:
        raise OptimizerError(f"train.optimizer: {spec.module} has no {spec.attr!r}")
    cls: Callable[..., torch.optim.Optimizer] = found
    return cls


def optimizer_kwargs(name: str, lr: float, args: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments the optimizer is built with: kiln's defaults for it, ``optimizer_args`` (lists
    as tuples: TOML has no tuples) and the learning rate."""
    if "lr" in args:
        raise OptimizerError("train.optimizer_args: lr is not an optimizer argument here; set train.learning_rate "
                             "(or unet_lr / text_encoder_lr)")
    kwargs: dict[str, Any] = {**spec_of(name).defaults}
    kwargs.update({k: tuple(v) if isinstance(v, list) else v for k, v in args.items()})
    kwargs["lr"] = None if name == "Adafactor" and kwargs.get("relative_step") else lr
    return kwargs


def create_optimizer(name: str, param_groups: list[dict[str, Any]], lr: float,
                     args: dict[str, Any]) -> torch.optim.Optimizer:
    """Build the optimizer for ``param_groups`` (each may carry its own ``lr``)."""
    kwargs = optimizer_kwargs(name, lr, args)
    optimizer = optimizer_class(name)(param_groups, **kwargs)
    modes = _modes(optimizer)
    if modes is not None:
        modes.train()  # schedule-free optimizers start in evaluation mode and refuse to step there
    return optimizer


class _Modes(Protocol):
    """An optimizer with a train and an evaluation mode (the schedule-free family)."""

    def train(self) -> None: ...

    def eval(self) -> None: ...


def _modes(optimizer: object) -> _Modes | None:
    """The optimizer (inside accelerate's wrapper) as one with modes, or None when it has none."""
    inner: object = getattr(optimizer, "optimizer", optimizer)
    if callable(getattr(inner, "train", None)) and callable(getattr(inner, "eval", None)):
        return cast(_Modes, inner)
    return None


def is_schedule_free(optimizer: torch.optim.Optimizer) -> bool:
    """An optimizer with a train and an evaluation mode (the schedule-free family; accelerate's wrapper too)."""
    return _modes(optimizer) is not None


@contextlib.contextmanager
def evaluation_weights(optimizer: torch.optim.Optimizer | None) -> Iterator[None]:
    """For the duration, the parameters hold what a schedule-free optimizer evaluates with (its averaged
    weights): samples and saved files use them, as kohya does; training resumes in train mode after. Other
    optimizers: nothing happens."""
    modes = _modes(optimizer) if optimizer is not None else None
    if modes is None:
        yield
        return
    modes.eval()
    try:
        yield
    finally:
        modes.train()


def optimizer_problem(name: str) -> str | None:
    """Why ``name`` cannot be used on this machine (missing package, no CUDA), without importing it."""
    spec = spec_of(name)
    if spec.cuda_only:
        import torch

        if not torch.cuda.is_available():
            return _no_cuda(name)
    try:
        found = importlib.util.find_spec(spec.module) is not None
    except (ImportError, ValueError):  # a parent package missing
        found = False
    if not found:
        return f"train.optimizer: {name!r} needs the '{spec.package}' package: pip install {spec.package}"
    return None


def is_adaptive(name: str) -> bool:
    """Optimizers that choose their own step size (learning rate ~1.0)."""
    return family_of(name) == "adaptive"


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


def optimizer_label(optimizer: torch.optim.Optimizer) -> str:
    """kohya's ``ss_optimizer`` name: the optimizer class with its module (``torch.optim.adamw.AdamW``)."""
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
    cls = type(inner)
    return f"{cls.__module__}.{cls.__name__}"


def current_lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    """The effective learning rate per group (d * lr for DAdaptation / Prodigy)."""
    lrs = []
    for group in optimizer.param_groups:
        lr = group["lr"]
        if "d" in group:
            lr = group["d"] * lr
        lrs.append(float(lr))
    return lrs
