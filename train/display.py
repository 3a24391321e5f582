"""The foreground display: consumes the same events that go to events.jsonl.

``RichDisplay`` draws a progress bar (loss, LR, it/s, ETA) on a terminal; ``PlainDisplay`` prints one line per
phase/save/warning and a step line every few seconds when output is piped or logged. A richer live view can
replace either: anything with ``__call__(event)`` and ``close()`` works.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Protocol, TextIO

from rich.console import Console
from rich.text import Text

from curator.textsafe import printable
from train.rundir import Event
from train.runs.track import describe_event

if TYPE_CHECKING:
    from rich.progress import TaskID


class Display(Protocol):
    def __call__(self, event: Event) -> None: ...

    def close(self) -> None: ...


class PlainDisplay:
    """Line output for pipes and logs; step lines at most every ``interval`` seconds."""

    def __init__(self, stream: TextIO | None = None, interval: float = 10.0) -> None:
        self.stream = stream or sys.stdout
        self.interval = interval
        self._last = 0.0

    def __call__(self, event: Event) -> None:
        if event["type"] == "step":
            now = time.monotonic()
            if now - self._last < self.interval and event["step"] != event.get("total_steps"):
                return
            self._last = now
        if event["type"] == "phase" and event.get("total") and event.get("done") not in (0, event.get("total")):
            return
        line = describe_event(event)
        if line:
            print(printable(line), file=self.stream, flush=True)

    def close(self) -> None:
        pass


class RichDisplay:
    """A progress bar for the foreground on a terminal."""

    def __init__(self, console: Console | None = None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = console or Console(stderr=False)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=self.console, transient=False,
        )
        self.task: TaskID | None = None
        self.phase_task: TaskID | None = None
        self.progress.start()

    def __call__(self, event: Event) -> None:
        kind = event["type"]
        if kind == "start":
            self.progress.console.print(Text(printable(describe_event(event) or "")))
            self.task = self.progress.add_task("train", total=event["total_steps"],
                                               completed=event.get("resumed_step", 0), info="")
        elif kind == "phase":
            if self.phase_task is None or self.progress.tasks[self.phase_task].description != event["phase"]:
                self.phase_task = self.progress.add_task(event["phase"], total=event.get("total") or None, info="")
            self.progress.update(self.phase_task, completed=event.get("done") or 0, total=event.get("total") or None)
        elif kind == "step" and self.task is not None:
            lr = event.get("lr") or [0.0]
            info = f"loss {event['loss']:.4f} avg {event['avg_loss']:.4f} lr {lr[0]:.2e} {event['it_s']:.2f} it/s"
            self.progress.update(self.task, completed=event["step"], info=info)
        else:
            line = describe_event(event)
            if line:
                style = "red" if kind == "error" else "yellow" if kind == "warning" else ""
                self.progress.console.print(Text(printable(line), style=style))

    def close(self) -> None:
        self.progress.stop()


def make_display(quiet: bool | None = None) -> Display:
    """Rich on a terminal, plain lines when piped (``quiet`` forces plain)."""
    if quiet or (quiet is None and not sys.stdout.isatty()):
        return PlainDisplay()
    from train.runs.live import LiveDisplay  # the same live view `kiln watch` shows

    return LiveDisplay()
