"""Pilot-driven tests of the curator TUI's workflows on a copy of the real sample dataset.

Each test opens ``examples/dataset`` (real photographs with kohya captions, a planted near-duplicate, a missing
caption) copied to a temp folder, drives the app with keys like a person would, and checks the files on disk.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

pytest.importorskip("textual")

from tests.conftest import SAMPLE, copy_sample
from tui.app import KilnApp
from tui.config import TuiPrefs

EXAMPLE = SAMPLE
PHOTO_DIR = "10_kilnsample photo"


def copy_example(dest: Path) -> Path:
    """A fresh copy of examples/dataset at ``dest`` (no index), or one built from scikit-image photos."""
    if EXAMPLE.is_dir():
        return copy_sample(dest)
    from tests.conftest import photo, save_photo, write_caption

    folder = dest / PHOTO_DIR
    for i, (name, caption) in enumerate([("astronaut.png", "kilnsample, 1girl, astronaut, smile"),
                                         ("chelsea.png", "kilnsample, cat, no humans"),
                                         ("coffee.png", "kilnsample, coffee, cup, no humans")]):
        save_photo(photo(name, (512, 512)), folder / f"img{i}.png")
        write_caption(folder / f"img{i}.txt", caption)
    return dest


def make_app(root: Path, **kwargs) -> KilnApp:
    return KilnApp(root, image_protocol="halfblock", theme="dark", prefs=TuiPrefs(), persist_prefs=False, **kwargs)


async def wait_for(pilot, condition, timeout: float = 30.0) -> None:
    """Let the app run until ``condition()`` holds (workers run in threads)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.05)


async def wait_loaded(pilot, expect_rows: bool = True) -> None:
    """Until the scan, the health checks and the duplicate search are done and the browser shows the rows."""
    app = pilot.app
    await wait_for(pilot, lambda: app.loaded and not app.scanning)
    await wait_for(pilot, lambda: not any(w.is_running for w in app.workers if w.group in ("load", "dupes")))
    if expect_rows:
        await wait_for(pilot, lambda: 0 < len(app.model.rows) == len(browser(app).image_list.rows))
    await pilot.pause()


def browser(app):
    return app.view("browser")


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return copy_example(tmp_path / "dataset")



def caption_of(root: Path, rel_image: str) -> Path:
    return (root / rel_image).with_suffix(".txt")


# ---------------------------------------------------------------------------------------------- browser


def test_browser_lists_every_image_and_previews_the_focused_one(dataset: Path) -> None:
    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            lst = browser(app).image_list
            images = sorted(p for p in dataset.rglob("*") if p.suffix.lower() in {".jpg", ".png", ".webp"})
            assert len(lst.rows) == len(images)
            assert lst.cursor_row is not None
            from tui.widgets.preview import HalfBlockImage

            preview = app.query_one("#preview").query_one(HalfBlockImage)
            await wait_for(pilot, lambda: preview._thumb is not None)
            assert preview.path == lst.cursor_row.abs_path
            # the preview is drawn with half blocks whose colours come from the photo
            line = preview.render_line(preview.size.height // 2)
            assert "▀" in line.text
            await pilot.press("j", "j")
            await wait_for(pilot, lambda: preview.path == lst.cursor_row.abs_path and preview._thumb is not None)
            facts = str(app.query_one("#facts").render())
            assert lst.cursor_row.name in facts and "bucket" in facts

    asyncio.run(run())


def test_select_with_space_and_a_range_with_v(dataset: Path) -> None:
    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            lst = browser(app).image_list
            first = lst.cursor_row.path
            await pilot.press("space")
            assert lst.selected == {first} and lst.cursor == 1
            await pilot.press("v", "j", "j", "v")
            assert len(lst.selected) == 4  # the first plus rows 1..3
            await pilot.press("escape")
            assert lst.selected == set()
            await pilot.press("G")
            assert lst.cursor == len(lst.view) - 1
            await pilot.press("g", "n")  # next flagged image
            assert lst.cursor_row.flags

    asyncio.run(run())


def test_filter_with_the_query_language_and_a_bad_query(dataset: Path) -> None:
    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            lst = browser(app).image_list
            expected = {r.path for r in lst.rows if "greyscale" in r.tags}
            assert 0 < len(expected) < len(lst.rows)
            await pilot.press("slash")
            await pilot.press(*"tag:greyscale")
            await pilot.press("enter")
            assert {r.path for r in lst.view_rows()} == expected
            assert app.model.state.filter_text == "tag:greyscale"
            # a bad query keeps the current filter and says where it is wrong
            await pilot.press("slash", "ctrl+u")
            await pilot.press(*"(greyscale")
            await pilot.press("enter")
            error = app.query_one("#filter-error")
            assert error.display and "^" in str(error.render())
            assert {r.path for r in lst.view_rows()} == expected
            # clearing the query shows everything again
            await pilot.press("ctrl+u", "enter")
            assert len(lst.view) == len(lst.rows)

    asyncio.run(run())


def test_the_mouse_picks_rows_sorts_columns_and_switches_views(dataset: Path) -> None:
    from tui.widgets.image_list import MARK_WIDTH, layout_columns

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(120, 30)) as pilot:
            await wait_loaded(pilot)
            lst = browser(app).image_list
            await pilot.click("#image-list", offset=(5, 3))
            assert lst.cursor == 3
            await pilot.click("#image-list", offset=(5, 5), shift=True)
            assert len(lst.selected) == 3  # rows 3..5
            header = app.query_one("#list-header")
            x = MARK_WIDTH
            for col, width in layout_columns(header.size.width):
                if col.key == "size":
                    break
                x += width + 1
            await pilot.click("#list-header", offset=(x + 1, 0))
            sizes = [r.size for r in lst.view_rows()]
            assert lst.sort_column == "size" and sizes == sorted(sizes)
            await pilot.click("#list-header", offset=(x + 1, 0))
            assert [r.size for r in lst.view_rows()] == sorted(sizes, reverse=True)
            bar = app.query_one("#viewbar")
            start = next(s for s, _e, vid in bar._spans if vid == "tags")
            await pilot.click("#viewbar", offset=(start + 2, 0))
            assert app.active_view.id == "tags"

    asyncio.run(run())


# ------------------------------------------------------------------------------------------- tag editor


def test_tag_editor_reorder_add_with_completion_delete_and_undo(dataset: Path) -> None:
    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            lst = browser(app).image_list
            from tui.widgets.tag_editor import TagList

            tag_list = app.query_one(TagList)
            lst.move_to_path(f"{PHOTO_DIR}/astronaut.jpg")
            await wait_for(pilot, lambda: tag_list.tags == lst.cursor_row.tags)
            cap = caption_of(dataset, f"{PHOTO_DIR}/astronaut.jpg")
            original = cap.read_bytes()
            tags = lst.cursor_row.tags
            await pilot.press("e")  # focus the tag list
            await pilot.press("j", "j")
            await wait_for(pilot, lambda: tag_list.highlighted == 2)
            await pilot.press("t")  # third tag to the front
            await wait_for(pilot, lambda: cap.read_bytes() != original and lst.cursor_row.tags[0] == tags[2])
            assert cap.read_text().split(", ")[0] == tags[2]

            # add with completion: "grey" completes to the dataset's "greyscale"
            await pilot.press("a")
            await pilot.press(*"greys")
            await pilot.press("tab", "enter")
            await wait_for(pilot, lambda: "greyscale" in cap.read_text() and lst.cursor_row.tags[-1] == "greyscale")

            # delete the highlighted tag
            await pilot.press("escape")
            tag_list.highlighted = 0
            await pilot.press("d")
            await wait_for(pilot, lambda: tags[2] not in cap.read_text().split(", "))

            # three journaled edits: undo them all, the file is byte-identical again
            def writes_done() -> bool:
                return not any(w.is_running for w in app.workers if w.group in ("tag-write", "journal"))

            for _ in range(3):
                await wait_for(pilot, writes_done)
                before = cap.read_bytes()
                await pilot.press("u")
                await wait_for(pilot, lambda b=before: cap.read_bytes() != b)
            assert cap.read_bytes() == original
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: cap.read_bytes() != original)
            assert cap.read_text().split(", ")[0] == tags[2]

    asyncio.run(run())


def test_caption_edited_outside_is_noticed_and_not_overwritten(dataset: Path, monkeypatch) -> None:
    import tui.shell.captions as captions_module

    monkeypatch.setattr(captions_module, "CAPTION_POLL_SECONDS", 0.2)

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            row = browser(app).image_list.cursor_row
            cap = row.caption_path
            cap.write_bytes(b"edited, elsewhere\n")
            await wait_for(pilot, lambda: row.tags == ["edited", "elsewhere"])
            # a stale write (file changed after kiln read it) is refused by the journal
            model = app.model
            stale = row.caption_raw
            cap.write_bytes(b"changed again\n")
            result = await asyncio.to_thread(
                model.apply, [model._change(cap, stale, b"kiln write\n")], "edit", "test stale write")
            assert result.conflicts and cap.read_bytes() == b"changed again\n"

    asyncio.run(run())


def test_cold_scan_with_worker_processes_works_without_a_stderr_fd(tmp_path: Path, monkeypatch) -> None:
    """Inside Textual sys.stderr is a capture object whose fileno() is -1; the scanner's process pool (started
    with forkserver once threads run) must still start: DatasetModel.scan starts the resource tracker first."""
    import sys
    import threading
    from multiprocessing import resource_tracker

    from tests.conftest import photo, save_photo
    from tui.model import DatasetModel

    root = tmp_path / "dataset"
    base = photo("chelsea.png")
    for i in range(48):  # above the scanner's in-process limit, so it probes in worker processes
        save_photo(base.crop((i * 4, i * 2, i * 4 + 160, i * 2 + 120)), root / "4_cat" / f"cat{i:02d}.jpg")

    class Capture:  # what Textual puts in sys.stderr while an app runs
        def write(self, text: str) -> int:
            return len(text)

        def flush(self) -> None:
            pass

        def fileno(self) -> int:
            return -1

    resource_tracker._resource_tracker._stop()  # as in a fresh process
    monkeypatch.setattr(sys, "stderr", Capture())
    keep_alive = threading.Event()
    helper = threading.Thread(target=keep_alive.wait, daemon=True)  # a threaded process, like the TUI
    helper.start()
    try:
        model = DatasetModel(root)
        model.open()
        model.scan()
        assert len(model.scanned_records()) == 48
    finally:
        keep_alive.set()


def test_cold_scan_with_worker_processes_works_inside_the_app(tmp_path: Path) -> None:
    """Inside Textual sys.stderr has no file descriptor; the scanner's process pool must still start."""
    from tests.conftest import photo, save_photo

    root = tmp_path / "dataset"
    base = photo("chelsea.png")
    for i in range(48):  # above the scanner's in-process limit, so it probes in worker processes
        crop = base.crop((i * 4, i * 2, i * 4 + 160, i * 2 + 120))
        save_photo(crop, root / "4_cat" / f"cat{i:02d}.jpg", quality=85)

    async def run() -> None:
        app = make_app(root)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            assert len(browser(app).image_list.rows) == 48
            assert "failed" not in app.status_note

    asyncio.run(run())


def test_a_broken_dataset_toml_is_reported_and_the_app_stays_up(tmp_path: Path) -> None:
    bad = tmp_path / "dataset.toml"
    bad.write_text("[[datasets]\\nbroken")
    original = bad.read_bytes()

    async def run() -> None:
        app = make_app(bad)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: "cannot open" in app.status_note)
            assert "kohya dataset TOML" in app.status_note
            await wait_for(pilot, lambda: any("cannot open" in n.message for n in app._notifications))
            await pilot.press("2", "4", "5", "1")  # every view copes with no dataset
            assert app.is_running
        assert bad.read_bytes() == original

    asyncio.run(run())
