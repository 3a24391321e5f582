"""Optimizer checks: the package and device it needs, its arguments against the class's real signature (and
one trial step on a dummy parameter), and learning rates that fit its family."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterator
from typing import TYPE_CHECKING

from train.preflight.core import Context, Finding, check, error, warning

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

    from train.config import TrainConfig

ADAPTIVE_LOW, ADAPTIVE_HIGH = 0.1, 10.0  # an adaptive optimizer's multiplier outside this is a mistake
FIXED_HIGH = 0.01  # a fixed step size at or above this wrecks a LoRA within a few steps
LION_WARN = 1e-3  # Lion wants 3-10x less than AdamW
FULL_HIGH = 1e-4  # a full fine-tune (network.type = "full") at or above this degrades the model (the seed: 1e-6)


@check("optimizer available")
def optimizer_available(ctx: Context) -> Iterator[Finding]:
    """The optimizer's package is installed; 8-bit (bitsandbytes) optimizers have a CUDA GPU."""
    from train.optim import optimizer_problem

    problem = optimizer_problem(ctx.cfg.train.optimizer)
    if problem:
        field, _, text = problem.partition(": ")
        yield error(field, text)


def accepted_arguments(cls: Callable[..., object]) -> list[str] | None:
    """The keyword arguments ``cls`` takes besides the parameters and ``lr`` (None: it takes any)."""
    try:
        params = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check against
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    names = [p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                   inspect.Parameter.KEYWORD_ONLY)]
    return [n for n in names[1:] if n != "lr"]  # the first is the parameters


@check("optimizer arguments")
def optimizer_arguments(ctx: Context) -> Iterator[Finding]:
    """Every ``optimizer_args`` key is an argument of the optimizer's real signature; then the optimizer is
    built with them and takes one step on a dummy parameter (what the first training step would do)."""
    from train.optim import OptimizerError, optimizer_class, optimizer_kwargs, optimizer_problem, spec_of

    t = ctx.cfg.train
    if optimizer_problem(t.optimizer):
        return  # "optimizer available" said why
    try:
        cls = optimizer_class(t.optimizer)
        kwargs = optimizer_kwargs(t.optimizer, ctx.cfg.unet_lr, t.optimizer_args)
    except OptimizerError as exc:
        field, _, text = str(exc).partition(": ")
        yield error(field, text)
        return
    accepted = accepted_arguments(cls)
    path = spec_of(t.optimizer).path
    if accepted is not None:
        unknown = [k for k in t.optimizer_args if k not in accepted]
        for key in unknown:
            close = difflib.get_close_matches(key, accepted, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
            kept = {k: v for k, v in t.optimizer_args.items() if k not in unknown}
            yield error(f"train.optimizer_args.{key}",
                        f"{t.optimizer} ({path}) has no argument {key!r}; {hint}it accepts: {', '.join(accepted)}",
                        fix=_set_args_line(kept))
        if unknown:
            return
    failure = _trial_step(cls, kwargs, ctx.cfg)
    if failure:
        yield error("train.optimizer_args", f"{t.optimizer} refuses these arguments "
                    f"({_show_args(t.optimizer_args)}): {failure}",
                    fix="change or remove the value it names in train.optimizer_args")


def _trial_step(cls: Callable[..., torch.optim.Optimizer], kwargs: dict[str, object], cfg: TrainConfig) -> str:
    """Build the optimizer over a dummy parameter group the way training does and take one step; what went
    wrong, or ''."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    weight = torch.nn.Parameter(torch.zeros(4, 4, device=device))
    try:
        optimizer = cls([{"params": [weight], "lr": cfg.unet_lr}], **kwargs)
        modes = getattr(optimizer, "train", None)
        if callable(modes):  # schedule-free optimizers step in train mode only (create_optimizer does this too)
            modes()
        weight.grad = torch.full_like(weight, 1e-3)
        optimizer.step()
    except Exception as exc:  # noqa: BLE001 - whatever the optimizer raises, its message is the finding
        return f"{type(exc).__name__}: {exc}"
    return ""


def _show_args(args: dict[str, object]) -> str:
    from train.config import toml_value

    return toml_value(args)


def _set_args_line(args: dict[str, object]) -> str:
    from train.config import toml_value

    return f"--set 'train.optimizer_args={toml_value(args)}'"


def learning_rates_in_effect(cfg: TrainConfig) -> list[tuple[str, float]]:
    """(field, value) of every learning rate the run uses: the UNet's and text encoders' (``learning_rate``
    where they are unset) and any other ``*_lr`` of ``[train]``; 0 (= not trained) is left out."""
    t = cfg.train
    found: dict[str, float] = {}
    if cfg.network.train_unet:
        found["train.unet_lr" if t.unet_lr is not None else "train.learning_rate"] = cfg.unet_lr
    if cfg.trains_text_encoder:
        lrs = cfg.text_encoder_lrs
        if len(set(lrs)) > 1:  # SDXL's TE1 / TE2 rates, each checked
            for index, value in enumerate(lrs):
                found[f"train.text_encoder_lr[{index}]"] = value
        else:
            found["train.text_encoder_lr" if t.text_encoder_lr is not None else "train.learning_rate"] = lrs[0]
    for name in type(t).model_fields:
        value = getattr(t, name)
        if name.endswith("_lr") and f"train.{name}" not in found and name not in ("unet_lr", "text_encoder_lr"):
            values = value if isinstance(value, list | tuple) else [value]
            for v in values:
                if isinstance(v, int | float) and not isinstance(v, bool) and v > 0:
                    found[f"train.{name}"] = float(v)
    return [(k, v) for k, v in found.items() if v > 0]


def _set_rate(cfg: TrainConfig, field: str, value: float) -> str:
    """The ``--set`` line giving ``field`` this rate; ``train.text_encoder_lr[1]`` (one of SDXL's two) sets
    the whole list with that entry replaced."""
    name, bracket, index = field.partition("[")
    if not bracket:
        return f"--set {field}={_fmt(value)}"
    rates = list(cfg.text_encoder_lrs)
    rates[int(index.rstrip("]"))] = value
    return f"--set '{name}=[{', '.join(_fmt(r) for r in rates)}]'"


def _fmt(value: float) -> str:
    return f"{value:g}"


@check("learning rates")
def learning_rates(ctx: Context) -> Iterator[Finding]:
    """Learning rates fit the optimizer's family: adaptive ones (Prodigy, DAdapt*) near 1.0, fixed-step ones
    (AdamW, Lion, Adafactor without relative_step, SGD, schedule-free) below 0.01."""
    from train.optim import family_of, spec_of

    t = ctx.cfg.train
    family = family_of(t.optimizer, t.optimizer_args)
    spec = spec_of(t.optimizer)
    accept = t.allow_unusual_lr
    make = warning if accept else error
    override = " (accepted: train.allow_unusual_lr = true)" if accept else ""
    escape = " (or --set train.allow_unusual_lr=true to train with it anyway)"
    for field, value in learning_rates_in_effect(ctx.cfg):
        is_te = "text_encoder" in field
        if family == "adaptive" and t.optimizer != "Adafactor" and not ADAPTIVE_LOW <= value <= ADAPTIVE_HIGH:
            yield make(field, f"{_fmt(value)} is far from 1.0: {t.optimizer} chooses the step size itself and the "
                       f"learning rate only scales it; the usual range is {spec.lr_range}{override}",
                       fix=_set_rate(ctx.cfg, field, 1.0) + escape)
        elif family in ("fixed", "schedule-free") and ctx.cfg.network.type == "full" and value >= FULL_HIGH:
            yield make(field, f"{_fmt(value)} is high for a full fine-tune: it changes the model's own weights, "
                       f"which degrade at LoRA rates; the usual range is 1e-7 to 1e-5 (the seed's SDXL fine-tune: "
                       f"1e-6){override}", fix=_set_rate(ctx.cfg, field, 1e-6) + escape)
        elif family in ("fixed", "schedule-free") and value >= FIXED_HIGH:
            usual = spec.usual_lr / 2 if is_te and spec.usual_lr < 1e-3 else spec.usual_lr
            ratio = value / usual
            times = f"{ratio:.0f}" if ratio < 1e6 else f"{ratio:.0e}"
            yield make(field, f"{_fmt(value)} is a step size {times}x the usual {_fmt(usual)} for "
                       f"{t.optimizer}, which takes the learning rate as its step size: the LoRA's weights blow "
                       f"up within a few steps; the usual range is {spec.lr_range}{override}",
                       fix=_set_rate(ctx.cfg, field, usual) + escape)
        elif family == "fixed" and "Lion" in t.optimizer and value >= LION_WARN:
            yield warning(field, f"{_fmt(value)} is high for {t.optimizer}: Lion's sign updates want a learning "
                          f"rate 3-10x lower than AdamW's ({spec.lr_range})", fix=f"--set {field}=3e-05")
