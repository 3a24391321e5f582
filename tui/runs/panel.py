"""The training panel: a narrow column beside the curator with the watched run (progress, figures, a small
loss chart, the last events) and the list of runs. Toggled with a key (``toggle_training_panel(app)``)."""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from curator.textsafe import fit_text, printable
from tui.bindings import bindings
from tui.runs.follow import FollowsRuns
from tui.runs.keys import TRAINING_PANEL
from tui.runs.watcher import RunsSnapshot, runs_watcher
from tui.runs.widgets import EventLog, LossChart, RunHeader, progress_text, state_text

PANEL_ID = "training-panel"


class TrainingPanel(FollowsRuns, Vertical, can_focus=True):
    COMPACT_HEADER = True
    BINDINGS = bindings(TRAINING_PANEL)

    DEFAULT_CSS = """
    TrainingPanel { dock: right; width: 36%; min-width: 30; max-width: 56; border-left: solid $primary;
                    padding: 0 1; background: $surface; }
    TrainingPanel:focus-within { border-left: thick $accent; }
    TrainingPanel #panel-title { height: auto; color: $primary; }
    TrainingPanel RunHeader { margin-bottom: 1; }
    TrainingPanel LossChart { height: 9; min-height: 5; }
    TrainingPanel EventLog { height: 1fr; min-height: 3; }
    TrainingPanel #panel-runs { height: auto; max-height: 8; margin-top: 1; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("id", PANEL_ID)
        super().__init__(**kwargs)
        self.init_follow()

    def compose(self) -> ComposeResult:
        yield Static(self._title(), id="panel-title")
        yield RunHeader(id="panel-header")
        yield LossChart(id="panel-chart")
        yield EventLog(id="panel-log")
        yield Static(id="panel-runs")

    def _title(self) -> Text:
        """"Training" and the panel's keys as the user's keymap has them (wraps when the panel is narrow)."""
        label = getattr(self.app, "key_label", None)  # the curator app's; a bare App shows the default keys
        title = Text("Training", style="bold")
        for key in TRAINING_PANEL.keys:
            keys = label(TRAINING_PANEL.binding_id(key)) if label is not None else key.keys
            title.append(f"  {keys} {key.description.split()[0].lower()}")
        return title

    def show_snapshot(self, snap: RunsSnapshot) -> None:
        super().show_snapshot(snap)
        self._show_runs()

    def _show_runs(self) -> None:
        """The list of runs, each on one line of the panel's width (the name gives way first)."""
        snap = self.snapshot
        runs = Text(no_wrap=True, overflow="ellipsis")
        width = self.content_size.width or 30
        for run in snap.runs[:7]:
            state = state_text(run.state)
            progress = f" {progress_text(run.step, run.total_steps)}"
            if width - 3 - state.cell_len - len(progress) < 6:  # narrow: the step count without the percentage
                progress = progress.rsplit(" ", 1)[0] if run.total_steps else progress
            name_w = max(6, min(30, width - 3 - state.cell_len - len(progress)))  # the name gives way first
            runs.append("▶ " if run.dir == snap.watched else "  ")
            runs.append(fit_text(printable(run.name), name_w) + " ", style="bold" if run.dir == snap.watched else "")
            runs.append_text(state)
            runs.append(f"{progress}\n", style="grey62")
        if len(snap.runs) > 7:
            runs.append(f"  … {len(snap.runs) - 7} more (runs view)", style="grey62")
        if not snap.runs:
            runs.append("no runs yet", style="italic grey62")
        runs.rstrip()
        self.query_one("#panel-runs", Static).update(runs)

    def on_resize(self, event: events.Resize) -> None:
        self.call_after_refresh(self._show_runs)  # laid out for the new width

    def action_stop(self) -> None:
        from tui.runs.actions import confirm_stop

        confirm_stop(self.app, self.snapshot.watched, after=lambda: self.poll(force=True))

    def action_save_now(self) -> None:
        from tui.runs.actions import save_run_now

        save_run_now(self.app, self.snapshot.watched)

    def action_resume(self) -> None:
        from tui.runs.actions import resume_run

        resume_run(self.app, self.snapshot.watched, after=lambda: self.poll(force=True))

    def action_new_run(self) -> None:
        from tui.runs.form import NewRunScreen

        def launched(result) -> None:
            if result is not None:
                runs_watcher(self.app).watch(result.run_dir)
                self.poll(force=True)

        self.app.push_screen(NewRunScreen(), launched)


def toggle_training_panel(app) -> TrainingPanel:
    """Show the panel (mounting it on first use, docked right of the curator) or hide it."""
    try:
        panel = app.screen.query_one(f"#{PANEL_ID}", TrainingPanel)
    except Exception:  # noqa: BLE001 - not mounted yet
        panel = TrainingPanel()
        app.screen.mount(panel)
        return panel
    panel.display = not panel.display
    if panel.display:
        panel.poll(force=True)
    return panel
