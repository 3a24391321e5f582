"""Run a training script with step timing and peak-memory probes patched in at runtime (no file of the script
is changed), the same way for kohya sd-scripts and for `kiln train`, so both sides are measured alike.

    python bench/step_probe.py --stats OUT.json [--warmup N] --script PATH -- ARGS...   (e.g. train_network.py)
    python bench/step_probe.py --stats OUT.json [--warmup N] --module NAME -- ARGS...   (e.g. tui.cli train ...)

What it records, written to ``--stats`` as JSON when the process ends (also after an error or ``sys.exit``):
  - ``step_t``: the wall-clock time (``time.time()``) after every optimizer step, taken from PyTorch's global
    optimizer step post-hook (``torch.optim.optimizer.register_optimizer_step_post_hook``) after a
    ``torch.cuda.synchronize()``, so a step's GPU work is finished when its time is taken. Any optimizer that
    subclasses ``torch.optim.Optimizer`` (torch's AdamW, bitsandbytes' AdamW8bit, ...) fires it; accelerate's
    wrapper (which steps the inner optimizer) is ignored so that a step counts once, and so is an optimizer over a
    single parameter tensor (kiln's pre-flight takes one trial step on a dummy parameter before loading).
  - ``peak_allocated_mib`` / ``peak_reserved_mib``: ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved``
    over the whole process. A script that resets the peak counters (kiln does, between caching and training) would
    hide its earlier peak, so ``torch.cuda.reset_peak_memory_stats`` is wrapped to fold the peak so far into the
    record first.
  - ``train_peak_allocated_mib`` / ``train_peak_reserved_mib``: the peaks after the ``--warmup`` steps (the probe
    folds and resets the counters there): the steady training peak, apart from loading and caching.
  - ``probe_start_t`` and ``launch_t`` (the parent's launch time, from the ``BENCH_LAUNCH_T`` environment
    variable), so time to the first step counts interpreter start, imports, loading and caching.

It imports nothing but the standard library and torch, so it runs under any environment's python (kohya's venv
has kiln's packages in other versions).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import runpy
import sys
import time
import traceback
from pathlib import Path
from typing import Any

_state: dict[str, Any] = {
    "probe_start_t": time.time(),
    "launch_t": None,
    "step_t": [],
    "peak_allocated_mib": None,
    "peak_reserved_mib": None,
    "train_peak_allocated_mib": None,
    "train_peak_reserved_mib": None,
    "device": "cpu",
    "exit": None,
}
_peaks = {"allocated": 0, "reserved": 0}
_written = False


def _cuda_ready() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_initialized())  # type: ignore[no-untyped-call]


def _fold_peaks() -> None:
    """Fold the CUDA peak counters into the running maxima (before a reset, and at the end)."""
    import torch

    if _cuda_ready():
        _peaks["allocated"] = max(_peaks["allocated"], torch.cuda.max_memory_allocated())
        _peaks["reserved"] = max(_peaks["reserved"], torch.cuda.max_memory_reserved())


def _install(warmup: int) -> None:
    import torch
    import torch.optim.optimizer as optim_module

    original_reset = torch.cuda.reset_peak_memory_stats

    def reset_peak_memory_stats(device: Any = None) -> None:
        _fold_peaks()
        original_reset(device)

    torch.cuda.reset_peak_memory_stats = reset_peak_memory_stats
    torch.cuda.memory.reset_peak_memory_stats = reset_peak_memory_stats

    def after_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if type(optimizer).__module__.startswith("accelerate"):
            return  # accelerate's wrapper: the inner optimizer's step is the one counted
        if sum(len(group["params"]) for group in optimizer.param_groups) < 2:
            return  # a trial step over one lone parameter (kiln's pre-flight) is not a training step
        if _cuda_ready():
            torch.cuda.synchronize()
        _state["step_t"].append(time.time())
        if len(_state["step_t"]) == warmup and _cuda_ready():
            _fold_peaks()
            _state["overall_before_train"] = dict(_peaks)
            original_reset(None)

    optim_module.register_optimizer_step_post_hook(after_step)


def _write(path: Path) -> None:
    global _written
    if _written:
        return
    _written = True
    try:
        import torch

        if _cuda_ready():
            before = _state.pop("overall_before_train", None)
            train_alloc = torch.cuda.max_memory_allocated()
            train_reserved = torch.cuda.max_memory_reserved()
            _fold_peaks()
            _state["device"] = torch.cuda.get_device_name(0)
            _state["peak_allocated_mib"] = round(_peaks["allocated"] / 2**20, 1)
            _state["peak_reserved_mib"] = round(_peaks["reserved"] / 2**20, 1)
            if before is not None:
                _state["train_peak_allocated_mib"] = round(train_alloc / 2**20, 1)
                _state["train_peak_reserved_mib"] = round(train_reserved / 2**20, 1)
        _state["torch"] = torch.__version__
    except Exception as exc:  # noqa: BLE001 - the stats file must be written whatever broke at exit
        _state["probe_error"] = repr(exc)
    _state.pop("overall_before_train", None)
    _state["end_t"] = time.time()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_state, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stats", type=Path, required=True, help="where to write the JSON record")
    parser.add_argument("--warmup", type=int, default=0, help="steps after which the training peak is counted")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--script", type=Path, help="a script to run as __main__ (its folder becomes sys.path[0])")
    target.add_argument("--module", help="a module to run as __main__ (python -m NAME)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="-- then the target's arguments")
    ns = parser.parse_args()
    args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
    launch = os.environ.get("BENCH_LAUNCH_T")
    _state["launch_t"] = float(launch) if launch else _state["probe_start_t"]
    stats: Path = ns.stats
    atexit.register(_write, stats)
    _install(ns.warmup)
    code = 0
    try:
        if ns.script is not None:
            script = ns.script.resolve()
            sys.argv = [str(script), *args]
            sys.path[0] = str(script.parent)
            runpy.run_path(str(script), run_name="__main__")
        else:
            sys.argv = [ns.module, *args]
            sys.path[0] = os.getcwd()
            runpy.run_module(ns.module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - record the failure, then exit non-zero
        _state["error"] = traceback.format_exc()[-4000:]
        traceback.print_exc()
        code = 1
    _state["exit"] = code
    _write(stats)
    return code


if __name__ == "__main__":
    sys.exit(main())
