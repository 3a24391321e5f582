"""End to end, on CPU: launch a real tiny-model run from the curator TUI's new-run form, watch its events
arrive, stop it (it saves), resume it, quit the TUI while it trains, open the TUI again, see it finish; and
`kiln runs` / `kiln watch` agree with what the TUI showed.

The app is wired the way docs/RUN_MANAGEMENT.md tells tui/app.py to do it (register the view, a key for the panel).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

pytest.importorskip("textual")
pytest.importorskip("torch")

from textual.binding import Binding
from textual.widgets import Input

from tests.model_fixtures import models_cache, tiny_sd1  # noqa: F401
from tui.app import KilnApp
from tui.config import TuiPrefs

TOTAL_STEPS = 40  # long enough that the stop always lands before the end, even on a fast machine
RUN_TIMEOUT = 400.0  # seconds; a shared 2-core machine trains the tiny model at a few seconds per step


@pytest.fixture
def wired(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """KilnApp with the runs view registered and F2 toggling the training panel (as docs/RUN_MANAGEMENT.md wires it)."""
    from tui.runs import register, toggle_training_panel
    from tui.views import registry

    monkeypatch.setattr(registry, "_EXTRA", list(registry._EXTRA))  # leave other tests' app untouched
    register()

    class WiredApp(KilnApp):
        BINDINGS = [*KilnApp.BINDINGS, Binding("f2", "toggle_training", "Training")]

        def action_toggle_training(self) -> None:
            toggle_training_panel(self)

    monkeypatch.setenv("KILN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KILN_CONFIG_DIR", str(tmp_path / "config"))
    return WiredApp


@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    from tests.conftest import photo, save_photo, write_caption

    root = tmp_path / "ds"
    for name in ("astronaut.png", "coffee.png"):
        save_photo(photo(name, (64, 64)), root / "1_sks" / name)
        write_caption(root / "1_sks" / (Path(name).stem + ".txt"), "sks, photo")
    return root


def make_app(cls, dataset: Path, runs: Path):
    app = cls(dataset, image_protocol="halfblock", theme="dark", prefs=TuiPrefs(), persist_prefs=False)
    app.runs_dirs = [runs]
    return app


async def wait_for(pilot, condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.2)


def log_of(run: Path) -> str:
    try:
        return (run / "train.log").read_text(errors="replace")[-3000:]
    except OSError:
        return "(no train.log)"


@pytest.mark.slow
def test_launch_watch_stop_resume_finish_through_the_tui(wired, small_dataset: Path, tiny_sd1, tmp_path: Path,
                                                          capsys) -> None:
    from tui.runs.form import NewRunScreen
    from tui.runs.panel import TrainingPanel
    from tui.runs.view import RunsView

    _, paths = tiny_sd1
    runs = tmp_path / "runs"
    run_dir = runs / "tiny"

    async def first_session() -> None:
        app = make_app(wired, small_dataset, runs)
        async with app.run_test(size=(140, 44)) as pilot:
            await wait_for(pilot, lambda: app.loaded and not app.scanning, 60, "the dataset")
            app.action_show_view_key("6")
            view = app.query_one(RunsView)
            await pilot.press("n")
            await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen), 10, "the form")
            form = app.screen
            await pilot.pause(0.3)
            form.query_one("#preset").value = "(none)"
            await pilot.pause(0.2)
            values = {"name": "tiny", "model": str(paths.diffusers_dir), "dim": "4", "alpha": "4", "lr": "0.0001",
                      "te_lr": "0", "resolution": "64", "buckets": "64,128", "batch": "1", "trigger": "sks",
                      "length": str(TOTAL_STEPS)}
            form.query_one("#length-kind").value = "steps"
            for fid, value in values.items():
                form.query_one(f"#{fid}", Input).value = value
            await pilot.pause(0.3)
            assert form.validate_form(), (form.errors, form.general)
            await wait_for(pilot, lambda: "steps/epoch" in str(form.step_text), 30, "the step math")
            assert "2 images" in str(form.step_text) and "2 steps/epoch" in str(form.step_text)
            await pilot.press("ctrl+l")
            await wait_for(pilot, lambda: not isinstance(app.screen, NewRunScreen), 120, "the launch")
            assert (run_dir / "train.log").exists()
            # the launched config is the form's: no text encoder training, the trigger word as caption prefix
            config = (run_dir / "config.toml").read_text() if (run_dir / "config.toml").exists() else ""

            await wait_for(pilot, lambda: view.snapshot.tracker is not None and view.snapshot.tracker.step >= 1
                           and view.snapshot.info.state == "running",  # status.json can trail the step event
                           RUN_TIMEOUT, f"the first step event\n{log_of(run_dir)}")
            snap = view.snapshot
            assert snap.watched == run_dir.resolve() and snap.info.state == "running"
            assert snap.tracker.total_steps == TOTAL_STEPS and snap.tracker.losses
            config = (run_dir / "config.toml").read_text()
            assert 'caption_prefix = "sks, "' in config and "text_encoder_lr = 0" in config

            # the training panel beside the curator shows the same run
            app.action_show_view_key("1")
            await pilot.press("f2")
            await pilot.pause(0.5)
            panel = app.query_one(TrainingPanel)
            await wait_for(pilot, lambda: panel.snapshot.watched == run_dir.resolve(), 20, "the panel")
            panel.focus()
            await pilot.press("s")  # stop: asks first
            await pilot.pause(0.3)
            await pilot.press("y")
            await pilot.pause(0.3)
            assert (run_dir / "stop.request").exists()
            await wait_for(pilot, lambda: panel.snapshot.info is not None and panel.snapshot.info.state == "stopped",
                           RUN_TIMEOUT, f"the stop\n{log_of(run_dir)}")
            stopped_at = json.loads((run_dir / "status.json").read_text())["step"]
            assert 1 <= stopped_at < TOTAL_STEPS
            assert (run_dir / "state").is_dir() and list(run_dir.glob("tiny-step*.safetensors"))

            await pilot.press("f2")  # hide the panel; resume from the runs view
            app.action_show_view_key("6")
            await pilot.pause(0.3)
            assert not panel.display and app.focused is view.query_one("#runs-table")
            await pilot.press("r")  # resume, detached
            await wait_for(pilot, lambda: view.snapshot.info is not None and view.snapshot.info.active,
                           120, f"the resume\n{log_of(run_dir)}")
        # the TUI is closed: the run goes on

    async def second_session() -> None:
        app = make_app(wired, small_dataset, runs)
        async with app.run_test(size=(140, 44)) as pilot:
            app.action_show_view_key("6")
            view = app.query_one(RunsView)
            await wait_for(pilot, lambda: view.snapshot.watched == run_dir.resolve(), 30, "the run again")
            await wait_for(pilot, lambda: view.snapshot.info is not None and view.snapshot.info.state == "finished",
                           RUN_TIMEOUT, f"the end of the run\n{log_of(run_dir)}")
            tracker = view.snapshot.tracker
            assert tracker.step == TOTAL_STEPS and tracker.steps[-1] == TOTAL_STEPS
            assert tracker.steps == sorted(set(tracker.steps))  # one curve across the stop and the resume
            assert any("resumed at step" in line.text for line in tracker.log)

    asyncio.run(first_session())
    from train.runs.discover import registered_runs
    from train.runs.state import read_run

    launch = registered_runs()[run_dir.resolve()]  # the resume was recorded with the new trainer's pid
    assert read_run(run_dir, known_pid=launch.pid, launched_at=launch.t).state in ("starting", "running", "finished")
    asyncio.run(second_session())

    from tui.cli import main as kiln

    capsys.readouterr()
    assert kiln(["runs", "--json", str(runs)]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["state"] == "finished" and record["step"] == record["total_steps"] == TOTAL_STEPS
    assert any(Path(p).name == "tiny.safetensors" for p in record["outputs"])
    assert kiln(["watch", str(run_dir), "--once"]) == 0
    assert "finished" in capsys.readouterr().out
