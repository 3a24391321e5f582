"""The TUI's runs view, training panel and new-run form on recorded run directories (deterministic), and the
form's validation against the trainer's TrainConfig with step math for a real dataset."""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path

import pytest

pytest.importorskip("textual")

from textual.app import App, ComposeResult
from textual.widgets import Input, Static

from tests.model_fixtures import models_cache, tiny_sd1  # noqa: F401 (fixtures)
from tests.test_runs_data import T0, write_run
from tui.runs.panel import TrainingPanel
from tui.runs.view import RunsView

SIZE = (140, 42)


def sync(test):
    """Run an async pilot test with asyncio.run (no async plugin needed)."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return wrapper


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KILN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KILN_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def recorded_runs(root: Path) -> Path:
    """Four runs: finished (with samples), stopped, failed, dead."""
    runs = root / "runs"
    write_run(runs, "style-lora", state="finished", sample=True, t0=T0 + 4 * 3600)
    write_run(runs, "character", state="stopped", steps=150, t0=T0 + 3 * 3600)
    write_run(runs, "big-batch", state="failed", steps=12, t0=T0 + 2 * 3600)
    write_run(runs, "crashed", state="dead", steps=40, t0=T0 + 3600,
              log_lines=["step 40/300 loss 0.1", "Traceback (most recent call last):",
                         "RuntimeError: CUDA error: an illegal memory access was encountered"])
    return runs


class RunsHarness(App):
    """The runs view (or the panel beside a stand-in curator) alone, on fixed run folders."""

    def __init__(self, runs_dir: Path, panel: bool = False, dataset: Path | None = None) -> None:
        super().__init__()
        self.runs_dirs = [runs_dir]
        self.image_protocol = "halfblock"
        self.panel = panel
        if dataset is not None:
            self.dataset_path = dataset

    def compose(self) -> ComposeResult:
        if self.panel:
            yield Static("the curator", id="curator")
            yield TrainingPanel()
        else:
            yield RunsView(id="runs")


async def settle(pilot, widget_type, timeout: float = 20.0) -> None:
    """Until the widget showed the runs, no worker is pending or running, and a sample image (if any) is drawn."""
    from textual.worker import WorkerState

    from tui.widgets.preview import HalfBlockImage

    deadline = time.monotonic() + timeout
    widget = pilot.app.query_one(widget_type)

    def busy() -> bool:
        if widget.shows < 1 or any(w.state in (WorkerState.PENDING, WorkerState.RUNNING) for w in pilot.app.workers):
            return True
        tracker = widget.snapshot.tracker
        if isinstance(widget, RunsView) and tracker is not None and tracker.last_sample:
            image = widget.query_one(HalfBlockImage)
            return image._thumb is None or not image._lines
        return False

    while busy():
        if time.monotonic() > deadline:
            raise AssertionError("the runs never showed")
        await pilot.pause(0.05)
    await pilot.pause(0.3)


def test_runs_view_snapshot(tmp_path: Path, snap_compare) -> None:
    app = RunsHarness(recorded_runs(tmp_path))

    async def ready(pilot) -> None:
        await settle(pilot, RunsView)

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_runs_view_dead_run_snapshot(tmp_path: Path, snap_compare) -> None:
    """Watching the dead run: its state, and the last lines of its train.log."""
    app = RunsHarness(recorded_runs(tmp_path))

    async def ready(pilot) -> None:
        await settle(pilot, RunsView)
        view = pilot.app.query_one(RunsView)
        view.activated()  # what the app does when the view is shown: focus the run list
        await pilot.press("down", "down", "down", "enter")
        deadline = time.monotonic() + 10
        while view.snapshot.watched.name != "crashed":
            assert time.monotonic() < deadline
            await pilot.pause(0.05)
        await settle(pilot, RunsView)

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_training_panel_snapshot(tmp_path: Path, snap_compare) -> None:
    app = RunsHarness(recorded_runs(tmp_path), panel=True)

    async def ready(pilot) -> None:
        await settle(pilot, TrainingPanel)

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


TERMINALS = {"80x24": (80, 24), "200x50": (200, 50)}  # the smallest terminal kiln is made for, and a big one


@pytest.mark.parametrize("size", list(TERMINALS))
@pytest.mark.parametrize("panel", [False, True], ids=["runs-view", "training-panel"])
def test_runs_snapshot_at_terminal_sizes(size: str, panel: bool, tmp_path: Path, snap_compare) -> None:
    app = RunsHarness(recorded_runs(tmp_path), panel=panel)

    async def ready(pilot) -> None:
        await settle(pilot, TrainingPanel if panel else RunsView)

    assert snap_compare(app, terminal_size=TERMINALS[size], run_before=ready)


@sync
async def test_view_lists_runs_and_watches_the_chosen_one(tmp_path: Path) -> None:
    app = RunsHarness(recorded_runs(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        view = app.query_one(RunsView)
        await settle(pilot, RunsView)
        snap = view.snapshot
        assert [r.name for r in snap.runs] == ["style-lora", "character", "big-batch", "crashed"]
        assert snap.watched.name == "style-lora" and snap.tracker.step == 300
        view.activated()
        await pilot.press("down", "enter")
        deadline = time.monotonic() + 10
        while view.snapshot.watched.name != "character":
            assert time.monotonic() < deadline
            await pilot.pause(0.05)
        await settle(pilot, RunsView)
        assert view.snapshot.tracker.state == "stopped" and view.snapshot.tracker.step == 150
        # stop on a run that is not going: a message, no request file
        await pilot.press("s")
        await pilot.pause(0.2)
        assert not (tmp_path / "runs" / "character" / "stop.request").exists()


# ---------------------------------------------------------------------------------------------- new-run form
@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    from tests.conftest import build_kohya_dataset

    return build_kohya_dataset(tmp_path / "ds")


async def until(pilot, condition, show=lambda: "", timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, show()
        await pilot.pause(0.1)


async def open_form(pilot):
    from tui.runs.form import NewRunScreen

    await pilot.press("n")
    deadline = time.monotonic() + 10
    while not isinstance(pilot.app.screen, NewRunScreen):
        assert time.monotonic() < deadline
        await pilot.pause(0.05)
    await pilot.pause(0.2)
    return pilot.app.screen


def error_of(form, fid: str) -> str:
    widget = form.query_one(f"#help-{fid}", Static)
    return str(widget.render()) if widget.has_class("error") else ""


@sync
async def test_form_validates_as_you_type_and_shows_step_math(tmp_path: Path, dataset: Path) -> None:
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"\0" * 8)
    runs = tmp_path / "runs"
    app = RunsHarness(runs, dataset=dataset)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, RunsView)
        form = await open_form(pilot)
        assert form.query_one("#dataset", Input).value == str(dataset.resolve())
        assert form.query_one("#name", Input).value == "ds"
        assert "required" in error_of(form, "model") or "empty" in error_of(form, "model")
        form.query_one("#model", Input).value = str(tmp_path / "missing.safetensors")
        await pilot.pause(0.1)
        assert error_of(form, "model") == "no such file or folder"
        form.query_one("#model", Input).value = str(model)
        form.query_one("#lr", Input).value = "-1"
        form.query_one("#dim", Input).value = "0"
        form.query_one("#resolution", Input).value = "500"
        await pilot.pause(0.1)
        assert error_of(form, "model") == "", (form.errors, form.general)
        assert "must be > 0" in error_of(form, "lr"), (form.errors, form.general)
        assert "must be >= 1" in error_of(form, "dim")
        assert "multiple of 8" in error_of(form, "resolution")
        form.query_one("#resolution", Input).value = "128"
        await pilot.pause(0.1)
        assert "min_bucket 320 is larger" in error_of(form, "buckets") or \
            "min_bucket 256 is larger" in error_of(form, "buckets"), form.errors
        assert "fix the fields" in str(form.query_one("#newrun-math", Static).render())
        await pilot.press("ctrl+l")  # launching an invalid form does nothing
        await pilot.pause(0.1)
        assert pilot.app.screen is form and not runs.exists()
        # preset "easy" uses Prodigy, which wants learning_rate ~1: a cross-field error lands beside the LR
        form.query_one("#dim", Input).value = "8"
        form.query_one("#resolution", Input).value = "512"
        form.query_one("#lr", Input).value = "0.0001"
        form.query_one("#unet_lr", Input).value = ""  # the UNet and text encoder follow learning_rate
        form.query_one("#te_lr", Input).value = ""
        await pilot.pause(0.1)
        if form.value("optimizer") == "Prodigy":  # the pre-flight's finding lands beside the LR
            await until(pilot, lambda: "far from 1.0" in error_of(form, "lr"), lambda: (form.errors, form.findings))
            assert form.query_one("#launch").disabled
        form.query_one("#optimizer").value = "AdamW"
        form.query_one("#length-kind").value = "epochs"
        form.query_one("#length", Input).value = "3"
        form.query_one("#batch", Input).value = "2"
        await pilot.pause(0.1)
        deadline = time.monotonic() + 30
        while "batch 2" not in (math := str(form.query_one("#newrun-math", Static).render())) or "3 epochs" not in math:
            assert time.monotonic() < deadline, str(form.query_one("#newrun-math", Static).render())
            await pilot.pause(0.1)
        math = str(form.query_one("#newrun-math", Static).render())
        # kohya step math for the fixture: 6 images x 10 repeats + 2 reg images repeated to match = 120
        from curator.buckets import bucket_report, step_math
        from curator.dataset import Dataset
        from train.data.dataset import bucket_settings

        records = Dataset.open(dataset).images()
        expected = step_math(bucket_report(records, bucket_settings(form.config.dataset)), 2, epochs=3)
        assert f"{expected.steps_per_epoch} steps/epoch" in math
        assert f"3 epochs → {expected.total_steps} steps" in math
        # the fields are valid; the pre-flight then reads the model file (8 zero bytes here) and says so
        await until(pilot, lambda: "not a valid .safetensors file" in error_of(form, "model"), lambda: form.errors)
        assert all(not error_of(form, f) for f in ("lr", "dim", "resolution", "length", "batch"))
        assert form.query_one("#launch").disabled
        assert form.query_one("#output_dir", Input).value == str(runs)
        write_run(runs, "taken")
        form.query_one("#name", Input).value = "taken"
        await pilot.pause(0.1)
        assert "already holds a run" in error_of(form, "name")
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert not isinstance(pilot.app.screen, type(form))
        assert sorted(p.name for p in runs.iterdir()) == ["taken"]  # cancelling wrote nothing
        assert not (tmp_path / "data" / "launches").exists()


@sync
async def test_form_runs_the_preflight_before_launch_is_enabled(tmp_path: Path, dataset: Path, tiny_sd1) -> None:
    """The easy preset with its optimizer replaced: the LR fields take the new optimizer's rate, the note says
    what the preset lost, the pre-flight's findings show and Launch is enabled only once it found nothing."""
    _, paths = tiny_sd1
    app = RunsHarness(tmp_path / "runs", dataset=dataset)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, RunsView)
        form = await open_form(pilot)
        form.query_one("#preset").value = "easy"
        await pilot.pause(0.2)
        for fid, value in {"model": str(paths.diffusers_dir), "resolution": "64", "buckets": "64,128",
                           "dim": "4"}.items():
            form.query_one(f"#{fid}", Input).value = value
        await pilot.pause(0.2)
        assert form.value("optimizer") == "Prodigy" and form.value("lr") == "1"
        checks = form.query_one("#newrun-checks", Static)
        form.query_one("#optimizer").value = "AdamW"
        await until(pilot, lambda: form.value("lr") == "0.0001", lambda: form.value("lr"))
        assert form.value("unet_lr") == "" and form.value("te_lr") == ""
        assert "preset 'easy' is tuned for Prodigy" in form.note and "decouple" in form.note
        assert "decouple" not in str(form.raw["train"].get("optimizer_args", {}))
        await until(pilot, lambda: form.preflight_ok, lambda: (form.errors, form.findings, str(checks.render())))
        assert not form.query_one("#launch").disabled and "pre-flight: OK" in str(checks.render())
        # a problem only the pre-flight sees (the form's fields are all valid): shown, Launch disabled
        form.query_one("#lr", Input).value = "0.5"
        await pilot.pause(0.05)
        assert form.query_one("#launch").disabled  # at once, while the check runs
        await until(pilot, lambda: "step size" in error_of(form, "lr"),
                    lambda: (form.errors, form.findings, str(checks.render()), form.general, form.value("lr")))
        assert form.query_one("#launch").disabled and not form.preflight_ok
        form.query_one("#lr", Input).value = "0.0001"
        form.query_one("#batch", Input).value = "500"  # larger than every bucket: not a field's own rule
        await until(pilot, lambda: "larger than every bucket" in error_of(form, "batch"),
                    lambda: (form.errors, form.findings))
        assert form.query_one("#launch").disabled
