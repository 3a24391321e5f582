"""Stop, save-now and resume from the TUI (shared by the runs view and the training panel)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.text import Text


def confirm_stop(app: Any, run_dir: Path | None, after: Callable[[], object] | None = None) -> None:
    """Ask, then request a graceful stop (the trainer saves its LoRA and state, then exits)."""
    from train.runs.control import ControlError, stop_run
    from train.runs.state import read_run
    from tui.widgets.dialogs import ConfirmScreen

    if run_dir is None:
        app.notify("No run selected.", timeout=2)
        return
    info = read_run(run_dir)
    if not info.active:
        app.notify(Text(f"{info.name} is {info.state}: nothing to stop."), timeout=3)
        return

    def answered(yes: bool | None) -> None:
        if not yes:
            return
        try:
            stop_run(run_dir)
        except ControlError as exc:
            app.notify(Text(str(exc)), severity="warning")
            return
        app.notify(Text(f"Stopping {info.name}: it saves at its next step. r resumes it later."), timeout=5)
        if after:
            after()

    app.push_screen(ConfirmScreen(f"Stop {info.name}?", Text(
        f"The run saves its LoRA and resumable state at its next step (now {info.step}), then exits. "
        "Resume it later with r or `kiln resume`."), confirm_label="Stop"), answered)


def save_run_now(app: Any, run_dir: Path | None) -> None:
    from train.runs.control import ControlError, save_now

    if run_dir is None:
        app.notify("No run selected.", timeout=2)
        return
    try:
        info = save_now(run_dir)
    except ControlError as exc:
        app.notify(Text(str(exc)), severity="warning")
        return
    app.notify(Text(f"{info.name} saves a LoRA and its state at its next step."), timeout=4)


def resume_run(app: Any, run_dir: Path | None, after: Callable[[], object] | None = None) -> None:
    """Resume in the background (a worker thread runs the launcher; errors become notifications)."""
    import threading

    from train.runs.control import ControlError
    from train.runs.control import resume_run as resume

    if run_dir is None:
        app.notify("No run selected.", timeout=2)
        return

    def tell(callback: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            app.call_from_thread(callback, *args, **kwargs)
        except RuntimeError:
            pass  # the app was closed meanwhile; the run was launched all the same

    def work() -> None:
        try:
            launched = resume(run_dir)
        except ControlError as exc:
            tell(app.notify, Text(str(exc)), severity="warning", timeout=8)
            return
        pid = f" (pid {launched.pid})" if launched.pid else ""
        tell(app.notify, Text(f"Resumed {run_dir.name} in the background{pid}."), timeout=5)
        if after:
            tell(after)

    app.notify(Text(f"Resuming {run_dir.name}…"), timeout=3)
    threading.Thread(target=work, daemon=True, name="kiln-resume").start()
