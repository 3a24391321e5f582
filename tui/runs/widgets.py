"""Widgets showing a run: the run list, a header with progress and figures, the loss chart, the event log."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import RenderableType
from rich.text import Text
from textual.widget import Widget
from textual.widgets import DataTable

from curator.textsafe import printable
from train.runs.chart import loss_chart
from train.runs.live import STATE_STYLES
from train.runs.state import RunInfo
from train.runs.track import RunTracker, fmt_duration, fmt_loss, fmt_lr, fmt_mem


def state_text(state: str, stop_requested: bool = False) -> Text:
    text = Text(state, style=STATE_STYLES.get(state, ""))
    if stop_requested and state in ("starting", "running"):
        text.append(" (stopping)", style="magenta")
    return text


def progress_text(step: int, total: int | None) -> str:
    if not total:
        return str(step) if step else "—"
    return f"{step}/{total} {100 * step / total:.0f}%"


class RunTable(DataTable):
    """The known runs, newest first; the row key is the run directory."""

    DEFAULT_CSS = "RunTable { height: 1fr; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._shown: tuple | None = None

    COLUMNS = (("Name", "name"), ("State", "state"), ("Progress", "progress"), ("Loss", "loss"),
               ("Started", "started"))

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = False
        self._widths: tuple[int, ...] = ()

    def show_runs(self, runs: list[RunInfo], watched: Path | None) -> None:
        shown = (watched, [(r.dir, r.name, r.state, r.stop_requested, r.step, r.total_steps, r.loss, r.started_at)
                           for r in runs])
        if shown == self._shown:
            return  # nothing new: keep the table (and its cursor) as it is
        self._shown = shown
        keep = self.cursor_row_key()
        rows = []
        for run in runs:
            started = time.strftime("%m-%d %H:%M", time.localtime(run.started_at)) if run.started_at else "—"
            marker = "▶ " if run.dir == watched else "  "
            rows.append((run, [Text(marker + printable(run.name), style="bold" if run.dir == watched else ""),
                               state_text(run.state, run.stop_requested),
                               Text(progress_text(run.step, run.total_steps)), Text(fmt_loss(run.loss)),
                               Text(started)]))
        # Column widths from the cells themselves: DataTable's own auto-width is settled on a later idle tick,
        # and a picture taken before that (or a refresh racing it) showed every column cut to its title.
        widths = tuple(max([len(label), *(cells[n].cell_len for _, cells in rows)])
                       for n, (label, _) in enumerate(self.COLUMNS))
        self.clear(columns=widths != self._widths)
        if widths != self._widths:
            self._widths = widths
            for (label, key), width in zip(self.COLUMNS, widths, strict=True):
                self.add_column(label, key=key, width=width)
        for run, cells in rows:
            self.add_row(*cells, key=str(run.dir))
        target = keep or (str(watched) if watched else None)
        if target is not None:
            for index, run in enumerate(runs):
                if str(run.dir) == target:
                    self.move_cursor(row=index, animate=False)
                    break

    def cursor_row_key(self) -> str | None:
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001 - no rows
            return None


class RunHeader(Widget):
    """Name, state, phase; a progress bar; speed, ETA, elapsed, memory, losses, LR; last save and sample.
    Drawn at render time, so the bar always fits the current width."""

    DEFAULT_CSS = "RunHeader { height: auto; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tracker: RunTracker | None = None
        self.info: RunInfo | None = None
        self.compact = False

    def show(self, tracker: RunTracker | None, info: RunInfo | None, compact: bool = False) -> None:
        self.tracker, self.info, self.compact = tracker, info, compact
        self.refresh(layout=True)

    def render(self) -> RenderableType:
        return header_renderable(self.tracker, self.info, self.content_size.width or 80, compact=self.compact)


def header_renderable(tracker: RunTracker | None, info: RunInfo | None, width: int,
                      compact: bool = False) -> RenderableType:
    if tracker is None or info is None and not tracker.name:
        return Text("No run watched. Start one with n (new run) or `kiln train CONFIG --detach`.",
                    style="italic grey62")
    state = info.state if info else tracker.state
    title = Text(no_wrap=True, overflow="ellipsis")
    title.append(printable(tracker.name or (info.name if info else "")), style="bold")
    title.append("  ")
    title.append_text(state_text(state, bool(info and info.stop_requested)))
    if state in ("starting", "running") and tracker.phase and tracker.phase != "training":
        title.append("  " + printable(tracker.phase), style="yellow")
        if tracker.phase_total:
            title.append(f" {tracker.phase_done}/{tracker.phase_total}", style="yellow")
    total = tracker.total_steps or (info.total_steps if info else None)
    step = tracker.step or (info.step if info else 0)
    bar_w = max(5, width - 30)
    frac = step / total if total else 0.0
    filled = int(round(frac * bar_w))
    bar = Text(no_wrap=True)
    bar.append("━" * filled, style="green" if state != "failed" else "red")
    bar.append("━" * (bar_w - filled), style="grey30")
    bar.append(f" {step}/{total or '?'}" + (f" {100 * frac:.0f}%" if total else ""))
    lines: list[RenderableType] = [title, bar]
    active = state in ("starting", "running")
    eta = tracker.eta_s if state == "running" else None
    speed = f"{tracker.it_s:.2f} it/s" if tracker.it_s and active else "—"
    epoch = f"{tracker.epoch or '?'}/{tracker.epochs or '?'}"
    elapsed = tracker.elapsed(active=active)

    def figures(*pairs: tuple[str, str]) -> Text:
        line = Text(no_wrap=True, overflow="ellipsis")
        for n, (label, value) in enumerate(pairs):
            line.append(("   " if n else "") + label + " ", style="grey62")
            line.append(value)
        return line

    val = [("val", f"{fmt_loss(tracker.val_loss)} @{tracker.val_steps[-1]}")] if tracker.val_losses else []
    if compact:
        lines.append(figures(("loss", fmt_loss(tracker.loss)), ("avg", fmt_loss(tracker.avg_loss)),
                             ("epoch", epoch)))
        if val:
            lines.append(figures(*val, ("best", fmt_loss(min(tracker.val_losses)))))
        lines.append(figures(("speed", speed), ("ETA", fmt_duration(eta))))
        lines.append(figures(("LR", fmt_lr(tracker.lr)), ("mem", fmt_mem(tracker.mem_mb))))
    else:
        lines.append(figures(("loss", fmt_loss(tracker.loss)), ("avg (epoch)", fmt_loss(tracker.avg_loss)),
                             *val, ("epoch", epoch), ("LR", fmt_lr(tracker.lr))))
        lines.append(figures(("speed", speed), ("ETA", fmt_duration(eta)), ("elapsed", fmt_duration(elapsed)),
                             ("memory", fmt_mem(tracker.mem_mb))))
    files = Text(no_wrap=True, overflow="ellipsis")
    files.append("saved ", style="grey62")
    files.append(printable(Path(tracker.last_save).name) if tracker.last_save else "—")
    if not compact:
        files.append("   sample ", style="grey62")
        files.append(printable(Path(tracker.last_sample).name) if tracker.last_sample else "—")
    lines.append(files)
    if info is not None and (state == "failed" or state == "dead" and not compact) and info.message:
        lines.append(Text(printable(info.message.strip().splitlines()[-1]), style="bold red"))
    from rich.console import Group

    return Group(*lines)


class LossChart(Widget):
    """The loss curve (raw dim, smoothed bright, the validation loss in the theme's secondary colour) with
    axes, drawn to the widget's size."""

    DEFAULT_CSS = "LossChart { height: 1fr; min-height: 5; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tracker: RunTracker | None = None
        self._key: tuple | None = None
        self._chart = Text("")

    def show(self, tracker: RunTracker | None) -> None:
        self.tracker = tracker
        self.refresh()

    def render(self) -> RenderableType:
        t = self.tracker
        if t is None:
            return Text("")
        width, height = self.content_size.width or 60, self.content_size.height or 8
        theme = getattr(self.app, "current_theme", None)
        smooth_style = f"bold {theme.accent or theme.primary}" if theme is not None else "bold cyan"
        val_style = f"bold {theme.secondary or 'magenta'}" if theme is not None else "bold magenta"
        key = (len(t.steps), t.steps[-1] if t.steps else None, t.losses[-1] if t.losses else None,
               len(t.val_steps), t.val_loss, t.total_steps, width, height, smooth_style, val_style)
        if key != self._key:  # drawing thousands of points is not free: only when something changed
            self._key = key
            self._chart = loss_chart(t.steps, t.losses, width, height, total_steps=t.total_steps,
                                     smooth_style=smooth_style, raw_style="grey50", axis_style="grey62",
                                     val_steps=t.val_steps, val_losses=t.val_losses, val_style=val_style)
        return self._chart


class EventLog(Widget):
    """The run's recent events (phases, saves, samples, warnings, errors), newest last, as many as fit; for a
    dead run, the end of its train.log."""

    DEFAULT_CSS = "EventLog { height: 1fr; text-wrap: nowrap; text-overflow: ellipsis; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tracker: RunTracker | None = None
        self.info: RunInfo | None = None
        self.max_lines = 50

    def show(self, tracker: RunTracker | None, info: RunInfo | None, lines: int = 50) -> None:
        self.tracker, self.info, self.max_lines = tracker, info, lines
        self.refresh()

    def render(self) -> RenderableType:
        lines = min(self.max_lines, self.content_size.height or self.max_lines)
        tracker, info = self.tracker, self.info
        text = Text(no_wrap=True, overflow="ellipsis")
        if info is not None and info.state == "dead":
            text.append("the process died without an end event; last lines of train.log:\n", style="bold red")
            for line in info.log_tail[-max(1, lines - 1):]:
                text.append(line + "\n", style="red")
        elif tracker is not None:
            for entry in list(tracker.log)[-lines:]:
                style = {"error": "red", "warning": "yellow", "save": "green", "sample": "cyan",
                         "end": "bold"}.get(entry.kind, "")
                text.append(time.strftime("%H:%M:%S ", time.localtime(entry.t)), style="grey50")
                text.append((entry.text.splitlines() or [""])[0] + "\n", style=style)
        text.rstrip()
        return text
