"""The records the dataset engine hands out: one image (`ImageRecord`) and one health flag (`Flag`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from curator.layout import Subset

# Every flag kind, in the order reports list them. These exact strings appear in `kiln check --json`.
IMAGE_FILE_KINDS = ("unreadable", "truncated", "empty-file", "not-image", "too-large")
IMAGE_SIZE_KINDS = ("low-res", "tiny", "extreme-aspect")
IMAGE_FORMAT_KINDS = ("animated", "cmyk", "high-bit-depth", "alpha", "exif-rotated")
IMAGE_QUALITY_KINDS = (
    "blurry",
    "too-dark",
    "overexposed",
    "low-information",
    "grayscale",
    "odd-aspect",
    "heavy-jpeg",
    "letterbox",
    "watermark",
    "text-heavy",
)
CAPTION_KINDS = (
    "missing-caption",
    "empty-caption",
    "orphan-caption",
    "both-caption-files",
    "caption-encoding",
    "duplicate-tags",
    "multiline-caption",
)
DUPLICATE_KINDS = ("exact-duplicate", "near-duplicate")
FLAG_KINDS = (
    IMAGE_FILE_KINDS + IMAGE_SIZE_KINDS + IMAGE_FORMAT_KINDS + IMAGE_QUALITY_KINDS + CAPTION_KINDS + DUPLICATE_KINDS
)

# Kinds that mean kohya cannot train on the image at all.
BROKEN_KINDS = frozenset(IMAGE_FILE_KINDS)


@dataclass(frozen=True, slots=True)
class Flag:
    """One health finding. ``path`` is posix, relative to the dataset root (an image or a caption file).

    ``score`` (image-quality kinds and ``alpha``): how bad, 0 at the kind's threshold to 1 at the worst; the
    detail gives the measured value and the threshold. None for findings that are simply true or false.
    """

    path: str
    kind: str
    detail: str
    score: float | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"path": self.path, "kind": self.kind, "detail": self.detail}
        if self.score is not None:
            out["score"] = round(self.score, 4)
        return out


@dataclass(slots=True)
class ImageRecord:
    """One image as the index knows it. ``width``/``height`` are after EXIF rotation; ``abs_path`` is the file.

    ``phash`` is the 64-bit perceptual hash (unsigned), ``None`` when the image could not be decoded.
    ``flags`` holds the findings about the file itself (unreadable, animated, alpha, ...); the full set
    including captions, sizes and duplicates comes from ``Dataset.flags()``.
    """

    path: str
    subset: Subset
    size: int
    mtime_ns: int
    sha256: str
    width: int
    height: int
    format: str
    mode: str
    frames: int
    exif_rotated: bool
    phash: int | None
    flags: list[Flag] = field(default_factory=list)

    @property
    def abs_path(self) -> Path:
        """The file on disk (images sit directly in their subset folder)."""
        return self.subset.image_dir / self.path.rpartition("/")[2]

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def readable(self) -> bool:
        """True when the image decoded (kohya can train on it)."""
        return not any(flag.kind in BROKEN_KINDS for flag in self.flags)
