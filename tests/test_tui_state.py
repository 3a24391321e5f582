"""The TUI's state lives in the dataset model (tui/state.py, model.state): it announces each change once, and a
change made there, by anyone, reaches every view through messages (Pilot on a copy of the sample dataset)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("textual")

from tests.test_tui_workflows import browser, copy_example, make_app, wait_for, wait_loaded
from tui.rows import Row
from tui.state import (
    BrowseState,
    ChangeFeed,
    CurrentChanged,
    FilterChanged,
    SelectionChanged,
)


def _rows(n: int) -> list[Row]:
    record = SimpleNamespace(abs_path=Path("/nowhere/x.png"), subset=None)
    return [Row(record=record, path=f"a/{i}.png", name=f"{i}.png", folder="a", size=1, width=8, height=8,
                tags=["even"] if i % 2 == 0 else [])
            for i in range(n)]


def test_browse_state_announces_each_real_change_once() -> None:
    feed = ChangeFeed()
    seen: list[object] = []
    stop = feed.subscribe(seen.append)
    state = BrowseState(feed)
    state.select(["a/1.png", "a/2.png"])
    state.select(["a/1.png"])  # already selected: nothing changes, nothing is announced
    state.toggle("a/1.png")
    state.set_current("a/2.png")
    state.set_current("a/2.png")
    state.retain({"a/3.png"})  # a rescan removed a/2.png
    always = lambda row: True  # noqa: E731
    state.set_filter(" tag:x ", always)
    state.set_filter("tag:x", always)  # the same filter again
    assert seen == [SelectionChanged(2), SelectionChanged(1), CurrentChanged("a/2.png"), SelectionChanged(0),
                    FilterChanged("tag:x")]
    stop()
    state.clear_selection()
    state.set_current(None)
    assert len(seen) == 5  # unsubscribed


def test_matching_is_evaluated_once_per_rows_filter_and_content() -> None:
    calls: list[str] = []

    def even(row: Row) -> bool:
        calls.append(row.path)
        return "even" in row.tags

    state = BrowseState()
    rows = _rows(10)
    assert state.matching(rows) == list(range(10))  # no filter: every row
    state.set_filter("tag:even", even)
    assert state.filter_text == "tag:even"
    assert state.matching(rows) == [0, 2, 4, 6, 8]
    assert state.matching(rows) == [0, 2, 4, 6, 8] and len(calls) == 10  # cached
    rows[1].tags = ["even"]
    state.content_changed()  # the model says a caption changed
    assert state.matching(rows) == [0, 1, 2, 4, 6, 8] and len(calls) == 20
    assert state.matching(_rows(4)) == [0, 2]  # other rows: evaluated for them


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return copy_example(tmp_path / "dataset")


def test_a_change_in_the_model_reaches_every_view_through_messages(dataset: Path) -> None:
    """Nobody calls a view here: the selection, the filter and the current image are changed on the model's
    state, and the browser list, the grid's marks, the Bulk scopes and the status line follow."""

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot)
            model, lst = app.model, browser(app).image_list
            bulk = app.view("bulk")  # built (hidden), following the model like every view
            await wait_for(pilot, lambda: not app.view_manager.is_mounting("bulk"))
            status = app.query_one("#status")

            chosen = [r.path for r in model.rows[:3]]
            model.state.set_selection(chosen)
            await wait_for(pilot, lambda: "3 selected" in str(status.render()))
            assert lst.selected == set(chosen)
            assert "selection (3)" in str(bulk.query_one("#scope-selection").label)

            expected = {r.path for r in model.rows if "greyscale" in r.tags}
            model.state.set_filter("tag:greyscale", model.compile_filter("tag:greyscale"))
            await wait_for(pilot, lambda: {r.path for r in lst.view_rows()} == expected)
            assert "filter: tag:greyscale" in str(status.render())
            assert f"filter ({len(expected)})" in str(bulk.query_one("#scope-filter").label)
            assert app.query_one("#filter").value == "tag:greyscale"  # the browser's box shows the state's

            # the Health view's `o` path: the model reveals an image the filter hides, the browser follows
            hidden = next(r for r in model.rows if r.path not in expected)
            assert model.reveal(hidden.path)
            await wait_for(pilot, lambda: lst.cursor_row is not None and lst.cursor_row.path == hidden.path)
            assert model.state.filter_text == "" and len(lst.view) == len(model.rows)
            assert model.state.current == hidden.path
            facts = str(app.query_one("#facts").render())
            assert hidden.name in facts  # the details pane follows the current image

            # the other way: the list's cursor is the model's current image
            await pilot.press("down")
            assert model.state.current == lst.cursor_row.path != hidden.path

    asyncio.run(run())


def test_a_hidden_view_catches_up_with_rows_it_skipped(dataset: Path) -> None:
    """Partial loads (a scan adding rows) go only to the browser and the view on screen; another view that
    skipped some is brought up to date when it is shown."""
    from tui.state import RowsLoaded

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            tags = app.view("tags")
            await wait_for(pilot, lambda: not app.view_manager.is_mounting("tags"))
            table = tags.query_one("#tag-table")
            before = table.row_count
            row = next(r for r in app.model.rows if r.caption_path is not None)
            row.caption_path.write_bytes(row.caption_raw.rstrip(b"\n") + b", brand new tag\n")
            app.model.read_caption(row)  # as a scan's caption read does, then the loader announces:
            app.model.changes.announce(RowsLoaded(partial=True))
            await pilot.pause(0.2)
            assert table.row_count == before  # hidden: skipped
            await pilot.press("2")
            await wait_for(pilot, lambda: table.row_count == before + 1)

    asyncio.run(run())
