"""The browser's view-model: one ``Row`` per image, built from curator records (display data only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from curator.records import Flag, ImageRecord
    from curator.tags.query import QueryItem


@dataclass
class Row:
    """What the TUI shows about one image. ``record`` is the curator's ``ImageRecord``."""

    record: ImageRecord
    path: str  # posix, relative to the dataset root (unique key)
    name: str
    folder: str
    size: int
    width: int
    height: int
    bucket: tuple[int, int] | None = None
    tags: list[str] = field(default_factory=list)
    caption_path: Path | None = None  # the existing caption file (None: none yet)
    caption_target: Path | None = None  # where the caption is or would be written
    caption_raw: bytes | None = None
    caption_mtime_ns: int | None = None
    caption_error: str | None = None
    flags: list[Flag] = field(default_factory=list)
    captions_loaded: bool = False
    query_cache: tuple[tuple[bytes | None, int, tuple[int, int] | None], QueryItem] | None = field(
        default=None, repr=False)

    @property
    def abs_path(self) -> Path:
        return Path(self.record.abs_path)

    @property
    def flag_kinds(self) -> list[str]:
        return sorted({str(f.kind) for f in self.flags})


def human_size(n: int) -> str:
    """1536 → '1.5K'; short enough for a narrow column."""
    value = float(n)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            if unit == "B":
                return f"{int(value)}B"
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
        value /= 1024
    return f"{n}B"
