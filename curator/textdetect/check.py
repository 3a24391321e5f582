"""The ``text-heavy`` check: each image's text area by the ONNX text detector, cached in the index.

Scores are kept in the index's ``text_scores`` table per image file (its SHA-256) and model (the model file's
SHA-256 with the preprocessing settings), so a second ``kiln check --text-model`` runs the model only on new or
changed images. The detector loads only when an image needs it.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from PIL import Image, ImageOps

from curator.records import Flag, ImageRecord
from curator.textdetect.config import TextModelConfig

if TYPE_CHECKING:
    from curator.autotag.progress import ProgressFactory
    from curator.index import Index
    from curator.textdetect.model import TextDetector

_SCHEMA = """
CREATE TABLE IF NOT EXISTS text_scores (
    path TEXT NOT NULL, sha256 TEXT NOT NULL, model TEXT NOT NULL, area REAL NOT NULL,
    PRIMARY KEY (path, model)
);
"""


def model_key(config: TextModelConfig) -> str:
    """What a cached score depends on: the model file's bytes and the preprocessing."""
    digest = hashlib.sha256()
    with open(config.path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return (f"{digest.hexdigest()[:32]}:{config.preset}:{config.side}:{config.pixel_threshold}:"
            f"lines:{config.box_threshold}:{config.unclip_ratio}:{config.min_elongation}")  # fmt: skip


def _open_image(record: ImageRecord, side: int, pixel_limit: int) -> Image.Image | None:
    """The image, EXIF-rotated, decoded at no less than ``side`` on its longer side where JPEG allows."""
    if record.width * record.height > pixel_limit:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(record.abs_path) as opened:
                if opened.format == "JPEG":
                    opened.draft("RGB", (side, side))
                image = ImageOps.exif_transpose(opened.convert("RGBA") if "A" in opened.mode else opened)
                if image.mode == "RGBA":  # on white, as the scan and the trainer see it
                    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
                    return Image.alpha_composite(white, image).convert("RGB")
                return image.convert("RGB")
    except Exception:  # noqa: BLE001 - an image that does not decode is the file checks' finding
        return None


def text_areas(
    index: Index,
    records: Sequence[ImageRecord],
    config: TextModelConfig,
    pixel_limit: int,
    load: Callable[[TextModelConfig], TextDetector] | None = None,
    progress: ProgressFactory | None = None,
) -> dict[str, float]:
    """Each readable image's text area (0..1), from the cache or the detector (loaded by ``load``, default
    :meth:`TextDetector.load`, only when an image is not cached); ``progress``: a bar over the images the
    detector runs on (``curator.autotag.progress.progress_factory``)."""
    index.ensure_schema(_SCHEMA)
    key = model_key(config)
    cached = {
        path: (sha, area)
        for path, sha, area in index.conn.execute("SELECT path, sha256, area FROM text_scores WHERE model = ?", (key,))
    }
    areas: dict[str, float] = {}
    missing: list[ImageRecord] = []
    for record in records:
        if not record.readable:
            continue
        hit = cached.get(record.path)
        if hit is not None and hit[0] == record.sha256:
            areas[record.path] = hit[1]
        else:
            missing.append(record)
    if not missing:
        return areas
    if load is None:
        from curator.textdetect.model import TextDetector

        load = TextDetector.load
    detector = load(config)
    advance = progress(len(missing), 0) if progress is not None else None
    rows: list[tuple[str, str, str, float]] = []
    try:
        for record in missing:
            image = _open_image(record, config.side, pixel_limit)
            if image is not None:
                areas[record.path] = detector.text_area(image)
                rows.append((record.path, record.sha256, key, areas[record.path]))
            if advance is not None:
                advance(1)
    finally:  # what was scored is kept, also when the run is interrupted
        with index.transaction("keeping the text detector's scores") as tx:
            tx.executemany("INSERT OR REPLACE INTO text_scores (path, sha256, model, area) VALUES (?, ?, ?, ?)", rows)
    return areas


def text_flags(areas: dict[str, float], threshold: float | None, model_name: str) -> list[Flag]:
    """A ``text-heavy`` flag for each image whose text area is over ``threshold`` (None: off)."""
    if threshold is None:
        return []
    flags = []
    for path, area in sorted(areas.items()):
        if area > threshold:
            score = max(0.0, min(1.0, (area - threshold) / (1.0 - threshold))) if threshold < 1 else 1.0
            flags.append(Flag(path, "text-heavy", f"text lines cover {area:.0%} of the image by the text detector "
                              f"{model_name} (over {threshold:.0%}): the model will learn the lettering (crop or "
                              "inpaint it, or caption the text)", score))  # fmt: skip
    return flags
