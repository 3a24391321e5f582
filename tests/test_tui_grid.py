"""The Browse view's thumbnail grid (tui/widgets/image_grid.py): layout, keys, mouse, shared state with the list,
background thumbnails, a 100,000-image scroll, undecodable files, file names as data, and snapshots."""

from __future__ import annotations

import asyncio
import io
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("textual")

from tests.conftest import photo, save_photo
from tests.test_tui_workflows import PHOTO_DIR, browser, copy_example, wait_for, wait_loaded
from tui.app import KilnApp
from tui.config import TuiPrefs, load_prefs, prefs_path
from tui.widgets.image_grid import ImageGrid, fit_caption, grid_geometry
from tui.widgets.preview import HalfBlockImage

MARKUP_NAME = "[bold]red\x1b[31mx.png"  # markup and an escape byte in a real file name



@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return copy_example(tmp_path / "dataset")


def grid_app(root: Path, layout: str = "grid", persist: bool = False) -> KilnApp:
    return KilnApp(root, image_protocol="halfblock", theme="dark", prefs=TuiPrefs(browser_layout=layout),
                   persist_prefs=persist)


async def grid_settled(pilot, grid: ImageGrid) -> None:
    """Until every cell on screen shows its thumbnail (or marker) and no decoder runs."""
    await wait_for(pilot, lambda: grid.all_visible_drawn() and not grid.loader.busy)
    await pilot.pause()


def cell_text(grid: ImageGrid, pos: int) -> str:
    """The caption line of the cell at view position ``pos`` (which must be on screen)."""
    geo = grid.geometry
    row, col = divmod(pos, geo.columns)
    y = row * geo.cell_h + geo.pic_h - grid.scroll_offset.y
    return grid.render_line(y).text[col * geo.cell_w : (col + 1) * geo.cell_w]


# ----------------------------------------------------------------------------------------------- layout


def test_geometry_keeps_cells_16_to_24_wide_and_three_per_row_at_80x24() -> None:
    for width in range(16, 400):
        geo = grid_geometry(width)
        assert geo.columns * geo.cell_w <= width
        assert 16 <= geo.cell_w <= 24 and 10 <= geo.cell_h <= 12
        assert width - geo.columns * geo.cell_w < geo.cell_w + 8  # no room left for another cell
    assert grid_geometry(49).columns == 3  # the list pane at 80×24 with the side pane shown
    assert grid_geometry(79).columns >= 4  # side pane hidden


def test_fit_caption_counts_wide_characters() -> None:
    assert fit_caption("short.png", 12) == "short.png   "
    assert fit_caption("a_very_long_file_name.png", 10) == "a_very_lo…"
    cut = fit_caption("猫の写真です.png", 9)
    from rich.cells import cell_len

    assert cell_len(cut) == 9 and cut.endswith("…")


# ---------------------------------------------------------------------------------------- the workflows


def test_m_switches_layouts_keeping_cursor_selection_filter_and_is_remembered(dataset: Path) -> None:
    async def run() -> None:
        app = grid_app(dataset, layout="list", persist=True)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            view = browser(app)
            lst, grid = view.image_list, view.image_grid
            assert not grid.display and lst.has_focus  # the list is the default
            await pilot.press("slash", *"NOT tag:greyscale", "enter")
            filtered = list(lst.view)
            assert 0 < len(filtered) < len(lst.rows)
            await pilot.press("j", "space", "space")  # select rows 1 and 2, cursor on 3
            focused, selected = lst.cursor_row.path, set(lst.selected)
            await pilot.press("m")
            await pilot.pause()
            assert grid.display and grid.has_focus and not lst.display
            assert lst.cursor_row.path == focused and lst.selected == selected and lst.view == filtered
            assert app.model.state.filter_text == "NOT tag:greyscale"
            await grid_settled(pilot, grid)
            assert "●" in cell_text(grid, 1) and "●" in cell_text(grid, 2)  # selection marks
            saved = tomllib.loads(prefs_path().read_text())
            assert saved["browser_layout"] == "grid"
            await pilot.press("right")  # moves in the grid, seen by the list
            assert lst.cursor == 4
            await pilot.press("m")
            await pilot.pause()
            assert lst.display and lst.has_focus and lst.cursor == 4 and lst.selected == selected
            assert load_prefs().browser_layout == "list"

        # a new session starts in the remembered layout
        app2 = grid_app(dataset, layout="grid")
        async with app2.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            assert browser(app2).image_grid.has_focus
            # `?` and the palette list the grid's keys and the switch
            await pilot.press("question_mark")
            await pilot.pause()
            help_text = str(app2.screen.query_one("#help").query_one("Static").render())
            assert "Grid/List" in help_text and "image grid" in help_text and "Right" in help_text

    asyncio.run(run())


def test_grid_keys_move_select_and_edit_like_the_list(dataset: Path) -> None:
    async def run() -> None:
        app = grid_app(dataset)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot)
            view = browser(app)
            lst, grid = view.image_list, view.image_grid
            cols = grid.geometry.columns
            assert cols >= 3 and grid.has_focus
            await pilot.press("l", "l")
            assert lst.cursor == 2
            await pilot.press("j")
            assert lst.cursor == 2 + cols
            await pilot.press("h", "k")
            assert lst.cursor == 1
            await pilot.press("k")  # the top row: stays
            assert lst.cursor == 1
            # the preview, facts and tag editor follow the grid's cursor
            preview = app.query_one("#preview").query_one(HalfBlockImage)
            await wait_for(pilot, lambda: preview.path == lst.cursor_row.abs_path)
            assert lst.cursor_row.name in str(app.query_one("#facts").render())
            await pilot.press("G")
            assert lst.cursor == len(lst.view) - 1
            assert grid.scroll_offset.y == grid.max_scroll_y  # the last row is in view
            await pilot.press("g")
            assert lst.cursor == 0 and grid.scroll_offset.y == 0
            await pilot.press("pagedown")
            assert lst.cursor == grid._page_rows() * cols
            await pilot.press("g", "space")  # select and advance
            assert lst.selected == {lst.rows[lst.view[0]].path} and lst.cursor == 1
            await pilot.press("v", "l", "l", "v")  # a range of three more
            assert len(lst.selected) == 4
            await pilot.press("escape")
            assert lst.selected == set()
            await pilot.press("ctrl+a")
            assert len(lst.selected) == len(lst.view)
            assert "selected" in str(app.query_one("#status").render())
            await pilot.press("escape", "g", "n")  # next flagged
            assert lst.cursor_row.flags
            first_flagged = lst.cursor
            await pilot.press("N")
            assert lst.cursor_row.flags
            if sum(1 for i in lst.view if lst.rows[i].flags) > 1:
                assert lst.cursor != first_flagged
            await pilot.press("s")  # sort by the next column, the focused image stays focused
            focused = lst.cursor_row.path
            assert lst.sort_column == "size"
            await pilot.press("S")
            assert lst.sort_reverse and lst.cursor_row.path == focused
            from tui.widgets.tag_editor import TagList

            await pilot.press("enter")
            assert isinstance(app.focused, TagList)
            await pilot.press("shift+tab")  # back to the images
            assert grid.has_focus
            await pilot.press("slash", "escape")  # closing the filter box gives the keys back to the grid
            assert grid.has_focus
            # another view moving the cursor (Health's `o`) scrolls the grid to it
            last = lst.rows[lst.view[-1]].path
            await pilot.press("g")
            assert lst.move_to_path(last)
            await pilot.pause()
            assert lst.cursor in grid.visible_positions()
            await pilot.press("p")  # hiding the side pane gives more columns
            await pilot.pause()
            assert grid.geometry.columns > cols
            assert lst.cursor in grid.visible_positions()

    asyncio.run(run())


def test_grid_mouse_click_ctrl_click_shift_click_and_wheel(dataset: Path) -> None:
    from textual import events

    async def run() -> None:
        app = grid_app(dataset)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot)
            view = browser(app)
            lst, grid = view.image_list, view.image_grid
            geo = grid.geometry
            cols = geo.columns
            await pilot.click("#image-grid", offset=(geo.cell_w + 3, geo.cell_h + 2))  # second row, second cell
            assert lst.cursor == cols + 1 and grid.has_focus
            await pilot.click("#image-grid", offset=(3, 2), control=True)  # toggles the first image
            assert lst.selected == {lst.rows[lst.view[0]].path} and lst.cursor == 0
            await pilot.click("#image-grid", offset=(2 * geo.cell_w + 3, 2), shift=True)  # range 0..2
            assert len(lst.selected) == 3 and lst.cursor == 2
            await pilot.click("#image-grid", offset=(2 * geo.cell_w + 3, 2), control=True)
            assert len(lst.selected) == 2
            await pilot.click("#grid-header")  # the header reverses the sort
            assert lst.sort_reverse
            await pilot.press("g")
            before = grid.scroll_offset.y
            for _ in range(3):  # the wheel (Pilot has no public helper for it; this is what click uses)
                await pilot._post_mouse_events([events.MouseScrollDown], "#image-grid", offset=(3, 3))
            assert grid.scroll_offset.y > before and lst.cursor == 0  # the wheel scrolls, the cursor stays

    asyncio.run(run())


def test_undecodable_image_gets_a_marker_and_a_marked_up_name_stays_literal(dataset: Path) -> None:
    folder = dataset / PHOTO_DIR
    save_photo(photo("coffee.png", (96, 64)), folder / MARKUP_NAME)
    (folder / "aaa_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not a picture" * 20)

    async def run() -> None:
        app = grid_app(dataset)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot)
            lst, grid = browser(app).image_list, browser(app).image_grid
            lst.sort_by("name")
            await pilot.pause()
            names = [r.name for r in lst.view_rows()]
            assert names[0] == MARKUP_NAME and names[1] == "aaa_broken.png"  # '[' sorts before 'a'
            await grid_settled(pilot, grid)
            broken = lst.rows[lst.view[1]]
            assert grid.thumbnail_state(broken) == "unreadable"
            assert grid.thumbnail_state(lst.rows[lst.view[0]]) == "drawn"
            lines = [grid.render_line(y) for y in range(grid.geometry.cell_h)]
            geo = grid.geometry
            cell1 = "\n".join(line.text[geo.cell_w : 2 * geo.cell_w] for line in lines)
            assert "✗ unreadable" in cell1
            caption = cell_text(grid, 0)
            assert "[bold]red" in caption and "\x1b" not in caption and "\ufffd" in caption
            # nothing on the whole screen carries the raw escape byte, and no markup became a style
            for strip in app.screen._compositor.render_strips():
                assert "\x1b" not in strip.text
            caption_segments = [s for s in lines[geo.pic_h] if "[bold]" in s.text]
            assert caption_segments and not any(s.style and s.style.bold for s in caption_segments
                                                if s.style != grid._styles()["cursor"])
            # the app still works on the broken image: the facts show it, the cursor moves past it
            await pilot.press("l")
            assert lst.cursor_row is broken
            await pilot.press("l")
            assert lst.cursor == 2

    asyncio.run(run())


def test_thumbnails_keep_truecolour_and_fall_back_to_256_colours() -> None:
    """The grid's pictures carry RGB colours; a 256-colour terminal gets the nearest palette entries."""
    from rich.console import Console
    from rich.segment import Segment, Segments

    from tui.imaging import halfblock_lines

    thumb = photo("astronaut.png", (64, 64))
    for system, expect, forbid in (("truecolor", "38;2;", "38;5;"), ("256", "38;5;", "38;2;")):
        lines = halfblock_lines(thumb, 13, 8)  # fresh Styles: rich caches a Style's codes once rendered
        segments = [s for line in lines for s in [*line, Segment.line()]]
        out = io.StringIO()
        Console(file=out, color_system=system, force_terminal=True, width=40).print(Segments(segments))
        text = out.getvalue()
        assert expect in text and "48;" in text and forbid not in text
        assert text.count("▀") == 13 * len(lines)


# ----------------------------------------------------------------------------------- 100,000 images


def _fake_rows(n: int):
    from tui.rows import Row

    subset = SimpleNamespace(rel_dir="10_x", repeats=10, is_reg=False)
    return [
        Row(record=SimpleNamespace(abs_path=Path(f"/nowhere/{i}.png"), subset=subset, format="PNG"),
            path=f"10_x/img{i:06d}.png", name=f"img{i:06d}.png", folder="10_x", size=1000 + i,
            width=512, height=768, bucket=(512, 768), tags=["a"],
            flags=[SimpleNamespace(kind="low-res", detail="")] if i % 1000 == 0 else [])
        for i in range(n)
    ]


def test_grid_is_virtual_and_scrolls_100k_images() -> None:
    from textual.app import App, ComposeResult

    from tui.widgets.image_list import ImageList

    rendered: list[int] = []

    class Probe(ImageGrid):
        def render_line(self, y: int):
            rendered.append(y)
            return super().render_line(y)

    class GridApp(App):
        def compose(self) -> ComposeResult:
            self.lst = ImageList(id="lst")
            self.lst.display = False
            yield self.lst
            yield Probe(self.lst, id="grid")

        def on_image_list_cursor_moved(self, event) -> None:
            self.query_one(Probe).follow_cursor()

    async def run() -> None:
        app = GridApp()
        async with app.run_test(size=(80, 24)) as pilot:
            grid, lst = app.query_one(Probe), app.lst
            lst.set_rows(_fake_rows(100_000))
            grid.focus()
            await pilot.pause()
            geo = grid.geometry
            screen_cells = (grid.size.height // geo.cell_h + 1) * geo.columns
            rendered.clear()
            await pilot.press("G")
            await pilot.pause()
            assert lst.cursor == 99_999
            assert grid.scroll_offset.y == grid.max_scroll_y > 0
            assert 0 < len(rendered) <= 3 * grid.size.height  # only the visible lines were drawn
            assert grid.loader.pending() <= 2 * screen_cells  # visible + one screen ahead, nothing more
            await wait_for(pilot, lambda: grid.all_visible_drawn() and not grid.loader.busy)
            assert grid.loader.decoded <= 4 * screen_cells
            assert grid.thumbnail_state(lst.cursor_row) == "unreadable"  # /nowhere: a marker, no crash
            assert "img099999.png" in cell_text(grid, 99_999)
            await pilot.press("n")  # next flagged wraps around
            assert lst.cursor_row.flags

    asyncio.run(run())


def test_loader_drops_requests_scrolled_past_and_marks_bad_files(tmp_path: Path) -> None:
    """Fast scrolling replaces the wanted list: what was scrolled past is never decoded."""
    from tui.imaging import ThumbnailCache
    from tui.widgets.image_grid import UNREADABLE, ThumbnailLoader

    good = [save_photo(photo("coffee.png", (40, 30)), tmp_path / f"p{i}.png") for i in range(6)]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    started: list = []
    notified: list = []
    loader = ThumbnailLoader(ThumbnailCache(), started.append, lambda: notified.append(1), threads=2)
    key = lambda p: (str(p), 0, 0, 13, 8)  # noqa: E731
    loader.want([(key(p), p) for p in good[:4]])  # a screen…
    assert len(started) == 2  # two decoding threads asked for
    loader.want([(key(p), p) for p in [*good[4:], bad]])  # …scrolled past before any decoding happened
    for run in started:
        run()  # the threads, run here one after the other
    ready = loader.take_ready()
    assert set(ready) == {key(p) for p in [*good[4:], bad]}
    assert ready[key(bad)] == UNREADABLE
    assert all(isinstance(ready[key(p)], list) and len(ready[key(p)]) == 5 for p in good[4:])  # 13×10 px
    assert len(notified) == 1  # one wake-up for the UI, however many thumbnails are ready
    assert not loader.busy
    loader.want([(key(good[4]), good[4])])  # the threads have exited: a new request starts one again
    assert len(started) == 3


# ------------------------------------------------------------------------------------------- snapshots

SIZES = {"80x24": (80, 24), "120x40": (120, 40), "200x50": (200, 50)}


@pytest.mark.parametrize("size", list(SIZES))
def test_grid_snapshot(size: str, tmp_path: Path, snap_compare) -> None:
    pytest.importorskip("pytest_textual_snapshot")
    from tests.test_tui_snapshots import previews_drawn

    root = copy_example(tmp_path / "dataset")
    app = grid_app(root)

    async def settle(pilot) -> None:
        await wait_loaded(pilot)
        await pilot.press("l", "space")  # a selected cell and the cursor on another
        grid = browser(pilot.app).image_grid
        await pilot.pause(0.2)
        await pilot.app.workers.wait_for_complete()
        await wait_for(pilot, lambda: grid.all_visible_drawn() and not grid.loader.busy)
        await wait_for(pilot, lambda: all(previews_drawn(w) for w in pilot.app.query(HalfBlockImage)))
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZES[size], run_before=settle)
