"""Device checks: the mixed precision the device can do, the attention backend, the number of processes."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

from train.preflight.core import Context, Finding, check, error, warning


@check("mixed precision")
def mixed_precision(ctx: Context) -> Iterator[Finding]:
    """fp16/bf16 need a CUDA GPU; bf16 needs an Ampere or newer one (compute capability 8.0+)."""
    choice, device = ctx.cfg.train.mixed_precision, ctx.device
    if choice in ("fp16", "bf16") and not device.cuda:
        yield error("train.mixed_precision", f"{choice!r} needs a CUDA GPU and this machine has none: on the CPU "
                    f"kiln trains in fp32 ({'no fp16 autocast exists there' if choice == 'fp16' else 'bf16 there is emulated and many times slower'})",
                    fix="--set train.mixed_precision=no (or auto: bf16/fp16 on a GPU, fp32 on the CPU)")
    elif choice == "bf16" and not device.bf16:
        cc = ".".join(str(n) for n in device.capability or ())
        yield error("train.mixed_precision", f"'bf16' needs an Ampere or newer GPU (compute capability 8.0+); "
                    f"{device.name} is {cc} and only emulates bf16, many times slower",
                    fix="--set train.mixed_precision=fp16 (or auto)")


@check("attention backend")
def attention_backend(ctx: Context) -> Iterator[Finding]:
    """The attention implementation and the scaled-dot-product kernel asked for are installed (xformers) and can
    run here (CUDA): said before loading anything (PyTorch would fail at the first step with 'No available
    kernel')."""
    backend = ctx.cfg.train.sdpa_backend
    if backend in ("flash", "efficient", "cudnn") and not ctx.device.cuda:
        yield error("train.sdpa_backend", f"{backend!r} is a CUDA kernel and this machine has no CUDA GPU",
                    fix="--set train.sdpa_backend=auto (or math)")
    if ctx.cfg.train.attention != "xformers":
        return
    if importlib.util.find_spec("xformers") is None:
        yield error("train.attention", "'xformers' is not installed",
                    fix="pip install xformers (the build matching your torch), or --set train.attention=sdpa "
                        "(PyTorch's own, as fast on torch 2)")
    elif not ctx.device.cuda:
        yield error("train.attention", "'xformers' runs on CUDA GPUs only and this machine has none",
                    fix="--set train.attention=sdpa")


@check("processes")
def processes(ctx: Context) -> Iterator[Finding]:
    """--num-processes is not more than the GPUs there are (CPU processes use gloo and are not limited)."""
    device = ctx.device
    if device.cuda and ctx.num_processes > device.count:
        yield error("--num-processes", f"{ctx.num_processes} processes but this machine has {device.count} "
                    f"GPU{'s' * (device.count != 1)}: each process trains on its own GPU",
                    fix=f"--num-processes {device.count}")


def _mixed_here(ctx: Context) -> str:
    """The mixed precision this run gets on this device (``auto`` resolved as the trainer resolves it)."""
    choice, device = ctx.cfg.train.mixed_precision, ctx.device
    if choice != "auto":
        return choice
    if not device.cuda:
        return "no"
    return "bf16" if device.bf16 else "fp16"


@check("full fp16 / bf16 training")
def full_precision_training(ctx: Context) -> Iterator[Finding]:
    """``full_fp16`` / ``full_bf16`` keep the network, its gradients and the optimizer state in the mixed
    precision's dtype: they need that mixed precision on this device (``auto`` picks bf16 on Ampere+, fp16 on
    older GPUs, none on the CPU)."""
    t = ctx.cfg.train
    mixed = _mixed_here(ctx)
    for flag, wanted in (("full_fp16", "fp16"), ("full_bf16", "bf16")):
        if not getattr(t, flag) or mixed == wanted:
            continue
        if not ctx.device.cuda:
            yield error(f"train.{flag}", f"it needs {wanted} mixed precision, which needs a CUDA GPU, and this "
                        "machine has none (the CPU trains in fp32)", fix=f"--set train.{flag}=false")
        elif wanted == "bf16" and not ctx.device.bf16:
            yield error(f"train.{flag}", f"it needs bf16, and {ctx.device.name} only emulates it",
                        fix="--set train.full_bf16=false --set train.full_fp16=true --set train.mixed_precision=fp16")
        else:
            yield error(f"train.{flag}", f"it needs mixed precision {wanted}, and this run's is {mixed!r} "
                        f"(train.mixed_precision = {t.mixed_precision!r} on this device)",
                        fix=f"--set train.mixed_precision={wanted}")


@check("fp8 base weights")
def fp8_base_weights(ctx: Context) -> Iterator[Finding]:
    """``fp8_base`` / ``fp8_base_unet`` store the frozen weights in float8 (e4m3), up-cast per layer: the
    installed torch has the dtype; without mixed precision every layer is up-cast to fp32 (a warning: the
    memory is saved, but the frozen weights lose precision for nothing a bf16/fp16 run would not also lose)."""
    import torch

    from train.precision import FP8

    t = ctx.cfg.train
    flag = "fp8_base" if t.fp8_base else "fp8_base_unet" if t.fp8_base_unet else None
    if flag is None:
        return
    if not hasattr(torch, FP8):
        yield error(f"train.{flag}", f"this torch ({torch.__version__}) has no {FP8} dtype",
                    fix=f"pip install -U torch (2.1 or newer), or --set train.{flag}=false")
    elif _mixed_here(ctx) == "no":
        yield warning(f"train.{flag}", "without mixed precision the float8 weights are up-cast to fp32 in every "
                      "layer: memory is saved, speed is not (kohya uses fp8_base with bf16/fp16)",
                      fix="--set train.mixed_precision=auto (on a GPU)")
