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

from tests.test_tui_workflows import PHOTO_DIR, copy_example, make_app, wait_for, wait_loaded


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
