"""kohya's fine-tuning captions: a subset's ``metadata_file`` (the JSON ``merge_captions_to_metadata.py`` /
``merge_dd_tags_to_metadata.py`` write, or kohya's JSON-lines form) instead of caption files.

JSON: ``{image_key: {"caption": ..., "tags": ...}, ...}`` where the key is an absolute image path, a path
relative to ``image_dir``, or (kohya's default) the image's stem. JSON lines: one ``{"image_path", "caption",
"tags"}`` object per line. An image's caption is ``caption`` + ``caption_separator`` + ``tags`` (kohya's
``FineTuningDataset``); only the images the file lists are trained.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from train.data.dataset import DatasetError

if TYPE_CHECKING:
    from curator.layout import Subset
    from curator.records import ImageRecord


class MetadataError(DatasetError):
    """A metadata file that cannot be read; the message names it."""


def read_metadata(path: Path) -> dict[str, dict[str, object]]:
    """The entries of a kohya metadata file (``.json`` or ``.jsonl``), by image key."""
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".jsonl":
            entries: dict[str, dict[str, object]] = {}
            for number, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if not isinstance(row, dict) or not isinstance(row.get("image_path"), str):
                    raise MetadataError(f"{path}: line {number} has no \"image_path\"")
                entries[row["image_path"]] = {k: v for k, v in row.items() if k != "image_path"}
            return entries
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MetadataError(f"{path}: not a readable kohya metadata file ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise MetadataError(f"{path}: a kohya metadata file is one JSON object of {{image: {{\"caption\": ...}}}}")
    return data


def metadata_captions(subset: Subset, records: list[ImageRecord],
                      warn: Callable[[str, str | None], object]) -> dict[str, tuple[str, str]]:
    """(caption, tags) of each record of ``subset`` its metadata file lists, by record path. Listed images
    that are not in the folder are reported once."""
    assert subset.metadata_file is not None
    entries = read_metadata(subset.metadata_file)
    separator = str(subset.options.get("caption_separator") or ",")
    by_path: dict[str, ImageRecord] = {}
    for record in records:
        full = os.path.normpath(str(record.abs_path))
        by_path[full] = record
        by_path.setdefault(os.path.splitext(full)[0], record)  # kohya's keys are often the stem
    out: dict[str, tuple[str, str]] = {}
    missing: list[str] = []
    for key, entry in entries.items():
        full = os.path.normpath(key if os.path.isabs(key) else os.path.join(subset.image_dir, key))
        found = by_path.get(full)
        if found is None:
            missing.append(key)
            continue
        caption = str(entry.get("caption") or "")
        tags = str(entry.get("tags") or "")
        if tags:
            caption = f"{caption}{separator}{tags}" if caption else tags
        out[found.path] = (caption, tags)
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        warn(f"{subset.metadata_file.name}: {len(missing)} listed image(s) not found in {subset.image_dir} "
             f"(or not readable): {shown}", None)
    return out
