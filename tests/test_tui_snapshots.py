"""Snapshot tests (pytest-textual-snapshot) of every view at 80×24, 120×40 and 200×50, on the sample dataset
(the Runs view and the training panel: tests/test_tui_runs.py, on recorded runs).

Deterministic: a fixed dataset copied to ``<tmp>/dataset``, half-block previews, no clock, every background
job finished before the picture is taken. Update after an intended change with
``.venv/bin/pytest tests/test_tui_snapshots.py --snapshot-update`` and review ``snapshot_report.html``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pytest_textual_snapshot")

from tests.test_tui_workflows import copy_example, make_app, wait_for, wait_loaded
from tui.widgets.preview import HalfBlockImage


def previews_drawn(widget) -> bool:
    """A preview is finished when it has nothing to show, or its picture (or error) is ready for its size."""
    if widget.path is None or widget._message or not widget.size.area:  # nothing to draw, or not on screen
        return True
    return widget._thumb is not None and widget._lines_size == (widget.size.width, widget.size.height)


VIEWS = {"browser": "1", "tags": "2", "bulk": "3", "buckets": "4", "health": "5"}
SIZES = {"80x24": (80, 24), "120x40": (120, 40), "200x50": (200, 50)}



@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("view", list(VIEWS))
def test_view_snapshot(view: str, size: str, tmp_path: Path, snap_compare) -> None:
    root = copy_example(tmp_path / "dataset")
    app = make_app(root)

    async def settle(pilot) -> None:
        await wait_loaded(pilot)
        await pilot.press(VIEWS[view])
        if view == "health":
            await pilot.press("down")  # the first flag group, so the picture shows the duplicate and a group
        await pilot.pause(0.3)
        await pilot.app.workers.wait_for_complete()
        await wait_for(pilot, lambda: all(previews_drawn(w) for w in pilot.app.query(HalfBlockImage)))
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZES[size], run_before=settle)
