"""A virtualised thumbnail grid: the Browse view's second layout, sharing every bit of state with an ImageList.

``ImageGrid`` holds no rows, order, cursor or selection of its own: it reads and writes those of the
``ImageList`` it is given (so switching list ⇄ grid keeps the focused image, the selection, the filter and the
sort), and the list's ``CursorMoved`` / ``SelectionChanged`` messages keep the preview, facts, tag editor and
status line working unchanged.

It is a Line-API ``ScrollView``: only the lines on screen are drawn, so 100,000 images scroll as fast as 20.
Thumbnails are decoded in background threads through the shared ``ThumbnailCache`` (never on the UI thread),
only for the visible cells plus one screen ahead in the scrolling direction; requests for cells scrolled
past are dropped before they are decoded. A cell shows a placeholder of the image's shape until its
thumbnail arrives, and a ``✗ unreadable`` marker when the file cannot be decoded.

Cell geometry (see ``grid_geometry``): cells are 16–24 columns wide and 10–12 lines tall (a tile holding the
half-block picture with one column of margin each side, a one-line caption, then a spacing line). At 80×24
with the side pane shown the grid holds 3 × 2 thumbnails; hiding the side pane (``p``) gives 4–5 per row.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget

from curator.textsafe import fit_text, printable
from tui.bindings import bindings
from tui.imaging import ThumbnailCache, fit_cells, halfblock_lines
from tui.rows import Row
from tui.widgets.image_list import ImageList

MIN_CELL_W = 16  # narrowest cell (15-column tile: a 13-column picture)
PREF_CELL_W = 20  # the grid uses as many cells as keep them at most about this wide…
MAX_CELL_W = 24  # …and never wider than this (the rest of the line stays empty)
MIN_PICTURE_H, MAX_PICTURE_H = 8, 10  # picture lines per cell (2 half-block pixels each)
DECODE_THREADS = 2  # background decoders (PIL releases the GIL while decoding)
LINES_CACHE = 192  # drawn thumbnails kept (~100 KiB each: a Style per pixel pair), 4+ screens; older
# ones are redrawn from the shared decoded-thumbnail cache when scrolled back to
UNREADABLE = "✗ unreadable"
_printable = lru_cache(maxsize=65536)(printable)


@dataclass(frozen=True)
class GridGeometry:
    """How the grid is cut: ``columns`` cells of ``cell_w``×``cell_h``; the picture area is ``pic_w``×``pic_h``."""

    columns: int
    cell_w: int
    cell_h: int

    @property
    def tile_w(self) -> int:  # the highlighted part of a cell (a one-column gap separates cells)
        return self.cell_w - 1

    @property
    def pic_w(self) -> int:
        return self.cell_w - 3

    @property
    def pic_h(self) -> int:
        return self.cell_h - 2  # then the caption line and a spacing line


@lru_cache(maxsize=64)
def grid_geometry(width: int) -> GridGeometry:
    """The cell layout for a grid ``width`` columns wide (scrollbar excluded)."""
    width = max(1, width)
    columns = max(1, -(-width // PREF_CELL_W))
    if width // columns < MIN_CELL_W:
        columns = max(1, width // MIN_CELL_W)
    cell_w = max(4, min(MAX_CELL_W, width // columns))
    pic_h = max(MIN_PICTURE_H, min(MAX_PICTURE_H, round((cell_w - 3) * 0.55)))
    return GridGeometry(columns, cell_w, pic_h + 2)


def fit_caption(text: str, width: int) -> str:
    """``text`` cut or padded to exactly ``width`` terminal cells (``curator.textsafe.fit_text``)."""
    return fit_text(text, width)


ThumbKey = tuple[str, int, int, int, int]  # (path, mtime_ns, size, picture cols, picture rows)


def thumb_key(row: Row, geometry: GridGeometry) -> ThumbKey:
    return (str(row.abs_path), int(getattr(row.record, "mtime_ns", 0) or 0), int(row.size or 0),
            geometry.pic_w, geometry.pic_h)


class ThumbnailLoader:
    """Decodes wanted thumbnails in background threads; thread-safe, Textual-free apart from ``start``.

    ``want(jobs)`` replaces the wanted list (stale requests are dropped, never decoded); results are collected
    with ``take_ready()``. ``start`` is called to launch a decoding thread when fewer than ``threads`` run;
    each thread exits once nothing is wanted.
    """

    def __init__(self, cache: ThumbnailCache, start, notify, threads: int = DECODE_THREADS) -> None:
        self.cache = cache
        self._start = start
        self._notify = notify
        self.threads = threads
        self._lock = threading.Lock()
        self._wanted: deque[tuple[ThumbKey, Path]] = deque()
        self._in_flight: set[ThumbKey] = set()
        self._ready: dict[ThumbKey, list[list[Segment]] | str] = {}
        self._running = 0
        self._notified = False
        self.decoded = 0  # thumbnails decoded so far (for tests and the bench)

    def want(self, jobs: list[tuple[ThumbKey, Path]]) -> None:
        """Decode these (in order) and nothing else that is not already being decoded."""
        with self._lock:
            self._wanted = deque(j for j in jobs if j[0] not in self._in_flight and j[0] not in self._ready)
            launch = min(len(self._wanted), self.threads - self._running)
            self._running += max(0, launch)
        for _ in range(max(0, launch)):
            self._start(self.run)

    def take_ready(self) -> dict[ThumbKey, list[list[Segment]] | str]:
        with self._lock:
            ready, self._ready, self._notified = self._ready, {}, False
        return ready

    @property
    def busy(self) -> bool:
        with self._lock:
            return bool(self._wanted or self._in_flight or self._ready or self._running)

    def pending(self) -> int:
        with self._lock:
            return len(self._wanted) + len(self._in_flight)

    def run(self, cancelled=lambda: False) -> None:
        """One decoding thread: take the next wanted thumbnail until none is left (or ``cancelled()``)."""
        try:
            while not cancelled():
                with self._lock:
                    if not self._wanted:
                        return
                    key, path = self._wanted.popleft()
                    self._in_flight.add(key)
                result = self._decode(key, path)
                with self._lock:
                    self._in_flight.discard(key)
                    self._ready[key] = result
                    self.decoded += 1
                    notify, self._notified = not self._notified, True
                if notify:
                    self._notify()
        finally:
            with self._lock:
                self._running -= 1

    def _decode(self, key: ThumbKey, path: Path) -> list[list[Segment]] | str:
        try:
            thumb = self.cache.get(path)
            return halfblock_lines(thumb, key[3], key[4]) or UNREADABLE
        except Exception:  # noqa: BLE001 - any decoder failure is a marker in the cell, never a crash
            return UNREADABLE


class ImageGrid(ScrollView, can_focus=True):
    """The dataset as thumbnails; the same keys as the list plus ←→/h l, enter edits the tags."""

    BINDINGS = bindings("images", "grid")

    COMPONENT_CLASSES = {
        "image-grid--cursor",
        "image-grid--selected",
        "image-grid--flagged",
        "image-grid--placeholder",
        "image-grid--error",
        "image-grid--mark",
    }

    DEFAULT_CSS = """
    ImageGrid { background: $surface; scrollbar-size-vertical: 1; overflow-x: hidden; }
    ImageGrid > .image-grid--cursor { background: $block-cursor-blurred-background; }
    ImageGrid:focus > .image-grid--cursor {
        background: $block-cursor-background; color: $block-cursor-foreground; text-style: bold;
    }
    ImageGrid > .image-grid--selected { background: $accent 30%; }
    ImageGrid > .image-grid--flagged { color: $warning; }
    ImageGrid > .image-grid--placeholder { background: $panel; color: $text-muted; }
    ImageGrid > .image-grid--error { color: $error; text-style: bold; }
    ImageGrid > .image-grid--mark { color: $accent; text-style: bold; }
    """

    class Open(Message):
        """``enter`` on a cell: edit the focused image's tags."""

        def __init__(self, grid: ImageGrid) -> None:
            super().__init__()
            self.grid = grid

    class ThumbnailsReady(Message, bubble=False):
        """Posted (from a decoding thread) when decoded thumbnails wait to be drawn."""

    def __init__(self, image_list: ImageList, cache: ThumbnailCache | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        from tui.widgets.preview import SHARED_CACHE

        self.image_list = image_list
        self.loader = ThumbnailLoader(cache or SHARED_CACHE, self._start_decoder, self._post_ready)
        self._lines: OrderedDict[ThumbKey, list[list[Segment]] | str] = OrderedDict()
        self._scroll_dir = 1
        self._keep = 0
        self.header: GridHeader | None = None

    # ----- geometry ---------------------------------------------------------------------------
    @property
    def geometry(self) -> GridGeometry:
        # one column is always kept for the scrollbar, so the cells do not jump when it appears
        return grid_geometry(max(1, self.size.width - 1))

    @property
    def grid_rows(self) -> int:
        return -(-len(self.image_list.view) // self.geometry.columns)

    def _page_rows(self) -> int:
        height = self.scrollable_content_region.height or self.size.height
        return max(1, height // self.geometry.cell_h)

    def _update_virtual_size(self) -> None:
        size = Size(self.size.width, self.grid_rows * self.geometry.cell_h)
        if size != self.virtual_size:
            self.virtual_size = size

    def cell_at(self, x: int, y: int) -> int | None:
        """The view position under widget offset (x, y), or None."""
        geo = self.geometry
        col = x // geo.cell_w
        if x < 0 or col >= geo.columns:
            return None
        pos = ((self.scroll_offset.y + y) // geo.cell_h) * geo.columns + col
        return pos if 0 <= pos < len(self.image_list.view) else None

    def visible_positions(self) -> range:
        """View positions of the cells (partly) on screen."""
        geo = self.geometry
        height = self.scrollable_content_region.height or self.size.height
        first_row = self.scroll_offset.y // geo.cell_h
        last_row = (self.scroll_offset.y + max(0, height - 1)) // geo.cell_h
        n = len(self.image_list.view)
        return range(min(n, first_row * geo.columns), min(n, (last_row + 1) * geo.columns))

    def visible_rows(self) -> list[Row]:
        lst = self.image_list
        return [lst.rows[lst.view[p]] for p in self.visible_positions()]

    # ----- following the shared cursor --------------------------------------------------------
    def follow_cursor(self) -> None:
        """The list's rows, order or cursor changed: resize, bring the cursor into view, fetch thumbnails."""
        if not self.display or not self.size.area:
            return
        self._update_virtual_size()
        self.scroll_to_cursor()
        self.refresh()
        self.request_thumbnails()
        if self.header is not None:
            self.header.refresh()

    def scroll_to_cursor(self) -> None:
        geo = self.geometry
        height = self.scrollable_content_region.height or self.size.height
        top = (self.image_list.cursor // geo.columns) * geo.cell_h
        y = self.scroll_offset.y
        if top < y:
            self.scroll_to(y=top, animate=False, immediate=True)
        elif height and top + geo.cell_h > y + height:  # below: bring its bottom in (its top if taller)
            self.scroll_to(y=min(top, top + geo.cell_h - height), animate=False, immediate=True)

    def on_resize(self) -> None:
        self.follow_cursor()

    def on_show(self) -> None:
        self.call_after_refresh(self.follow_cursor)

    def on_hide(self) -> None:
        self.loader.want([])  # back to the list: decode nothing more for the grid

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if new_value != old_value:
            self._scroll_dir = 1 if new_value > old_value else -1
            self.request_thumbnails()

    # ----- thumbnails -------------------------------------------------------------------------
    def request_thumbnails(self) -> None:
        """Ask for the visible cells' thumbnails, then one screen ahead in the scrolling direction."""
        if not self.size.area or not self.is_mounted:
            return
        lst, geo = self.image_list, self.geometry
        visible = self.visible_positions()
        span = max(geo.columns, len(visible))
        if self._scroll_dir >= 0:
            ahead = range(visible.stop, min(len(lst.view), visible.stop + span))
        else:
            ahead = range(max(0, visible.start - span), visible.start)[::-1]
        jobs = []
        for pos in (*visible, *ahead):
            row = lst.rows[lst.view[pos]]
            key = thumb_key(row, geo)
            if key in self._lines:
                self._lines.move_to_end(key)  # on screen or next: the last to be forgotten
            else:
                jobs.append((key, row.abs_path))
        self._keep = 2 * (len(visible) + len(ahead))  # a huge terminal keeps more than LINES_CACHE
        self.loader.want(jobs)

    def _start_decoder(self, run) -> None:
        def job() -> None:
            from textual.worker import get_current_worker

            worker = get_current_worker()
            run(lambda: worker.is_cancelled)

        try:
            self.run_worker(job, thread=True, group="grid-thumbnails", exit_on_error=False)
        except Exception:  # noqa: BLE001 - the app is closing: leave the loader's count right
            run(lambda: True)

    def _post_ready(self) -> None:
        self.post_message(self.ThumbnailsReady())

    def on_image_grid_thumbnails_ready(self, message: ThumbnailsReady) -> None:
        ready = self.loader.take_ready()
        for key, lines in ready.items():
            self._lines[key] = lines
            self._lines.move_to_end(key)
        while len(self._lines) > max(LINES_CACHE, self._keep):
            self._lines.popitem(last=False)
        if ready:
            self.refresh()

    def thumbnail_state(self, row: Row) -> str:
        """``drawn``, ``unreadable`` or ``pending`` for ``row`` at the current cell size."""
        lines = self._lines.get(thumb_key(row, self.geometry))
        return "pending" if lines is None else ("unreadable" if isinstance(lines, str) else "drawn")

    def all_visible_drawn(self) -> bool:
        """Every cell on screen shows its thumbnail (or its unreadable marker)."""
        return not self.size.area or all(self.thumbnail_state(r) != "pending" for r in self.visible_rows())

    # ----- actions (all on the shared ImageList state) ----------------------------------------
    def _move(self, pos: int) -> None:
        self.image_list.cursor = pos
        self.follow_cursor()

    def action_cursor_up(self) -> None:
        if self.image_list.cursor >= self.geometry.columns:
            self._move(self.image_list.cursor - self.geometry.columns)

    def action_cursor_down(self) -> None:
        cols, cursor, n = self.geometry.columns, self.image_list.cursor, len(self.image_list.view)
        if cursor + cols < n:
            self._move(cursor + cols)
        elif (n - 1) // cols > cursor // cols:  # the last row is shorter: go to its last cell
            self._move(n - 1)

    def action_cursor_left(self) -> None:
        self._move(self.image_list.cursor - 1)

    def action_cursor_right(self) -> None:
        self._move(self.image_list.cursor + 1)

    def action_page_up(self) -> None:
        self._move(max(self.image_list.cursor % self.geometry.columns,
                       self.image_list.cursor - self._page_rows() * self.geometry.columns))

    def action_page_down(self) -> None:
        self._move(self.image_list.cursor + self._page_rows() * self.geometry.columns)

    def action_half_page(self, direction: int) -> None:
        self._move(self.image_list.cursor + direction * max(1, self._page_rows() // 2) * self.geometry.columns)

    def action_first(self) -> None:
        self._move(0)

    def action_last(self) -> None:
        self._move(len(self.image_list.view) - 1)

    def action_next_flagged(self, direction: int) -> None:
        self.image_list.action_next_flagged(direction)
        self.follow_cursor()

    def action_cycle_sort(self) -> None:
        self.image_list.action_cycle_sort()
        self.follow_cursor()

    def action_reverse_sort(self) -> None:
        self.image_list.action_reverse_sort()
        self.follow_cursor()

    def action_toggle_select(self) -> None:
        self.image_list.action_toggle_select()
        self.follow_cursor()

    def action_visual(self) -> None:
        self.image_list.action_visual()
        self.follow_cursor()

    def action_select_all(self) -> None:
        self.image_list.action_select_all()
        self.refresh()

    def action_clear_selection(self) -> None:
        self.image_list.action_clear_selection()
        self.refresh()

    def action_open(self) -> None:
        if self.image_list.cursor_row is not None:
            self.post_message(self.Open(self))

    # ----- mouse ------------------------------------------------------------------------------
    def on_click(self, event: events.Click) -> None:
        pos = self.cell_at(event.x, event.y)
        self.focus()
        if pos is None:
            return
        self.image_list.click_at(pos, shift=event.shift, ctrl=event.ctrl)
        self.follow_cursor()

    # ----- rendering --------------------------------------------------------------------------
    _style_key: tuple[object, ...] | None = None
    _style_cache: dict[str, Style]

    def _styles(self) -> dict[str, Style]:
        key = (self.has_focus, self.app.theme, self.styles.background, self.styles.color)
        if self._style_key != key:
            self._style_key = key
            base = self.rich_style
            self._style_cache = {
                "base": base,
                "cursor": base + self.get_component_rich_style("image-grid--cursor"),
                "selected": base + self.get_component_rich_style("image-grid--selected"),
                "flagged": self.get_component_rich_style("image-grid--flagged", partial=True),
                "placeholder": base + self.get_component_rich_style("image-grid--placeholder"),
                "error": self.get_component_rich_style("image-grid--error", partial=True),
                "mark": self.get_component_rich_style("image-grid--mark", partial=True),
            }
        return self._style_cache

    def notify_style_update(self) -> None:
        self._style_key = None
        super().notify_style_update()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        styles = self._styles()
        base = styles["base"]
        lst, geo = self.image_list, self.geometry
        line = self.scroll_offset.y + y
        grid_row, cell_line = divmod(line, geo.cell_h)
        first = grid_row * geo.columns
        n = len(lst.view)
        if not 0 <= first < n or geo.cell_w < 4:
            return Strip.blank(width, base)
        segments: list[Segment] = []
        for pos in range(first, min(n, first + geo.columns)):
            index = lst.view[pos]
            if index >= len(lst.rows):  # rows replaced mid-frame: the next refresh draws them
                break
            segments.extend(self._cell_line(lst.rows[index], pos, cell_line, geo, styles))
        return Strip(segments).adjust_cell_length(width, base)

    def _cell_line(self, row: Row, pos: int, cell_line: int, geo: GridGeometry,
                   styles: dict[str, Style]) -> list[Segment]:
        base = styles["base"]
        gap = Segment(" ", base)
        if cell_line > geo.pic_h:  # the spacing line under the caption
            return [Segment(" " * geo.cell_w, base)]
        lst = self.image_list
        selected = row.path in lst.selected
        tile = styles["cursor"] if pos == lst.cursor else styles["selected"] if selected else base
        if cell_line == geo.pic_h:
            return [*self._caption(row, selected, geo, tile, styles), gap]
        margin = Segment(" ", tile)
        return [margin, *self._picture_line(row, cell_line, geo, tile, styles), margin, gap]

    def _caption(self, row: Row, selected: bool, geo: GridGeometry, tile: Style,
                 styles: dict[str, Style]) -> list[Segment]:
        name = fit_caption(_printable(row.name), geo.tile_w - 2)
        return [
            Segment("●" if selected else " ", tile + styles["mark"] if selected else tile),
            Segment(name, tile),
            Segment("⚑" if row.flags else " ", tile + styles["flagged"] if row.flags else tile),
        ]

    def _picture_line(self, row: Row, cell_line: int, geo: GridGeometry, tile: Style,
                      styles: dict[str, Style]) -> list[Segment]:
        pic_w, pic_h = geo.pic_w, geo.pic_h
        lines = self._lines.get(thumb_key(row, geo))
        if isinstance(lines, str):  # could not be decoded
            if cell_line == pic_h // 2:
                return [Segment(fit_caption(lines.center(pic_w) if len(lines) < pic_w else lines, pic_w),
                                tile + styles["error"])]
            return [Segment(" " * pic_w, tile)]
        if lines:
            idx = cell_line - (pic_h - len(lines)) // 2
            if 0 <= idx < len(lines):
                picture = lines[idx]
                used = sum(s.cell_length for s in picture)
                out = [Segment(s.text, s.style) if s.style else Segment(s.text, tile) for s in picture]
                if used < pic_w:
                    out.append(Segment(" " * (pic_w - used), tile))
                return out
            return [Segment(" " * pic_w, tile)]
        return self._placeholder_line(row, cell_line, pic_w, pic_h, tile, styles["placeholder"])

    @staticmethod
    def _placeholder_line(row: Row, cell_line: int, pic_w: int, pic_h: int, tile: Style,
                          style: Style) -> list[Segment]:
        """A box of the image's shape (known from the index) with a `…` in its middle, until it is decoded."""
        w, h = fit_cells(row.width, row.height, pic_w, pic_h) if row.width and row.height else (pic_w, 2 * pic_h)
        box_h = max(1, (h + 1) // 2)
        top = (pic_h - box_h) // 2
        if not top <= cell_line < top + box_h:
            return [Segment(" " * pic_w, tile)]
        left = (pic_w - w) // 2
        fill = "…".center(w) if cell_line == top + box_h // 2 else " " * w
        return [Segment(" " * left, tile), Segment(fill, style), Segment(" " * (pic_w - w - left), tile)]


class GridHeader(Widget):
    """One line above the grid: the sort order (click to reverse it) and the number of images shown."""

    DEFAULT_CSS = """
    GridHeader { height: 1; background: $panel; color: $text-muted; }
    """

    def __init__(self, grid: ImageGrid, **kwargs) -> None:
        super().__init__(**kwargs)
        self.grid = grid

    def render(self) -> Text:
        lst = self.grid.image_list
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append("  sorted by ")
        text.append(f"{lst.sort_column} {'▼' if lst.sort_reverse else '▲'}", style="bold")
        text.append(f"  ·  {len(lst.view)} shown")
        return text

    def on_click(self, event: events.Click) -> None:
        self.grid.action_reverse_sort()
