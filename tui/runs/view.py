"""The full-screen runs view: every known run on the left, the watched one on the right (progress, figures,
loss curve with the validation loss, event log, latest sample). Keys: enter watch, n new run, s stop, S save
now, r resume, g the run's LoRA test grid (tui/runs/grid.py), h the run's hardest images."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Static

from curator.textsafe import printable
from tui.bindings import bindings
from tui.runs.follow import FollowsRuns
from tui.runs.keys import RUNS_VIEW
from tui.runs.watcher import RunsSnapshot, runs_watcher
from tui.runs.widgets import EventLog, LossChart, RunHeader, RunTable
from tui.views.base import KilnView


class RunsView(FollowsRuns, KilnView):
    POLL_S = 0.5
    VIEW_ID = "runs"
    TITLE = "Runs"
    FOLLOWS_MODEL = False  # it shows runs, not the dataset

    BINDINGS = bindings(RUNS_VIEW)

    DEFAULT_CSS = """
    RunsView #runs-left { width: 44%; min-width: 36; border-right: solid $panel; }
    RunsView #runs-right { width: 1fr; padding: 0 1; }
    RunsView #runs-hint { height: auto; color: $text-muted; padding: 0 1; }
    RunsView RunHeader { margin-bottom: 1; }
    RunsView LossChart { height: 1fr; min-height: 6; }
    RunsView #runs-bottom { height: 12; }
    RunsView EventLog { width: 1fr; }
    RunsView #runs-sample-box { width: 40%; max-width: 30; min-width: 16; display: none; }
    RunsView #runs-sample-box.-has-sample { display: block; }
    RunsView #runs-sample-title { height: 1; color: $text-muted; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.init_follow()
        self._sample_shown: str | None = None

    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(id="runs-left"):
                yield RunTable(id="runs-table")
                yield Static(self._hint(), id="runs-hint")
            with Vertical(id="runs-right"):
                yield RunHeader(id="runs-header")
                yield LossChart(id="runs-chart")
                with Horizontal(id="runs-bottom"):
                    yield EventLog(id="runs-log")
                    with Vertical(id="runs-sample-box"):
                        yield Static("latest sample", id="runs-sample-title")
                        yield self._sample_widget()

    def _hint(self) -> Text:
        """The view's keys as the user's keymap has them (wraps when the column is narrow)."""
        label = getattr(self.app, "key_label", None)  # the curator app's; a bare App shows the default keys
        keys = [f"{label(RUNS_VIEW.binding_id(k)) if label is not None else k.keys} {k.description.lower()}"
                for k in RUNS_VIEW.keys]
        return Text(" · ".join(keys))

    def _sample_widget(self):
        from tui.widgets.preview import ImagePreview

        return ImagePreview(getattr(self.app, "image_protocol", "halfblock"), id="runs-sample")

    def activated(self) -> None:
        self.query_one(RunTable).focus()
        self.poll(force=True)

    # ----- data ---------------------------------------------------------------------------------
    def show_snapshot(self, snap: RunsSnapshot) -> None:
        super().show_snapshot(snap)
        self.query_one(RunTable).show_runs(snap.runs, snap.watched)
        sample = snap.tracker.last_sample if snap.tracker else None
        box = self.query_one("#runs-sample-box")
        box.set_class(bool(sample), "-has-sample")
        if sample != self._sample_shown:
            self._sample_shown = sample
            # after the layout refresh: the box was just shown, so the preview now has its real size
            self.call_after_refresh(self._show_sample, Path(sample) if sample else None)

    def _show_sample(self, path: Path | None) -> None:
        try:
            self.query_one("#runs-sample").show(path)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - a preview problem must not break the view
            pass

    # ----- actions ------------------------------------------------------------------------------
    def selected_dir(self) -> Path | None:
        key = self.query_one(RunTable).cursor_row_key()
        return Path(key) if key else self.snapshot.watched

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_watch()

    def action_watch(self) -> None:
        target = self.selected_dir()
        if target is not None:
            runs_watcher(self.app).watch(target)
            self.poll(force=True)

    def action_new_run(self) -> None:
        from tui.runs.form import NewRunScreen

        def launched(result) -> None:
            if result is not None:
                runs_watcher(self.app).watch(result.run_dir)
                self.app.notify(printable(f"training started in the background: {result.run_dir}"), markup=False,
                                timeout=6)
                self.poll(force=True)

        self.app.push_screen(NewRunScreen(), launched)

    def action_stop(self) -> None:
        from tui.runs.actions import confirm_stop

        confirm_stop(self.app, self.selected_dir(), after=lambda: self.poll(force=True))

    def action_save_now(self) -> None:
        from tui.runs.actions import save_run_now

        save_run_now(self.app, self.selected_dir())

    def action_resume(self) -> None:
        from tui.runs.actions import resume_run

        resume_run(self.app, self.selected_dir(), after=lambda: self.poll(force=True))

    def action_open_grid(self) -> None:
        """The newest `kiln lora grid` index in the selected run's folder, in the grid browser."""
        from train.lora.errors import LoraToolError
        from train.lora.gridindex import find_grids, read_grid_index
        from tui.runs.grid import GridBrowser

        run_dir = self.selected_dir()
        if run_dir is None:
            self.app.notify("No run selected.", timeout=2)
            return
        grids = find_grids(run_dir)
        if not grids:
            self.app.notify(printable(f"no test grid in {run_dir.name}: render one with kiln lora grid --lora "
                                      f"{run_dir} ... --out {run_dir / 'grid.png'}"), markup=False, timeout=6)
            return
        try:
            index = read_grid_index(grids[0])
        except LoraToolError as exc:
            self.app.notify(printable(str(exc)), markup=False, severity="warning", timeout=6)
            return
        self.app.push_screen(GridBrowser(index, getattr(self.app, "image_protocol", "halfblock")))

    def action_hardest(self) -> None:
        from tui.runs.hardest import HardestScreen

        target = self.selected_dir()
        if target is None:
            self.app.notify("no run selected", timeout=3)
            return
        self.app.push_screen(HardestScreen(target))
