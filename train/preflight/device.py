"""Device checks: the mixed precision the device can do, the attention backend, the number of processes."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

from train.preflight.core import Context, Finding, check, error


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
