"""Browser view: the virtualised image list (or thumbnail grid, `m` switches), the filter bar, and beside it the
focused image's preview, facts (size, bucket, resize and crop, flags) and tag editor."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input, Static

from curator.textsafe import printable, safe_text
from tui.bindings import bindings
from tui.messages import ApplyFilter, CaptionsWritten, OpenFilter, ShowView, StatusNote
from tui.rows import Row, human_size
from tui.state import Predicate
from tui.views.base import KilnView
from tui.widgets.image_grid import GridHeader, ImageGrid
from tui.widgets.image_list import ImageList, ListHeader
from tui.widgets.preview import ImagePreview
from tui.widgets.tag_editor import TagEditor, TagList

if TYPE_CHECKING:
    from curator.buckets import BucketSettings

WARM_FILTER_ROWS = 2000  # above this many images a new filter is evaluated in a worker thread
PREVIEW_DELAY = 0.06  # seconds the cursor must rest before decoding starts (fast scrolling stays smooth)
LAYOUTS = ("list", "grid")


class FilterInput(Input):
    """The `/` query box (the tag engine's query language). Enter applies, esc closes."""

    BINDINGS = bindings("filter")

    class Closed(Message):
        """``esc``: the box was closed (the view gives the keys back to the images)."""

    def action_close(self) -> None:
        self.display = False
        self.post_message(self.Closed())


class FactsPanel(Static):
    """Facts of the focused image."""

    DEFAULT_CSS = "FactsPanel { height: auto; max-height: 9; padding: 0 1; background: $panel; }"

    _lines = -1

    def show(self, facts: Text) -> None:
        """Show ``facts`` (one-line rows, no wrapping); the screen is laid out again only when their number of
        lines changed (a layout costs more than the rest of a cursor move)."""
        lines = facts.plain.count("\n") + 1
        self.update(facts, layout=lines != self._lines)
        self._lines = lines


def describe(row: Row, settings: BucketSettings | None) -> Text:
    """Facts text for ``row`` (all file-derived strings as literal Text)."""
    from curator.buckets import assign_bucket

    rec = row.record
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append_text(safe_text(row.name, style="bold"))
    subset = rec.subset
    text.append("\n")
    text.append_text(safe_text(row.folder, style="dim"))
    if subset is not None:
        extra = f"  ×{subset.repeats}" + ("  reg" if subset.is_reg else "")
        text.append(extra, style="dim")
    text.append(f"\n{row.width}×{row.height} {printable(rec.format)} {human_size(row.size)}")
    if not rec.readable:
        text.append("\nnot trained: kohya cannot read this file", style="red")
    elif row.width and row.height and settings is not None:
        try:
            a = assign_bucket(row.width, row.height, settings)
            text.append(f"\nbucket {a.bucket[0]}×{a.bucket[1]}  resize {a.resized[0]}×{a.resized[1]}")
            text.append(f"\ncrop {a.crop[0]},{a.crop[1]}")
            if a.upscaled:
                text.append("  upscaled", style="bold yellow")
        except ValueError as exc:
            text.append(f"\nbucket: {exc}", style="red")
    if row.caption_error:
        text.append("\n")
        text.append_text(safe_text(row.caption_error, style="red"))
    elif row.caption_path is None:
        text.append("\nno caption file", style="yellow")
    for flag in row.flags:
        text.append("\n⚑ ", style="yellow")
        text.append_text(safe_text(f"{flag.kind}: {flag.detail}", style="yellow"))
    return text


class BrowserView(KilnView):
    """The dataset as a list or a thumbnail grid (both on the same rows, cursor and selection), with the
    focused image beside it."""

    VIEW_ID = "browser"
    TITLE = "Browse"
    LIVE_ROWS = True  # the list fills in while a scan runs

    BINDINGS = bindings("browser")

    DEFAULT_CSS = """
    BrowserView > Horizontal { height: 1fr; }
    BrowserView #list-pane { width: 1fr; min-width: 30; }
    BrowserView #list-pane.grid ListHeader, BrowserView #list-pane.grid ImageList { display: none; }
    BrowserView #list-pane GridHeader, BrowserView #list-pane ImageGrid { display: none; }
    BrowserView #list-pane.grid GridHeader, BrowserView #list-pane.grid ImageGrid { display: block; }
    BrowserView #side { width: 38%; min-width: 28; max-width: 90; border-left: tall $panel; }
    BrowserView #side.hidden { display: none; }
    BrowserView FilterInput { height: 1; border: none; padding: 0 1; background: $boost; display: none; }
    BrowserView FilterInput.-error { background: $error 30%; }
    BrowserView #filter-error { height: auto; display: none; color: $error; padding: 0 1; }
    BrowserView ImagePreview { height: 1fr; min-height: 6; }
    BrowserView TagEditor { height: 1fr; }
    """

    _preview_timer: Timer | None = None
    _details_pending = False
    details_path: str | None = None  # the image the facts and tags show (None: none)

    def compose(self) -> ComposeResult:
        self.image_list = ImageList(self.model.state, id="image-list")
        self.image_grid = ImageGrid(self.image_list, id="image-grid")
        self.layout_mode = "grid" if self.kiln.prefs.browser_layout == "grid" else "list"
        with Horizontal():
            with Vertical(id="list-pane", classes="grid" if self.layout_mode == "grid" else ""):
                header = ListHeader(self.image_list, id="list-header")
                self.image_list.header = header
                yield header
                yield self.image_list
                grid_header = GridHeader(self.image_grid, id="grid-header")
                self.image_grid.header = grid_header
                yield grid_header
                yield self.image_grid
                yield FilterInput(placeholder="filter: tag query, e.g. 1girl AND NOT solo  (enter applies, esc closes)",
                                  id="filter", compact=True)
                yield Static(id="filter-error")
            with Vertical(id="side"):
                yield ImagePreview(protocol=self.kiln.image_protocol, id="preview")
                yield FactsPanel(id="facts")
                yield TagEditor(id="tag-editor")

    def on_mount(self) -> None:
        self.focus_images()  # then KilnView shows the rows the index already had, in the first paint

    # ----- the model's changes ----------------------------------------------------------------
    def dataset_loaded(self) -> None:
        self.image_list.set_rows(self.model.rows)
        self._show_focused(immediate=True)

    def captions_changed(self) -> None:
        self.image_list.refresh_rows()
        self._show_details(self.image_list.cursor_row, keep_highlight=True)

    def buckets_changed(self) -> None:
        self.captions_changed()

    def filter_changed(self, text: str) -> None:
        text = self.model.state.filter_text  # the latest (a later change may be on its way)
        box = self.query_one(FilterInput)
        self.query_one("#filter-error").display = False
        box.remove_class("-error")
        box.value = text
        box.display = bool(text) or box.has_focus
        self.image_list.refresh_rows()
        self._show_focused()

    def selection_changed(self, count: int) -> None:
        self.images_widget.refresh()

    def current_changed(self, path: str | None) -> None:
        """The current image was set elsewhere (the Health view's `o`): focus it; when it is not shown here,
        the focused image stays the current one."""
        if path != self.model.state.current:
            return  # a later change is on its way (the user kept moving)
        row = self.image_list.cursor_row
        if path is None or (row is not None and row.path == path) or self.image_list.move_to_path(path):
            return
        if row is not None:
            self.model.state.set_current(row.path)

    def activated(self) -> None:
        self.focus_images()

    # ----- list or grid -----------------------------------------------------------------------
    @property
    def images_widget(self) -> ImageList | ImageGrid:
        """The widget showing the images in the current layout (both share the ImageList's state)."""
        return self.image_grid if self.layout_mode == "grid" else self.image_list

    def focus_images(self) -> None:
        self.images_widget.focus()

    def set_layout(self, mode: str, remember: bool = True) -> None:
        """Show the images as a ``list`` or a ``grid``; the focused image, selection, filter and sort stay."""
        mode = mode if mode in LAYOUTS else "list"
        had_focus = self.screen.focused in (self.image_list, self.image_grid)
        self.layout_mode = mode
        pane = self.query_one("#list-pane")
        pane.set_class(mode == "grid", "grid")
        if mode == "list":
            self.call_after_refresh(self.image_list.scroll_to_cursor)
        else:
            self.call_after_refresh(self.image_grid.follow_cursor)
        if had_focus or self.screen.focused is None:
            self.focus_images()
        if remember and self.kiln.prefs.browser_layout != mode:
            self.kiln.prefs.browser_layout = mode
            self.kiln.save_prefs()

    def action_toggle_layout(self) -> None:
        self.set_layout("list" if self.layout_mode == "grid" else "grid")

    def watched_rows(self) -> list[Row]:
        """Rows whose captions the app polls for outside edits: the focused one and the visible ones."""
        rows = self.images_widget.visible_rows()
        focused = self.image_list.cursor_row
        if focused is not None and focused not in rows:
            rows.append(focused)
        return rows

    # ----- focus follows the cursor -----------------------------------------------------------
    def on_image_list_cursor_moved(self, event: ImageList.CursorMoved) -> None:
        if self.layout_mode == "grid":
            self.image_grid.follow_cursor()
        self._show_focused()

    def on_image_grid_open(self, event: ImageGrid.Open) -> None:
        self.action_edit_tags()

    def _show_focused(self, immediate: bool = False) -> None:
        row = self.image_list.cursor_row
        if immediate:
            self._show_details(row)
        elif not self._details_pending:
            # after the list's new cursor is on screen: the key answers at once, and keys that arrive faster
            # than the screen repaints update the facts and tags once, for the row the cursor rests on
            self._details_pending = True
            self.call_after_refresh(self._show_current_details)
        if self._preview_timer is not None:
            self._preview_timer.stop()
        path = row.abs_path if row is not None else None
        preview = self.query_one(ImagePreview)
        if immediate:
            preview.show(path)
        else:
            self._preview_timer = self.set_timer(PREVIEW_DELAY, lambda: preview.show(path))

    def _show_current_details(self) -> None:
        self._details_pending = False
        self._show_details(self.image_list.cursor_row)

    def _show_details(self, row: Row | None, keep_highlight: bool = False) -> None:
        self.details_path = row.path if row is not None else None
        facts = self.query_one(FactsPanel)
        editor = self.query_one(TagEditor)
        if row is None:
            facts.show(Text("no image" if not self.model.rows else "no image matches the filter", style="dim"))
            editor.show([], self.model.vocabulary)
            return
        facts.show(describe(row, self.model.bucket_settings))
        keep_tokens = int(getattr(row.record.subset, "keep_tokens", 0) or 0)
        editor.show(row.tags, self.model.vocabulary, keep_highlight=keep_highlight, keep_tokens=keep_tokens)

    # ----- tag edits --------------------------------------------------------------------------
    def on_tag_editor_edit(self, event: TagEditor.Edit) -> None:
        row = self.image_list.cursor_row
        if row is None:
            return
        self._write_tags(row, event.tags, f"{event.description} in {printable(row.name)}")

    @work(thread=True, group="tag-write")
    def _write_tags(self, row: Row, tags: list[str], description: str) -> None:
        try:
            result = self.model.set_tags(row, tags, description)  # the model announces the new captions
        except Exception as exc:  # noqa: BLE001 - show the curator's message, keep the UI alive
            self.kiln.ui(self.app.notify, printable(f"Could not save tags: {exc}"), severity="error")
            self.kiln.ui(self._show_details, self.image_list.cursor_row)  # back to the tags on disk
            return
        self.post_message(CaptionsWritten(result, "Tag edit"))

    def action_edit_tags(self) -> None:
        self.query_one(TagList).focus()

    def action_toggle_side(self) -> None:
        self.query_one("#side").toggle_class("hidden")

    def action_bulk(self) -> None:
        self.post_message(ShowView("bulk"))

    # ----- filter -----------------------------------------------------------------------------
    def open_filter(self) -> None:
        box = self.query_one(FilterInput)
        box.display = True
        box.value = self.model.state.filter_text
        box.focus()

    def on_filter_input_closed(self, event: FilterInput.Closed) -> None:
        """esc: the box shows the filter in use again (or closes), without the last query's error."""
        event.stop()
        box = self.query_one(FilterInput)
        self.query_one("#filter-error").display = False
        box.remove_class("-error")
        box.value = self.model.state.filter_text
        box.display = bool(box.value)
        self.focus_images()

    def on_apply_filter(self, message: ApplyFilter) -> None:
        self.apply_filter(message.query)

    def on_open_filter(self, message: OpenFilter) -> None:
        self.open_filter()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            event.stop()
            if self.apply_filter(event.value):
                event.input.display = bool(event.value.strip())
                self.focus_images()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            event.input.remove_class("-error")
            self.query_one("#filter-error").display = False

    def apply_filter(self, text: str, quiet: bool = False) -> bool:
        """Filter the images by a query (the model's state holds it); on a bad query show where it is wrong
        and keep the old filter."""
        error = self.query_one("#filter-error", Static)
        box = self.query_one(FilterInput)
        try:
            predicate = self.model.compile_filter(text)
            if predicate is not None and not quiet and len(self.model.rows) > WARM_FILTER_ROWS:
                self._warm_filter(text, predicate)  # big dataset: evaluate off the UI thread first
                return True
        except Exception as exc:  # noqa: BLE001 - QueryError (or any parse error) is shown to the user
            position = getattr(exc, "position", None)
            message = Text()
            if position is not None:
                message.append_text(safe_text(text))
                message.append("\n" + " " * int(position) + "^ ")
            message.append_text(safe_text(getattr(exc, "message", None) or str(exc)))
            error.update(message)
            error.display = True
            box.add_class("-error")
            box.display = True
            if not quiet:
                box.focus()
            return False
        self._set_filter(text, predicate)
        return True

    @work(thread=True, exclusive=True, group="filter")
    def _warm_filter(self, text: str, predicate: Predicate) -> None:
        self.post_message(StatusNote("filtering…"))
        self.model.warm_filter(predicate)  # fills each row's query cache; the UI thread then only matches
        self.kiln.ui(self._set_filter, text, predicate)
        self.post_message(StatusNote(""))

    def _set_filter(self, text: str, predicate: Predicate | None) -> None:
        self.query_one("#filter-error", Static).display = False
        self.query_one(FilterInput).display = bool(text.strip())
        self.model.state.set_filter(text, predicate)  # announced: filter_changed() shows it
