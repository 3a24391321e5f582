"""A virtualised image list: a Line-API ScrollView that renders only the visible rows.

Holds ``rows`` (every image), ``view`` (indices of the rows that pass the filter, in sort order) and a cursor
into ``view``. The filter, the selection and the current image are not the list's: they live in a
``BrowseState`` (``tui/state.py``; in the app the dataset model's), which the list reads and changes, so every
other part of the app sees the same ones. Scrolling 100,000 rows costs the same as 20.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget

from curator.textsafe import fit_text, printable
from tui.bindings import bindings
from tui.rows import Row, human_size
from tui.state import BrowseState


@dataclass(frozen=True)
class Column:
    """One list column: how to show a row and how to sort by it."""

    key: str
    title: str
    width: int  # 0 = flexible (takes what is left)
    priority: int  # lower numbers are dropped first when the list is narrow
    cell: Callable[[Row], str]
    sort_key: Callable[[Row], Any]
    align: str = "left"
    by_content: bool = False  # the sort key reads what changes in place (tags, flags, bucket)


def _bucket(row: Row) -> str:
    return f"{row.bucket[0]}x{row.bucket[1]}" if row.bucket else ""


COLUMNS: tuple[Column, ...] = (
    Column("name", "name", 0, 100, lambda r: r.name, lambda r: r.name.lower()),
    Column("folder", "folder", 14, 40, lambda r: r.folder, lambda r: (r.folder.lower(), r.name.lower())),
    Column("size", "size", 6, 20, lambda r: human_size(r.size), lambda r: r.size, "right"),
    Column("bucket", "bucket", 9, 50, _bucket, lambda r: (r.bucket or (0, 0)), by_content=True),
    Column("tags", "tags", 4, 60, lambda r: str(len(r.tags)) if r.captions_loaded else "…", lambda r: len(r.tags),
           "right", by_content=True),
    Column("flags", "flags", 12, 70, lambda r: ",".join(r.flag_kinds), lambda r: (-len(r.flags), r.flag_kinds),
           by_content=True),
)
COLUMN_KEYS = tuple(c.key for c in COLUMNS)
MARK_WIDTH = 2
_printable = lru_cache(maxsize=65536)(printable)
MIN_NAME = 12


@lru_cache(maxsize=64)
def layout_columns(width: int) -> list[tuple[Column, int]]:
    """The columns that fit in ``width`` cells with their widths (the name column absorbs the rest)."""
    chosen = list(COLUMNS)
    while True:
        fixed = sum(c.width + 1 for c in chosen if c.width) + MARK_WIDTH
        if width - fixed >= MIN_NAME or len(chosen) == 1:
            break
        droppable = [c for c in chosen if c.width]
        chosen.remove(min(droppable, key=lambda c: c.priority))
    name_width = max(MIN_NAME, width - fixed)
    return [(c, c.width or name_width) for c in chosen]


_fit = fit_text  # cut or padded to the column's width in terminal cells (wide characters count two)


class ListHeader(Widget):
    """The column titles above an ImageList; clicking a title sorts by it."""

    DEFAULT_CSS = """
    ListHeader { height: 1; background: $panel; color: $text-muted; text-style: bold; }
    """

    def __init__(self, image_list: ImageList, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.image_list = image_list

    def render(self) -> Text:
        lst = self.image_list
        out = Text(" " * MARK_WIDTH, no_wrap=True)
        for col, width in layout_columns(self.size.width):
            title = col.title
            if col.key == lst.sort_column:
                title += " ▼" if lst.sort_reverse else " ▲"
            out.append(_fit(title, width, col.align), style="bold" if col.key == lst.sort_column else "")
            out.append(" ")
        return out

    def on_click(self, event: events.Click) -> None:
        x = MARK_WIDTH
        for col, width in layout_columns(self.size.width):
            if x <= event.x < x + width + 1:
                self.image_list.sort_by(col.key, toggle=True)
                return
            x += width + 1


class ImageList(ScrollView, can_focus=True):
    """The dataset as a list; vim keys, `space` to select, `v` for a range. The keys (context ``images`` of
    tui/bindings.py) are shared with the grid (tui/widgets/image_grid.py), which acts on this list's rows and
    cursor."""

    BINDINGS = bindings("images")

    COMPONENT_CLASSES = {
        "image-list--cursor",
        "image-list--selected",
        "image-list--flagged",
        "image-list--dim",
    }

    DEFAULT_CSS = """
    ImageList { background: $surface; scrollbar-size-vertical: 1; overflow-x: hidden; }
    ImageList > .image-list--cursor { background: $block-cursor-blurred-background; }
    ImageList:focus > .image-list--cursor {
        background: $block-cursor-background; color: $block-cursor-foreground; text-style: bold;
    }
    ImageList > .image-list--selected { background: $accent 30%; }
    ImageList > .image-list--flagged { color: $warning; }
    ImageList > .image-list--dim { color: $text-muted; }
    """

    cursor: reactive[int] = reactive(0, always_update=True, repaint=False)

    class CursorMoved(Message):
        """The focused image changed (``row`` is None when the view is empty)."""

        def __init__(self, image_list: ImageList, row: Row | None) -> None:
            super().__init__()
            self.image_list = image_list
            self.row = row

    def __init__(self, state: BrowseState | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state = state if state is not None else BrowseState()
        self.rows: Sequence[Row] = []
        self.view: list[int] = []
        self.sort_column = "folder"
        self.sort_reverse = False
        self._visual_anchor: int | None = None
        self._visual_base: frozenset[str] = frozenset()
        self.header: ListHeader | None = None

    @property
    def selected(self) -> frozenset[str]:
        """The selected image paths (the state's)."""
        return self.state.selected

    # ----- data -------------------------------------------------------------------------------
    def set_rows(self, rows: Sequence[Row]) -> None:
        """Show ``rows`` (after a scan; the list keeps the sequence, it never changes it). The cursor stays on
        the current image when it is still shown, or at the top when it was there (rows arriving during a
        scan do not drag it down)."""
        at_top = self.cursor == 0 and (self.cursor_row is None or self.cursor_row.path == self.state.current)
        self.rows = rows
        self._rebuild(None if at_top else self.state.current)

    def refresh_rows(self) -> None:
        """The filter changed, or rows changed in place (tags edited): re-filter and re-sort, keeping the
        cursor on the current image."""
        self._rebuild(self.state.current)

    _sorted_for: tuple[object, ...] | None = None

    def _rebuild(self, keep_path: str | None) -> None:
        rows = self.rows
        col = next(c for c in COLUMNS if c.key == self.sort_column)
        shown = self.state.matching(rows)
        # the same rows, filter result and sort: the order stands (100,000 rows take ~0.3 s to sort, and every
        # load step, caption read and flag update rebuilds the list)
        key = (shown, len(shown), col.key, self.sort_reverse, self.state.content_version if col.by_content else None)
        old = self._sorted_for
        if old is None or old[0] is not shown or old[1:] != key[1:]:
            self.view = sorted(shown, key=lambda i: col.sort_key(rows[i]), reverse=self.sort_reverse)
            self._sorted_for = key
        self.virtual_size = Size(self.size.width, len(self.view))
        new_cursor = 0
        if keep_path is not None:
            for pos, i in enumerate(self.view):
                if rows[i].path == keep_path:
                    new_cursor = pos
                    break
        self._visual_anchor = None
        self.cursor = min(new_cursor, max(0, len(self.view) - 1))
        self.refresh()
        if self.header is not None:
            self.header.refresh()

    @property
    def cursor_row(self) -> Row | None:
        if 0 <= self.cursor < len(self.view):
            return self.rows[self.view[self.cursor]]
        return None

    def visible_rows(self) -> list[Row]:
        top = self.scroll_offset.y
        return [self.rows[i] for i in self.view[top : top + self.size.height]]

    def view_rows(self) -> list[Row]:
        return [self.rows[i] for i in self.view]

    def selected_rows(self) -> list[Row]:
        return [r for r in self.rows if r.path in self.selected]

    def move_to_path(self, path: str) -> bool:
        for pos, i in enumerate(self.view):
            if self.rows[i].path == path:
                self.cursor = pos
                return True
        return False

    def sort_by(self, key: str, toggle: bool = False) -> None:
        if toggle and key == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = key, False
        self.refresh_rows()

    # ----- cursor -----------------------------------------------------------------------------
    def validate_cursor(self, value: int) -> int:
        return max(0, min(value, len(self.view) - 1)) if self.view else 0

    def watch_cursor(self, old: int, new: int) -> None:
        if self._visual_anchor is not None:
            lo, hi = sorted((self._visual_anchor, new))
            self.state.set_selection(self._visual_base | {self.rows[i].path for i in self.view[lo : hi + 1]})
        row = self.cursor_row
        self.state.set_current(row.path if row is not None else None)
        top = self.scroll_offset.y
        self.scroll_to_cursor()
        if self._visual_anchor is None and self.scroll_offset.y == top:
            self.refresh_line(old)  # only the two rows that changed look (on 100,000 rows as on 20)
            self.refresh_line(new)
        else:
            self.refresh()
        self.post_message(self.CursorMoved(self, row))

    def scroll_to_cursor(self) -> None:
        height = self.scrollable_content_region.height or self.size.height
        top = self.scroll_offset.y
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif height and self.cursor >= top + height:
            self.scroll_to(y=self.cursor - height + 1, animate=False, immediate=True)

    def on_resize(self) -> None:
        self.virtual_size = Size(self.size.width, len(self.view))
        if self.header is not None:
            self.header.refresh()

    def action_cursor_up(self) -> None:
        self.cursor -= 1

    def action_cursor_down(self) -> None:
        self.cursor += 1

    def action_page_up(self) -> None:
        self.cursor -= max(1, self.size.height - 1)

    def action_page_down(self) -> None:
        self.cursor += max(1, self.size.height - 1)

    def action_half_page(self, direction: int) -> None:
        self.cursor += direction * max(1, self.size.height // 2)

    def action_first(self) -> None:
        self.cursor = 0

    def action_last(self) -> None:
        self.cursor = len(self.view) - 1

    def action_next_flagged(self, direction: int) -> None:
        n = len(self.view)
        for step in range(1, n + 1):
            pos = (self.cursor + direction * step) % n
            if self.rows[self.view[pos]].flags:
                self.cursor = pos
                return
        self.notify("No flagged image in this view.", severity="information")

    def action_cycle_sort(self) -> None:
        keys = list(COLUMN_KEYS)
        self.sort_by(keys[(keys.index(self.sort_column) + 1) % len(keys)])
        self.notify(f"Sorted by {self.sort_column}", timeout=1.5)

    def action_reverse_sort(self) -> None:
        self.sort_by(self.sort_column, toggle=True)

    # ----- selection --------------------------------------------------------------------------
    def action_toggle_select(self) -> None:
        row = self.cursor_row
        if row is None:
            return
        self.state.toggle(row.path)
        self.cursor += 1

    def action_visual(self) -> None:
        if self._visual_anchor is None:
            self._visual_anchor = self.cursor
            self._visual_base = self.selected
            self.cursor = self.cursor  # apply the one-row range now
            self.notify("Range select: move, then v again to finish (esc cancels).", timeout=2)
        else:
            self._visual_anchor = None
            self.refresh()

    def action_select_all(self) -> None:
        self.state.select(self.rows[i].path for i in self.view)
        self.refresh()

    def action_clear_selection(self) -> None:
        if self._visual_anchor is not None:
            self.state.set_selection(self._visual_base)
            self._visual_anchor = None
        else:
            self.state.clear_selection()
        self.refresh()

    @property
    def in_visual_mode(self) -> bool:
        return self._visual_anchor is not None

    # ----- mouse ------------------------------------------------------------------------------
    def on_click(self, event: events.Click) -> None:
        pos = self.scroll_offset.y + event.y
        if 0 <= pos < len(self.view):
            self.click_at(pos, shift=event.shift, ctrl=event.ctrl)
            self.focus()

    def click_at(self, pos: int, *, shift: bool = False, ctrl: bool = False) -> None:
        """A click on view position ``pos`` (here or in the grid): shift selects the range from the cursor,
        ctrl toggles the image; the cursor moves there."""
        if shift and self.cursor_row is not None:
            lo, hi = sorted((self.cursor, pos))
            self.state.select(self.rows[i].path for i in self.view[lo : hi + 1])
        elif ctrl:
            self.state.toggle(self.rows[self.view[pos]].path)
        self.cursor = pos

    # ----- rendering --------------------------------------------------------------------------
    _style_key: tuple[object, ...] | None = None
    _style_cache: tuple[Style, Style, Style, Style, Style]

    def _styles(self) -> tuple[Style, Style, Style, Style, Style]:
        """(base, selected, cursor, flagged, dim), cached until focus or theme change."""
        key = (self.has_focus, self.app.theme, self.styles.background, self.styles.color)
        if self._style_key != key:
            self._style_key = key
            self._style_cache = (
                self.rich_style,
                self.get_component_rich_style("image-list--selected"),
                self.get_component_rich_style("image-list--cursor"),
                self.get_component_rich_style("image-list--flagged", partial=True),
                self.get_component_rich_style("image-list--dim", partial=True),
            )
        return self._style_cache

    def notify_style_update(self) -> None:
        self._style_key = None
        super().notify_style_update()

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width or self.size.width
        pos = self.scroll_offset.y + y
        base, selected_style, cursor_style, flag_style, dim_style = self._styles()
        if not (0 <= pos < len(self.view)):
            return Strip.blank(width, base)
        row = self.rows[self.view[pos]]
        selected = row.path in self.selected
        style = base
        if selected:
            style += selected_style
        if pos == self.cursor:
            style += cursor_style
        segments: list[Segment] = [Segment("● " if selected else "  ", style + flag_style if selected else style)]
        for col, col_width in layout_columns(width):
            cell = _fit(_printable(col.cell(row)), col_width, col.align)
            cell_style = style
            if col.key == "flags" and row.flags:
                cell_style = style + flag_style
            elif col.key in ("folder", "size"):
                cell_style = style + dim_style
            segments.append(Segment(cell + " ", cell_style))
        return Strip(segments).adjust_cell_length(width, style)
