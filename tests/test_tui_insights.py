"""The TUI's views of issue 12's insights: the validation loss beside the training loss, the hardest-images
screen (ranking, flip to easiest, reveal in the curator), and the run form's character difficulty."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("textual")

from rich.console import Console
from textual.widgets import DataTable, Input, Static

from tests.model_fixtures import models_cache, tiny_sd1  # noqa: F401 (fixtures)
from tests.test_image_losses import simulated_run
from tests.test_runs_data import write_run
from tests.test_tui_runs import SIZE, RunsHarness, open_form, settle, sync, until
from tests.test_tui_runs import _env as _env
from tests.test_tui_runs import dataset as dataset
from tui.messages import RevealImage
from tui.runs.hardest import HardestScreen
from tui.runs.view import RunsView


def _with_validation(run: Path) -> None:
    with (run / "events.jsonl").open("a", encoding="utf-8") as f:
        for step, loss in ((100, 0.2), (200, 0.15), (300, 0.125)):
            f.write(json.dumps({"t": 1.0e9 + step, "type": "validation", "step": step, "epoch": 1, "loss": loss,
                                "images": 3, "timesteps": [200, 400, 600, 800], "per_timestep": [loss] * 4}) + "\n")


def test_header_and_chart_show_the_validation_loss(tmp_path: Path) -> None:
    from train.rundir import read_events
    from train.runs.track import RunTracker
    from tui.runs.widgets import header_renderable

    run = write_run(tmp_path / "runs", "val")
    _with_validation(run)
    tracker = RunTracker()
    tracker.feed_all(list(read_events(run)))
    console = Console(width=120, record=True)
    console.print(header_renderable(tracker, None, 118))
    assert re.search(r"val 0\.1250 @300", console.export_text())
    plain = RunTracker()
    plain.feed_all(list(read_events(write_run(tmp_path / "runs", "plain"))))
    console = Console(width=120, record=True)
    console.print(header_renderable(plain, None, 118))
    assert "val " not in console.export_text()


class RevealHarness(RunsHarness):
    def __init__(self, runs_dir: Path, dataset: Path) -> None:
        super().__init__(runs_dir, dataset=dataset)
        self.revealed: list[str] = []

    def on_reveal_image(self, message: RevealImage) -> None:
        self.revealed.append(message.path)


@sync
async def test_hardest_screen_ranks_flips_and_reveals(tmp_path: Path) -> None:
    runs, data = tmp_path / "runs", tmp_path / "data"
    data.mkdir()
    run = write_run(runs, "ranked")
    (run / "config.toml").write_text(f'[output]\nname = "ranked"\n[dataset]\npath = "{data}"\n', encoding="utf-8")
    losses = simulated_run({7: 1.5, 3: 0.6})
    losses.entries[7].caption = "[bold]not markup[/bold] \x1b[31m"
    losses.write(run)
    app = RevealHarness(runs, dataset=tmp_path / "elsewhere")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, RunsView)
        await pilot.press("h")
        await until(pilot, lambda: isinstance(pilot.app.screen, HardestScreen))
        screen = pilot.app.screen
        assert isinstance(screen, HardestScreen)
        table = screen.query_one(DataTable)
        assert table.row_count == 30 and screen.ranked[0].path == "1_a/07.png"
        title = str(screen.query_one("#hardest-title", Static).render())
        assert "ranked: hardest of 30 images" in title
        first = [str(c) for c in table.get_row_at(0)]
        assert first[0] == "1" and first[3] == "1_a/07.png" and "[bold]not markup[/bold]" in first[4]
        assert "\x1b" not in first[4]
        await pilot.press("e")
        await pilot.pause(0.1)
        assert screen.ranked[0].path == "1_a/03.png" and "easiest" in str(screen.query_one("#hardest-title",
                                                                                            Static).render())
        await pilot.press("enter")  # another dataset is open: a note, nothing revealed
        await pilot.pause(0.1)
        assert app.revealed == [] and isinstance(pilot.app.screen, HardestScreen)
        app.dataset_path = data
        await pilot.press("enter")
        await until(pilot, lambda: app.revealed == ["1_a/03.png"])
        assert not isinstance(pilot.app.screen, HardestScreen)


@sync
async def test_hardest_screen_without_a_record_says_so(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    write_run(runs, "fresh")
    app = RunsHarness(runs)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, RunsView)
        await pilot.press("h")
        await until(pilot, lambda: isinstance(pilot.app.screen, HardestScreen))
        title = str(pilot.app.screen.query_one("#hardest-title", Static).render())
        assert "no per-image losses yet" in title
        await pilot.press("enter")  # nothing to reveal: no error
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(pilot.app.screen, HardestScreen))


@sync
async def test_form_difficulty_sets_rank_alpha_steps_and_type(tmp_path: Path, dataset: Path) -> None:
    from train.difficulty import suggest

    app = RunsHarness(tmp_path / "runs", dataset=dataset)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, RunsView)
        form = await open_form(pilot)
        form.query_one("#preset").value = "easy"
        await pilot.pause(0.2)
        form.query_one("#difficulty").value = "F"
        await until(pilot, lambda: form.value("dim") == str(suggest("F").rank), lambda: form.value("dim"))
        expected = suggest("F", base=form.raw)
        assert form.value("network_type") == expected.network_type
        assert form.query_one("#alpha", Input).value.rstrip("0").rstrip(".") == f"{expected.alpha:g}"
        assert form.value("length-kind") == "steps" and form.value("length") == str(expected.steps)
        why = str(form.query_one("#newrun-why", Static).render())
        assert why.startswith("difficulty F:") and expected.reasons[0][:30] in why
        assert form.raw["network"]["dim"] == expected.rank and form.raw["train"]["max_steps"] == expected.steps
        form.query_one("#difficulty").value = "(not a character)"
        await pilot.pause(0.1)
        assert str(form.query_one("#newrun-why", Static).render()) == ""


@pytest.mark.slow
@sync
async def test_form_estimate_shows_the_dry_runs_figures(tmp_path: Path, dataset: Path, tiny_sd1) -> None:
    _, paths = tiny_sd1
    app = RunsHarness(tmp_path / "runs", dataset=dataset)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, RunsView)
        form = await open_form(pilot)
        form.query_one("#preset").value = "easy"
        await pilot.pause(0.2)
        for fid, value in {"model": str(paths.diffusers_dir), "resolution": "64", "buckets": "64,128", "dim": "4",
                           "batch": "1"}.items():
            form.query_one(f"#{fid}", Input).value = value
        form.query_one("#length-kind").value = "steps"
        form.query_one("#length", Input).value = "8"
        await until(pilot, lambda: form.preflight_ok, lambda: (form.errors, form.findings))
        assert not form.query_one("#estimate").disabled
        await pilot.press("ctrl+o")
        box = form.query_one("#newrun-estimate", Static)
        await until(pilot, lambda: "peak memory" in str(box.render()) or "failed" in str(box.render()),
                    lambda: str(box.render()), timeout=600)
        text = str(box.render())
        assert "time per step" in text and "8 steps" in text and "total time" in text, text
        assert not (tmp_path / "runs" / "ds").exists()  # the dry run wrote nowhere near the run's folder
