"""The grid browser of the runs view: a LoRA test grid (the JSON index `kiln lora grid` writes, with real
images) browsed by epoch, strength, prompt and base with the keys; opened from the runs view with g; a snapshot."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("textual")

from textual.app import App

from tests.test_tui_runs import RunsHarness, recorded_runs, settle, sync
from train.lora.errors import LoraToolError
from train.lora.gridindex import find_grids, read_grid_index
from tui.runs.grid import GridBrowser
from tui.runs.view import RunsView
from tui.widgets.preview import HalfBlockImage

SIZE = (100, 30)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "horse")


def write_grid(run_dir: Path, name: str = "grid") -> Path:
    """A grid over two saved epochs, strengths 0 / 0.6 / 1.0, two prompts, one base: real photographs as the
    cells (scikit-image), named and indexed as `kiln lora grid` names and indexes them."""
    from PIL import Image
    from skimage import data

    cells_dir = run_dir / f"{name}_cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    photos = iter(PHOTOS * 3)
    base = "/models/sd15.safetensors"
    loras = [{"file": str(run_dir / f"style-00000{e}.safetensors"), "label": f"epoch {e}", "epoch": e, "step": None}
             for e in (1, 2)]
    prompts = ["a photo of sks woman", "sks woman in a forest \x1b[31m"]
    cells = []

    def image(stem: str) -> str:
        picture = getattr(data, next(photos))()
        Image.fromarray(picture).convert("RGB").resize((64, 64)).save(cells_dir / f"{stem}.png")
        return f"{cells_dir.name}/{stem}.png"

    for p, prompt in enumerate(prompts):
        cells.append({"base": base, "lora": None, "label": "control", "epoch": None, "preset": None, "strength": 0.0,
                      "prompt_index": p, "prompt": prompt, "seed": 42, "image": image(f"sd15_p{p:02d}_control")})
    for i, lora in enumerate(loras):
        for strength in (0.6, 1.0):
            for p, prompt in enumerate(prompts):
                cells.append({"base": base, "lora": lora["file"], "label": lora["label"], "epoch": lora["epoch"],
                              "step": None, "preset": None, "strength": strength, "prompt_index": p,
                              "prompt": prompt, "seed": 42, "image": image(f"sd15_l{i:02d}_s{strength:g}_p{p:02d}")})
    Image.new("RGB", (64 * 3, 64 * 4), "gray").save(run_dir / f"{name}.png")
    index = {"sheet": f"{name}.png", "cells_dir": cells_dir.name, "columns": ["0 (control)", "0.6", "1"], "rows": [],
             "bases": [base], "strengths": [0.0, 0.6, 1.0], "loras": loras, "presets": [None], "prompts": prompts,
             "seed": 42, "steps": 20, "cfg_scale": 7.0, "sampler": "euler_a", "cells": cells}
    path = run_dir / f"{name}.json"
    path.write_text(json.dumps(index), encoding="utf-8")
    return path


class GridHarness(App):
    def __init__(self, index_path: Path) -> None:
        super().__init__()
        self.index_path = index_path

    def on_mount(self) -> None:
        self.push_screen(GridBrowser(read_grid_index(self.index_path)))


async def drawn(pilot, timeout: float = 10.0) -> GridBrowser:
    """The browser, once its preview shows the current cell's picture."""
    screen = pilot.app.screen
    assert isinstance(screen, GridBrowser)
    deadline = time.monotonic() + timeout
    while True:
        image = screen.query_one(HalfBlockImage)
        cell = screen.current()
        want = screen.index.sheet if screen.sheet else cell.image if cell else None
        if image.path == want and (want is None or (image._thumb is not None and image._lines)):
            break
        assert time.monotonic() < deadline, "the preview never showed the cell"
        await pilot.pause(0.05)
    await pilot.pause(0.1)
    return screen


def test_grid_browser_snapshot(tmp_path: Path, snap_compare) -> None:
    app = GridHarness(write_grid(tmp_path / "run"))

    async def ready(pilot) -> None:
        await pilot.pause()
        await pilot.press("down")  # epoch 2, strength 0.6
        await drawn(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


@sync
async def test_keys_walk_epochs_strengths_prompts_and_the_control(tmp_path: Path) -> None:
    app = GridHarness(write_grid(tmp_path / "run"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = await drawn(pilot)
        assert screen.query_one(HalfBlockImage).path.name == "sd15_l00_s0.6_p00.png"  # first epoch, first strength
        await pilot.press("down", "right")
        screen = await drawn(pilot)
        assert screen.query_one(HalfBlockImage).path.name == "sd15_l01_s1_p00.png"
        await pilot.press("right", "down")  # the ends hold
        assert screen.cursor.at("strength") == 2 and screen.cursor.at("lora") == 1
        await pilot.press("right_square_bracket")
        screen = await drawn(pilot)
        assert screen.query_one(HalfBlockImage).path.name == "sd15_l01_s1_p01.png"
        text = str(screen.query_one("#grid-cell").render())
        assert "prompt 2/2: sks woman in a forest" in text and "\x1b" not in text  # file text is data
        await pilot.press("c")  # the control of the same prompt
        screen = await drawn(pilot)
        assert screen.query_one(HalfBlockImage).path.name == "sd15_p01_control.png"
        await pilot.press("c")  # and back
        assert screen.cursor.at("strength") == 2
        await pilot.press("s")
        screen = await drawn(pilot)
        assert screen.query_one(HalfBlockImage).path.name == "grid.png"
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(pilot.app.screen, GridBrowser)


@sync
async def test_runs_view_opens_the_newest_grid_of_the_selected_run(tmp_path: Path) -> None:
    runs = recorded_runs(tmp_path)
    write_grid(runs / "style-lora")
    app = RunsHarness(runs)
    async with app.run_test(size=(140, 42)) as pilot:
        await settle(pilot, RunsView)
        view = pilot.app.query_one(RunsView)
        view.activated()
        await pilot.press("g")
        await pilot.pause()
        assert isinstance(pilot.app.screen, GridBrowser)
        assert pilot.app.screen.index.path == runs / "style-lora" / "grid.json"
        await pilot.press("escape", "down", "g")  # the stopped run has no grid: a note, no screen
        await pilot.pause()
        assert not isinstance(pilot.app.screen, GridBrowser)
        assert any("no test grid" in str(n.message) for n in pilot.app._notifications)


def test_grid_index_reading_refuses_what_is_not_a_grid(tmp_path: Path) -> None:
    run = tmp_path / "run"
    older = write_grid(run, "old")
    newer = write_grid(run, "new")
    (run / "config.json").write_text('{"not": "a grid"}')
    (run / "state").mkdir()
    (run / "state" / "grid.json").write_text(newer.read_text())  # never inside state/
    (run / "broken.json").write_bytes(b"\xff{")
    import os

    os.utime(older, (1, 1))
    assert find_grids(run) == [newer, older]
    with pytest.raises(LoraToolError, match="not a grid index"):
        read_grid_index(run / "config.json")
    with pytest.raises(LoraToolError, match="cannot read"):
        read_grid_index(run / "broken.json")
    bad = json.loads(newer.read_text())
    del bad["cells"][0]["strength"]
    (run / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(LoraToolError, match="missing or malformed"):
        read_grid_index(run / "bad.json")
