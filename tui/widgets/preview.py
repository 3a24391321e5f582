"""The focused image, drawn in the terminal: half-block by default, sixel/kitty when available.

Decoding runs in a thread worker and goes through a shared LRU of thumbnails, so moving the cursor
fast never blocks the UI; only the latest request is drawn.
"""

from __future__ import annotations

from pathlib import Path

from rich.segment import Segment
from textual import work
from textual.app import ComposeResult
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static

from curator.textsafe import safe_text
from tui.imaging import ThumbnailCache, halfblock_lines

SHARED_CACHE = ThumbnailCache()


def _to_ui(widget: Widget, callback, *args) -> None:
    """Hand a decoded result to the UI thread, unless the app is already gone."""
    app = widget.app
    if not app.is_running or not widget.is_attached:
        return
    try:
        app.call_from_thread(callback, *args)
    except RuntimeError:
        if app.is_running:
            raise


class HalfBlockImage(Widget):
    """Renders an image with `▀` cells (fg = upper pixel, bg = lower pixel); works over SSH and in tmux."""

    DEFAULT_CSS = """
    HalfBlockImage { width: 1fr; height: 1fr; }
    """

    def __init__(self, cache: ThumbnailCache | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.cache = cache or SHARED_CACHE
        self.path: Path | None = None
        self._thumb = None
        self._lines: list[list[Segment]] = []
        self._lines_size: tuple[int, int] = (0, 0)
        self._message: str = ""
        self._request = 0

    def show(self, path: Path | None) -> None:
        """Start drawing ``path`` (None clears)."""
        self.path = path
        self._request += 1
        self._thumb = None
        self._lines = []
        self._message = ""
        if path is None:
            self.refresh()
            return
        self._load(path, self._request)

    @work(thread=True, exclusive=True, group="halfblock-decode")
    def _load(self, path: Path, request: int) -> None:
        try:
            thumb = self.cache.get(path)
            error = ""
        except Exception as exc:  # noqa: BLE001 - any decoder failure is shown, never raised
            thumb, error = None, f"cannot decode: {type(exc).__name__}: {exc}"
        size = (self.size.width, self.size.height)
        lines = halfblock_lines(thumb, *size) if thumb is not None else []
        _to_ui(self, self._loaded, request, thumb, error, lines, size)

    def _loaded(self, request: int, thumb, error: str, lines: list, size: tuple[int, int]) -> None:
        if request != self._request:
            return
        self._thumb = thumb
        self._message = error
        self._lines, self._lines_size = lines, size
        if thumb is not None and size != (self.size.width, self.size.height):
            self._render_lines(thumb, request)  # resized while decoding: draw again for the new size
        self.refresh()

    def on_resize(self) -> None:
        if self._thumb is not None and self._lines_size != (self.size.width, self.size.height):
            self._render_lines(self._thumb, self._request)

    @work(thread=True, exclusive=True, group="halfblock-render")
    def _render_lines(self, thumb, request: int) -> None:
        size = (self.size.width, self.size.height)
        lines = halfblock_lines(thumb, *size)
        _to_ui(self, self._loaded, request, thumb, self._message, lines, size)

    def render_line(self, y: int) -> Strip:
        width, height = self.size
        if self._thumb is None or not self._lines:
            if y == height // 2 and self._message:
                text = safe_text(self._message, style="italic")
                return Strip(list(text.render(self.app.console))).crop_extend(0, width, self.rich_style)
            return Strip.blank(width, self.rich_style)
        top_pad = (height - len(self._lines)) // 2
        idx = y - top_pad
        if 0 <= idx < len(self._lines):
            return Strip(self._lines[idx]).adjust_cell_length(width, self.rich_style)
        return Strip.blank(width, self.rich_style)


class ImagePreview(Widget):
    """A preview pane that picks its renderer from the protocol (``halfblock``, ``sixel``, ``kitty``)."""

    DEFAULT_CSS = """
    ImagePreview { height: 1fr; min-height: 4; }
    ImagePreview > * { width: 1fr; height: 1fr; }
    """

    def __init__(self, protocol: str = "halfblock", cache: ThumbnailCache | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.protocol = protocol
        self.cache = cache or SHARED_CACHE
        self.path: Path | None = None

    def compose(self) -> ComposeResult:
        if self.protocol in ("sixel", "kitty"):
            try:
                yield self._graphics_widget()
                return
            except Exception:  # noqa: BLE001 - fall back to half-block on any textual-image problem
                self.protocol = "halfblock"
        yield HalfBlockImage(self.cache)

    def _graphics_widget(self) -> Widget:
        from textual_image.widget import SixelImage, TGPImage

        return SixelImage() if self.protocol == "sixel" else TGPImage()

    def show(self, path: Path | None) -> None:
        self.path = path
        if not self.children:
            return
        child = self.children[0]
        if isinstance(child, HalfBlockImage):
            child.show(path)
        else:
            self._load_graphics(path)

    @work(thread=True, exclusive=True, group="graphics-decode")
    def _load_graphics(self, path: Path | None) -> None:
        thumb = None
        if path is not None:
            try:
                thumb = self.cache.get(path)
            except Exception:  # noqa: BLE001
                thumb = None
        _to_ui(self, self._set_graphics, path, thumb)

    def _set_graphics(self, path: Path | None, thumb: object) -> None:
        if path != self.path or not self.children:
            return
        setattr(self.children[0], "image", thumb)  # noqa: B010 - textual-image's widget: typed only at runtime


class Placeholder(Static):
    """A quiet one-line message in place of content (e.g. 'no image')."""

    DEFAULT_CSS = "Placeholder { color: $text-muted; content-align: center middle; height: 1fr; }"
