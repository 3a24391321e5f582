"""Issue 18: the curator TUI as a newcomer meets it (one broken image, a read-only dataset, defaults that
disagree, edits from another shell, keys and layout glitches). Each test drives the app with a pilot on a copy
of the sample dataset and checks what is on screen and on disk."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("textual")

from rich.text import Text
from textual.widgets import Static

from tests.test_tui_workflows import PHOTO_DIR, browser, copy_example, make_app, wait_for, wait_loaded


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return copy_example(tmp_path / "dataset")


def rendered(widget: Static) -> str:
    content = widget.render()
    return content.plain if isinstance(content, Text) else str(content)


# ----------------------------------------------------------------------------------- item 1: broken images


def test_buckets_view_leaves_out_a_zero_byte_image_and_counts_it(dataset: Path) -> None:
    (dataset / PHOTO_DIR / "empty.png").write_bytes(b"")
    (dataset / PHOTO_DIR / "empty.txt").write_text("empty\n")

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot)
            await pilot.press("4")
            view = app.view("buckets")
            chart = view.query_one("#bucket-chart", Static)
            await wait_for(pilot, lambda: "share" in rendered(chart) or view.query_one("#bucket-error").display)
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert not view.query_one("#bucket-error").display, rendered(view.query_one("#bucket-error", Static))
            text = rendered(chart)
            assert "1 unreadable image(s) left out" in text and "empty.png" in text
            assert "steps/epoch" in text

    asyncio.run(run())


# ------------------------------------------------------------------------ item 2: writes that fail, per file


def notes(app) -> list[str]:
    return [n.message for n in app._notifications]


def test_a_refused_write_says_what_failed_and_why_for_each_file(dataset: Path) -> None:
    from tui.widgets.dialogs import ConfirmScreen
    from tui.widgets.tag_editor import TagList

    locked = [dataset / PHOTO_DIR / "astronaut.txt", dataset / PHOTO_DIR / "cat.txt"]
    for path in locked:
        path.chmod(0o444)  # read-only: the user's "do not touch"

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot)
            lst = browser(app).image_list
            # one image, in the tag editor
            lst.move_to_path(f"{PHOTO_DIR}/astronaut.jpg")
            tag_list = app.query_one(TagList)
            await wait_for(pilot, lambda: tag_list.tags == lst.cursor_row.tags and tag_list.tags)
            await pilot.press("e", "d")  # delete the first tag
            await wait_for(pilot, lambda: any("not written" in n for n in notes(app)))
            message = next(n for n in notes(app) if "not written" in n)
            assert "astronaut.txt" in message and "read-only" in message
            assert "0 caption(s) written" not in " ".join(notes(app))
            assert tag_list.tags == lst.cursor_row.tags  # the editor shows what is on disk
            app.clear_notifications()
            # a bulk operation over everything: the two files are named with their reason, the rest written
            await pilot.press("escape", "3")
            app.query_one("#f-tags").value = "newcomer"
            app.query_one("#scope-all").value = True
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await wait_for(pilot, lambda: any("not written" in n for n in notes(app)))
            message = next(n for n in notes(app) if "not written" in n)
            total = len(app.model.rows)
            assert f"{total - 2} caption(s) written" in message and "2 not written" in message
            for path in locked:
                assert f"{path.name}: the file is read-only" in message
                assert b"newcomer" not in path.read_bytes()

    asyncio.run(run())
