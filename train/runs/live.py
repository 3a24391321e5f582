"""The live display of a run, in the terminal (rich): progress, speed, ETA, losses, LR, memory, a loss chart,
the last saved file and sample, and the latest log lines.

Two ways in:
- in process: ``LiveDisplay()`` is a trainer listener (``__call__(event)`` + ``close()``), so ``kiln train`` in
  the foreground can pass it to ``train.loop.train(listeners=[display])``;
- from the run directory: ``follow(run_dir, display)`` tails ``events.jsonl`` (``kiln watch``), and ends when
  the run ends or its process dies. Watching never touches the run.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from curator.textsafe import printable
from train.rundir import Event, Listener
from train.runs.chart import loss_chart
from train.runs.state import RunInfo, read_run
from train.runs.tail import EventTail
from train.runs.track import RunTracker, fmt_duration, fmt_loss, fmt_lr, fmt_mem

STATE_STYLES = {"running": "bold green", "starting": "yellow", "finished": "bold blue", "stopped": "magenta",
                "failed": "bold red", "dead": "bold red"}


def render_run(tracker: RunTracker, *, width: int = 100, state: str | None = None, info: RunInfo | None = None,
               chart_height: int = 10, log_lines: int = 6, now: float | None = None) -> RenderableType:
    """One frame of the display (a rich renderable); ``state``/``info`` override what the events say."""
    state = state or tracker.state
    title = Text()
    title.append(printable(tracker.name or (info.name if info else "run")), style="bold")
    title.append("  ")
    title.append(state, style=STATE_STYLES.get(state, ""))
    if state in ("starting", "running") and tracker.phase and tracker.phase != "training":
        phase = tracker.phase + (f" {tracker.phase_done}/{tracker.phase_total}" if tracker.phase_total else "")
        title.append(f"  {printable(phase)}", style="yellow")

    total = tracker.total_steps or (info.total_steps if info else None)
    step = tracker.step or (info.step if info else 0)
    bar_row = Table.grid(padding=(0, 1), expand=True)
    bar_row.add_column(ratio=1)
    bar_row.add_column(no_wrap=True)
    pct = f"{100 * step / total:5.1f}%" if total else ""
    bar_row.add_row(ProgressBar(total=float(total or 1), completed=float(step if total else 0)),
                    Text(f"step {step}/{total or '?'} {pct}  epoch {tracker.epoch or '?'}/{tracker.epochs or '?'}"))

    stats = Table.grid(padding=(0, 2))
    for _ in range(4):
        stats.add_column(style="grey62", no_wrap=True)
        stats.add_column(no_wrap=True)
    elapsed = tracker.elapsed(now, active=state in ("starting", "running"))
    eta = tracker.eta_s if state == "running" else None
    stats.add_row("speed", f"{tracker.it_s:.2f} it/s" if tracker.it_s else "—", "ETA", fmt_duration(eta),
                  "elapsed", fmt_duration(elapsed), "memory", fmt_mem(tracker.mem_mb))
    stats.add_row("loss", fmt_loss(tracker.loss), "avg (epoch)", fmt_loss(tracker.avg_loss),
                  "LR", fmt_lr(tracker.lr), "device", printable(tracker.device) or "—")
    if tracker.val_losses:
        stats.add_row("val", fmt_loss(tracker.val_loss), "at step", str(tracker.val_steps[-1]),
                      "best val", fmt_loss(min(tracker.val_losses)), "", "")

    parts: list[RenderableType] = [title, bar_row, stats]
    chart_w = max(20, width - 4)
    parts.append(loss_chart(tracker.steps, tracker.losses, chart_w, chart_height, total_steps=total,
                            val_steps=tracker.val_steps, val_losses=tracker.val_losses))
    files = Table.grid(padding=(0, 1))
    files.add_column(style="grey62", no_wrap=True)
    files.add_column(overflow="fold")
    files.add_row("saved", Text(printable(tracker.last_save or "—")))
    files.add_row("sample", Text(printable(tracker.last_sample or "—")))
    parts.append(files)
    if tracker.end_message and state in ("failed", "stopped"):
        parts.append(Text(printable(tracker.end_message.strip().splitlines()[-1]),
                          style="red" if state == "failed" else "magenta"))
    if info is not None and state == "dead":
        parts.append(Text(printable(info.message), style="bold red"))
        if info.log_tail:
            parts.append(Text("last lines of train.log:", style="grey62"))
            parts.append(Text("\n".join(info.log_tail[-log_lines * 2:]), style="red"))
    elif log_lines and tracker.log:
        log = Text(no_wrap=True, overflow="ellipsis")
        for line in list(tracker.log)[-log_lines:]:
            style = {"error": "red", "warning": "yellow", "save": "green", "sample": "cyan"}.get(line.kind, "grey70")
            stamp = time.strftime("%H:%M:%S", time.localtime(line.t))
            log.append(f"{stamp} ", style="grey50")
            log.append(line.text.splitlines()[0] if line.text else "", style=style)
            log.append("\n")
        log.rstrip()
        parts.append(log)
    subtitle = Text(printable(tracker.run_dir or (str(info.dir) if info else "")), style="grey50")
    return Panel(Group(*parts), title="kiln", title_align="left", subtitle=subtitle, subtitle_align="left",
                 width=width)


class LiveDisplay:
    """A rich ``Live`` view of a run, fed with events. Use as a trainer listener or with :func:`follow`."""

    def __init__(self, console: Console | None = None, refresh_per_second: float = 4.0,
                 tracker: RunTracker | None = None, transient: bool = False) -> None:
        from rich.live import Live

        self.console = console or Console()
        self.tracker = tracker or RunTracker()
        self.state: str | None = None
        self.info: RunInfo | None = None
        self._live = Live(console=self.console, refresh_per_second=refresh_per_second, transient=transient,
                          get_renderable=self.renderable, auto_refresh=True)
        self._started = False

    def renderable(self) -> RenderableType:
        width = min(self.console.width, 140)
        height = self.console.height or 30
        chart_height = max(5, min(14, height - 18))
        return render_run(self.tracker, width=width, state=self.state, info=self.info, chart_height=chart_height)

    def start(self) -> None:
        if not self._started:
            self._live.start()
            self._started = True

    def __call__(self, event: Event) -> None:
        self.tracker.feed(event)
        self.start()

    def feed_all(self, events: list[Event]) -> None:
        self.tracker.feed_all(events)
        self.start()

    def refresh(self) -> None:
        if self._started:
            self._live.refresh()

    def close(self) -> None:
        if self._started:
            self._live.refresh()
            self._live.stop()
            self._started = False


def follow(run_dir: Path, display: Listener, *, poll: float = 0.5, state_every: float = 2.0,
           stop_when_ended: bool = True, timeout: float | None = None) -> RunInfo:
    """Feed ``display`` (a LiveDisplay, or any callable taking events) from ``run_dir/events.jsonl`` until the
    run ends (or dies, or ``timeout`` seconds pass). Returns the run's final state. Only reads files."""
    run_dir = Path(run_dir)
    tail = EventTail(run_dir / "events.jsonl")
    deadline = None if timeout is None else time.monotonic() + timeout
    next_state = 0.0
    info = read_run(run_dir)
    while True:
        events = tail.read_new()
        if tail.reset and isinstance(display, LiveDisplay):
            display.tracker = RunTracker()  # the run was started over (--force): forget the old one
        if events:
            if hasattr(display, "feed_all"):
                display.feed_all(events)
            else:
                for event in events:
                    display(event)
        now = time.monotonic()
        if now >= next_state:
            info = read_run(run_dir)
            next_state = now + state_every
            if isinstance(display, LiveDisplay):
                display.info = info
                display.state = info.state
                display.start()
                display.refresh()
        if stop_when_ended and not info.active:
            events = tail.read_new()  # the end event may have landed after the state check
            if events:
                if hasattr(display, "feed_all"):
                    display.feed_all(events)
                else:
                    for event in events:
                        display(event)
            return info
        if deadline is not None and now > deadline:
            return info
        time.sleep(poll)
