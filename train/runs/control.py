"""Control a run from outside its process: stop (it saves first), save now, resume, launch.

Stop and save-now are requests the trainer polls between steps (``stop.request`` / ``save.request`` in the run
directory), so they work from any terminal or machine that sees the folder. Resume and launch always start the
trainer detached (its own process session): closing the terminal or the TUI never stops a run.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from train.rundir import read_pid, request_save, request_stop
from train.runs.state import RunInfo, read_run

LAUNCH_TIMEOUT_S = 300.0  # the launcher validates the config (and scans nothing heavy) before detaching


class ControlError(RuntimeError):
    """The request cannot be made; the message says why and what to do."""


@dataclass
class Launched:
    run_dir: Path
    pid: int | None
    output: str  # what the launcher printed (how to watch / stop)


def stop_run(run_dir: Path) -> RunInfo:
    """Ask a running trainer to save and stop at its next step. Raises ControlError if it is not running."""
    info = read_run(run_dir)
    if not info.active:
        raise ControlError(f"{info.name} is {info.state}: nothing to stop")
    request_stop(run_dir)
    return info


def save_now(run_dir: Path) -> RunInfo:
    """Ask a running trainer to save a LoRA (and its resumable state) at its next step."""
    info = read_run(run_dir)
    if not info.active:
        raise ControlError(f"{info.name} is {info.state}: only a running run can save")
    request_save(run_dir)
    return info


def wait_until_inactive(run_dir: Path, timeout: float | None = None, poll: float = 0.5) -> RunInfo:
    """Poll until the run is no longer starting/running (or ``timeout`` seconds passed)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        info = read_run(run_dir)
        if not info.active or (deadline is not None and time.monotonic() > deadline):
            return info
        time.sleep(poll)


def resume_run(run_dir: Path, overrides: list[str] | None = None, *, force: bool = False) -> Launched:
    """Continue a stopped (or dead / failed) run from its ``state/``: ``kiln train --resume RUN_DIR --detach``
    (which first prints what it resumes and refuses unsafe config changes; ``force`` accepts LR changes)."""
    run_dir = Path(run_dir).resolve()
    info = read_run(run_dir)
    if info.active:
        raise ControlError(f"{info.name} is {info.state}: it is already going (kiln watch {run_dir})")
    if info.state == "finished" and not overrides:
        raise ControlError(f"{info.name} finished; to train further, resume with more steps, e.g. "
                           f"--set train.max_steps={max(info.step * 2, 1)}")
    if not info.resumable:
        raise ControlError(f"{info.name} has no saved state/ to resume from (it is saved when a run is stopped, "
                           "with save-now, or with output.save_state = true)")
    argv = ["--resume", str(run_dir)]
    for item in overrides or []:
        argv += ["--set", item]
    if force:
        argv.append("--force")
    return _launch(argv, run_dir)


def launch_run(config_path: Path, run_dir: Path, overrides: list[str] | None = None) -> Launched:
    """Start a new run from a config file, detached (``kiln train CONFIG --detach``)."""
    argv = [str(Path(config_path).resolve())]
    for item in overrides or []:
        argv += ["--set", item]
    return _launch(argv, Path(run_dir).resolve())


def _launch(argv: list[str], run_dir: Path) -> Launched:
    """Run ``kiln train ARGV --detach``: it returns once the background trainer has written its pid to the run
    directory (and registered the run), or says why it could not start it."""
    cmd = [sys.executable, "-m", "train.cli", *argv, "--detach"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ControlError(f"the trainer did not start within {LAUNCH_TIMEOUT_S:.0f} s") from None
    except OSError as exc:
        raise ControlError(f"cannot start the trainer: {exc}") from None
    if proc.returncode != 0:
        lines = [line.removeprefix("kiln train: ") for line in proc.stderr.strip().splitlines()]
        raise ControlError("\n".join(lines) or f"the trainer exited with code {proc.returncode}")
    return Launched(run_dir=run_dir, pid=read_pid(run_dir), output=proc.stdout)
