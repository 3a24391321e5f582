"""What keeps the TUI answering keys on large datasets, on the real sample dataset: the health view's findings
tree filled in a thread and in slices (the same tree as the one-go fill, keys answered meanwhile), the list's
cached sort order (still right when rows change in place) and the side panel following the cursor.

Same real sample dataset and helpers as tests/test_tui_workflows.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("textual")

from tests.test_tui_workflows import browser, copy_example, make_app, wait_for, wait_loaded


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return copy_example(tmp_path / "dataset")


def tree_lines(tree) -> list[tuple[str, list[str]]]:
    """The findings tree as (heading, its leaves' labels)."""
    return [(str(node.label), [str(leaf.label) for leaf in node.children]) for node in tree.root.children]


def test_health_tree_filled_in_slices_is_the_whole_tree_and_keys_work_meanwhile(dataset: Path,
                                                                                   monkeypatch) -> None:
    import threading

    import tui.views.health as health_module

    group_findings = health_module.group_findings
    release = threading.Event()

    def slow_grouping(rows):  # in the fill's thread: held until the keys below were answered
        release.wait(30)
        return group_findings(rows)

    async def fill(sliced: bool) -> tuple[list[tuple[str, list[str]]], int, int]:
        monkeypatch.setattr(health_module, "FILL_INLINE_ROWS", 0 if sliced else 10**9)
        monkeypatch.setattr(health_module, "FILL_SLICE", 1)  # one leaf per turn of the event loop
        monkeypatch.setattr(health_module, "group_findings", slow_grouping if sliced else group_findings)
        slices = []
        add_leaves = health_module.HealthView._add_leaves

        def counted(self, generation, pending, start):
            slices.append(start)
            add_leaves(self, generation, pending, start)

        monkeypatch.setattr(health_module.HealthView, "_add_leaves", counted)
        app = make_app(dataset)
        app.view_manager.prewarm_enabled = False
        async with app.run_test(size=(110, 34)) as pilot:
            await wait_loaded(pilot)
            await pilot.press("5")
            health = app.view("health")
            tree = app.query_one("#health-tree")
            moved = 0
            if sliced:
                assert health.filling  # the grouping thread is held
                await pilot.press("1")  # keys are answered while the tree fills
                lst = browser(app).image_list
                before = lst.cursor
                await pilot.press("j")
                moved = lst.cursor - before
                await pilot.press("5")
                release.set()
            await wait_for(pilot, lambda: not health.filling)
            await pilot.pause()
            cursor_node = tree.cursor_node
            assert cursor_node is not None and cursor_node.data is not None  # on the first cluster or finding
            if health.clusters:
                assert cursor_node.data.cluster is health.clusters[0]
            return tree_lines(tree), moved, len(slices)

    async def run() -> None:
        whole, _, no_slices = await fill(sliced=False)
        sliced, moved, slices = await fill(sliced=True)
        assert moved == 1
        assert sliced == whole
        leaves = sum(len(leaves) for _, leaves in whole)
        assert leaves > 1 and no_slices == 0 and slices == leaves  # one turn of the event loop per leaf

    asyncio.run(run())


def test_list_sort_by_tags_follows_captions_changed_in_place(dataset: Path) -> None:
    """The list keeps its sorted order while nothing it sorts by changes, and sorts again when it does."""

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(110, 34)) as pilot:
            await wait_loaded(pilot)
            lst = browser(app).image_list
            lst.sort_by("tags")
            counts = [len(r.tags) for r in lst.view_rows()]
            assert counts == sorted(counts) and counts[0] < counts[-1]
            fewest = lst.view_rows()[0]
            fewest.tags = [f"tag{i}" for i in range(counts[-1] + 5)]  # now the most tags, changed in place
            app.model.state.content_changed()
            lst.refresh_rows()
            assert lst.view_rows()[-1] is fewest
            lst.sort_by("folder")
            folders = [(r.folder.lower(), r.name.lower()) for r in lst.view_rows()]
            assert folders == sorted(folders)

    asyncio.run(run())


def test_facts_and_tags_follow_the_cursor_after_its_paint(dataset: Path) -> None:
    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(110, 34)) as pilot:
            await wait_loaded(pilot)
            view = browser(app)
            lst = view.image_list
            for _ in range(3):
                await pilot.press("j")
            await wait_for(pilot, lambda: view.details_path == lst.cursor_row.path)
            await pilot.pause()
            facts = str(view.query_one("#facts").render())
            assert lst.cursor_row.name in facts
            assert view.query_one("#tag-list").tags == lst.cursor_row.tags

    asyncio.run(run())


def test_buckets_chart_is_not_recounted_when_the_view_is_shown_again(dataset: Path, monkeypatch) -> None:
    """Showing the Buckets view again keeps its chart (100,000 images take a second to count); a change of
    the form counts again."""
    import tui.views.buckets as buckets_module

    computed = []
    compute = buckets_module.BucketsView._compute

    def counted(self, *args):
        computed.append(args)
        return compute(self, *args)

    monkeypatch.setattr(buckets_module.BucketsView, "_compute", counted)

    async def run() -> None:
        app = make_app(dataset)
        app.view_manager.prewarm_enabled = False
        async with app.run_test(size=(110, 34)) as pilot:
            await wait_loaded(pilot)
            await pilot.press("4")
            await wait_for(pilot, lambda: "bucket" in str(app.query_one("#bucket-chart").render()).lower())
            await app.workers.wait_for_complete()
            shown = len(computed)
            chart = str(app.query_one("#bucket-chart").render())
            await pilot.press("1")
            await pilot.press("4")
            await pilot.pause()
            assert len(computed) == shown and str(app.query_one("#bucket-chart").render()) == chart
            app.query_one("#step").value = "32"
            await wait_for(pilot, lambda: len(computed) == shown + 1)
            assert computed[-1][0].step == 32

    asyncio.run(run())
