"""Terminal image previews: protocol detection, a decoded-thumbnail LRU cache, half-block rendering.

Decoding happens in worker threads (callers' job); everything here is thread-safe and Textual-free
except for the ``rich`` Segments the half-block renderer produces.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.color import Color
from rich.segment import Segment
from rich.style import Style

if TYPE_CHECKING:
    from PIL import Image

PROTOCOLS = ("halfblock", "sixel", "kitty")
THUMB_MAX = 384  # longest side kept in the cache: enough for a large preview pane, small in memory


def detect_protocol(env: Mapping[str, str] | None = None, override: str | None = None) -> str:
    """Pick ``halfblock``, ``sixel`` or ``kitty`` for this terminal.

    Order: explicit ``override`` (CLI flag), ``KILN_IMAGE_PROTOCOL``, then detection from
    ``TERM``/``TERM_PROGRAM``/``KITTY_WINDOW_ID``. Inside tmux or screen graphics pass-through is
    unreliable, so detection falls back to half-block there (override to force it).
    """
    env = os.environ if env is None else env
    for choice in (override, env.get("KILN_IMAGE_PROTOCOL")):
        if choice:
            choice = choice.strip().lower()
            if choice in ("auto", ""):
                break
            if choice not in PROTOCOLS:
                raise ValueError(
                    f"image protocol {choice!r} is not one of {', '.join(PROTOCOLS)} "
                    "(set KILN_IMAGE_PROTOCOL or --image-protocol to one of them, or 'auto')"
                )
            return choice
    term = env.get("TERM", "").lower()
    program = env.get("TERM_PROGRAM", "").lower()
    if env.get("TMUX") or term.startswith(("tmux", "screen")):
        return "halfblock"
    if env.get("KITTY_WINDOW_ID") or "kitty" in term or program in ("ghostty", "wezterm") or "ghostty" in term:
        return "kitty"
    if program in ("wezterm", "iterm.app", "mintty") or term in ("foot", "foot-extra", "mlterm") or "sixel" in term:
        return "sixel"
    if env.get("WT_SESSION") or program == "contour":
        return "sixel"
    return "halfblock"


@dataclass(frozen=True)
class ImageKey:
    """Cache identity: a file changes key when it is modified or replaced."""

    path: str
    mtime_ns: int
    size: int

    @classmethod
    def for_path(cls, path: Path) -> ImageKey:
        st = path.stat()
        return cls(str(path), st.st_mtime_ns, st.st_size)


class ThumbnailCache:
    """LRU of decoded RGB thumbnails keyed by path+mtime+size (bounded by count)."""

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._items: OrderedDict[ImageKey, object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path):
        """The thumbnail (``PIL.Image`` in RGB) for ``path``, decoding it on a miss. Raises OSError if unreadable."""
        key = ImageKey.for_path(path)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        thumb = decode_thumbnail(path)
        with self._lock:
            self._items[key] = thumb
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return thumb

    def __len__(self) -> int:
        return len(self._items)


def decode_thumbnail(path: Path, max_side: int = THUMB_MAX) -> Image.Image:
    """Open ``path``, apply EXIF rotation, flatten alpha onto grey, shrink to ``max_side``; RGB result.

    Raises ``OSError`` for anything that cannot be shown: a broken file (whatever the decoder raised), or one
    whose header declares more than the scan's pixel limit (a decompression bomb is refused before any pixel
    is decoded, whatever Pillow's own global limit is at that moment)."""
    try:
        return _decode_thumbnail(path, max_side)
    except OSError:
        raise
    except Exception as exc:  # decoders raise ValueError, SyntaxError, EOFError...: one kind for the callers
        raise OSError(f"cannot decode {path.name}: {exc}") from exc


def _decode_thumbnail(path: Path, max_side: int) -> Image.Image:
    from PIL import Image, ImageOps

    from curator.scan.config import DEFAULT_PIXEL_LIMIT

    with Image.open(path) as opened:
        width, height = opened.size
        if width * height > DEFAULT_PIXEL_LIMIT:
            raise OSError(f"{path.name}: {width}x{height} is more than {DEFAULT_PIXEL_LIMIT // 1_000_000} MP; "
                          "not decoded for a preview")
        opened.draft("RGB", (max_side, max_side))
        img: Image.Image = ImageOps.exif_transpose(opened)
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            base = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
            base.alpha_composite(rgba)
            img = base
        img = img.convert("RGB")
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        return img.copy()


def fit_cells(img_w: int, img_h: int, cols: int, rows: int) -> tuple[int, int]:
    """Largest (pixel width, pixel height) for half-block rendering in ``cols``×``rows`` cells.

    Each cell shows two stacked square-ish pixels, so the pixel box is ``cols`` × ``2*rows``.
    """
    if img_w <= 0 or img_h <= 0 or cols <= 0 or rows <= 0:
        return 0, 0
    scale = min(cols / img_w, (2 * rows) / img_h)
    return max(1, round(img_w * scale)), max(1, round(img_h * scale))


def halfblock_lines(thumb, cols: int, rows: int) -> list[list[Segment]]:
    """Render an RGB image as lines of ``▀`` segments (fg = upper pixel, bg = lower pixel), centred."""
    from PIL import Image

    w, h = fit_cells(thumb.width, thumb.height, cols, rows)
    if w == 0:
        return []
    small = thumb.resize((w, h + (h % 2)), Image.Resampling.BILINEAR) if (w, h) != thumb.size else thumb
    if small.height % 2:
        padded = Image.new("RGB", (small.width, small.height + 1), (0, 0, 0))
        padded.paste(small, (0, 0))
        small = padded
    pixels = small.load()
    pad_left = (cols - w) // 2
    lines: list[list[Segment]] = []
    styles: dict[tuple, Style] = {}
    for y in range(0, small.height, 2):
        line: list[Segment] = []
        if pad_left:
            line.append(Segment(" " * pad_left))
        for x in range(w):
            top, bottom = pixels[x, y], pixels[x, y + 1]
            key = (top, bottom)
            style = styles.get(key)
            if style is None:
                style = Style(color=Color.from_rgb(*top), bgcolor=Color.from_rgb(*bottom))
                styles[key] = style
            line.append(Segment("▀", style))
        lines.append(list(Segment.simplify(line)))
    return lines
