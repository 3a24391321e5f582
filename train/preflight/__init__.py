"""Pre-flight: every check that can tell, before the model loads, that a run would fail or train garbage.

``kiln train --check``, every real launch and the TUI's run form call :func:`run_preflight`. The checks live
in this package's modules, one small function each, registered with :func:`~train.preflight.core.check`:
``optimizer.py`` (package, arguments vs the real signature, learning rates per family), ``device.py`` (mixed
precision, full fp16/bf16, fp8 base weights, attention backend, processes), ``model.py`` (base model, VAE,
init_from, resolution, loss options and zero-terminal SNR for the prediction type, block dims and text
encoder rates for the architecture), ``storage.py`` (output folder, free disk), ``data.py`` (dataset folder,
batch size vs buckets, validation split, loss masks), ``schedule.py`` (LR phases), ``sampling.py`` (sample
prompts). A new option's check is one more function in the module of its concern (or a new module listed in
:data:`CHECK_MODULES`).
"""

from __future__ import annotations

import importlib

from train.preflight.core import (
    CHECKS,
    Check,
    Context,
    DeviceFacts,
    Finding,
    PreflightError,
    Report,
    check,
    error,
    full_preflight,
    run_preflight,
    warning,
)

CHECK_MODULES = ("optimizer", "device", "model", "storage", "data", "schedule", "sampling")

__all__ = ["CHECKS", "CHECK_MODULES", "Check", "Context", "DeviceFacts", "Finding", "PreflightError", "Report",
           "check", "error", "full_preflight", "load_checks", "run_preflight", "warning"]


def load_checks() -> None:
    """Import every check module (each registers its checks once)."""
    for name in CHECK_MODULES:
        importlib.import_module(f"train.preflight.{name}")
