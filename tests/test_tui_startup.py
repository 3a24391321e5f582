"""How the curator starts: the indexed rows in the first frame, views built when needed (or while idle),
a large index read in a background thread. Real sample dataset, Pilot-driven."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("textual")

from tests.test_tui_workflows import browser, copy_example, make_app, wait_for, wait_loaded
from tui.model import DatasetModel


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = copy_example(tmp_path / "dataset")
    model = DatasetModel(root)  # warm the index, as a second start would find it
    model.open()
    model.scan()
    return root



def test_a_warm_index_is_in_the_first_frame_and_views_are_built_on_demand(dataset: Path) -> None:
    images = len([p for p in dataset.rglob("*") if p.suffix.lower() in (".jpg", ".png", ".webp")])

    async def run() -> None:
        app = make_app(dataset)
        assert len(app.model.rows) == images  # read before the app even started (small index: inline)
        async with app.run_test(size=(100, 30)) as pilot:
            assert len(browser(app).image_list.rows) == images  # in the first frame
            assert [v.id for v in app.views()] == ["browser"]  # nothing else built yet
            app.view_manager.prewarm_enabled = False  # a user who keeps typing: nothing is built behind their back
            await pilot.press("2")
            await wait_for(pilot, lambda: app.active_view.id == "tags" and not app.view_manager.is_mounting("tags"))
            tags = app.view("tags")
            assert tags.query_one("#tag-table").row_count > 0  # built, then filled with the dataset's tags
            assert {v.id for v in app.views()} == {"browser", "tags"}
            await pilot.press("question_mark")  # help lists every view's keys from the registry…
            listed = "\n".join(d for _, rows in app.screen.sections for _, d, _ in rows)
            assert "Keep this, trash others" in listed and "Preview diff" in listed and "Stop" in listed
            assert {v.id for v in app.views()} == {"browser", "tags"}  # …without building the views

    asyncio.run(run())


def test_idle_time_builds_the_views_nobody_opened_yet_but_not_the_runs_view(dataset: Path,
                                                                           monkeypatch) -> None:
    import tui.shell.views

    monkeypatch.setattr(tui.shell.views, "PREWARM_IDLE_SECONDS", 0.2)

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            await wait_for(pilot, lambda: {v.id for v in app.views()} == {"browser", "tags", "bulk", "buckets",
                                                                          "health"})
            await pilot.pause(0.5)
            assert "runs" not in {v.id for v in app.views()}  # it polls: built only when opened
            assert app.active_view.id == "browser"  # building in the background never switches the view
            health = app.view("health")
            assert health.clusters  # the sample's planted near-duplicate, from the shared health pass

    asyncio.run(run())


def test_a_large_index_is_read_in_a_thread_while_the_window_shows(dataset: Path, monkeypatch) -> None:
    import tui.model

    monkeypatch.setattr(tui.model, "INLINE_PRELOAD_MAX", 0)  # treat the sample as "large"

    async def run() -> None:
        model = DatasetModel(dataset)
        model.start_preload(inline_max=0)
        assert model._preload is not None  # a thread, not inline
        model.finish_preload()
        assert model.rows

        app = make_app(dataset)
        assert app.model._preload is not None  # the app's own preload went to a thread too
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            assert len(browser(app).image_list.rows) == len(model.rows)

    asyncio.run(run())

