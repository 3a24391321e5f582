"""Which caption file belongs to which image, the kohya way: the one home of this rule.

kohya reads ``os.path.splitext(image_path)[0] + caption_extension`` (``.caption`` by default in its scripts,
``.txt`` in most setups); only the first line counts. kiln also looks at both ``.txt`` and ``.caption`` to
report images that have both, to count flags raised on either for the image, and to move both with an image
into the trash. Everything in kiln that needs an image's caption file asks this module.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from curator.layout import CAPTION_EXTENSIONS
from curator.records import ImageRecord


def caption_file_for(image_path: Path | str, extension: str) -> Path:
    """The caption path kohya would read for ``image_path`` (whether or not it exists)."""
    stem, _ext = os.path.splitext(os.fspath(image_path))
    return Path(stem + extension)


def caption_target(record: ImageRecord) -> Path:
    """Where ``record``'s caption is (or would be written): its subset's caption extension."""
    return caption_file_for(record.abs_path, record.subset.caption_extension)


def caption_path(record: ImageRecord) -> Path | None:
    """The existing caption file of ``record`` (its subset's extension), or None."""
    path = caption_target(record)
    return path if path.is_file() else None


def caption_targets(records: Sequence[ImageRecord]) -> list[str]:
    """``str(caption_target(record))`` of every record, without pathlib (10k records: ~4 ms instead of
    ~50 ms): each subset's folder becomes a string once (``record.abs_path`` is ``image_dir / <name>``) and
    the stem is cut the way ``os.path.splitext`` cuts it (a name's leading dots do not start an extension)."""
    folders: dict[int, tuple[str, str]] = {}
    out = []
    for rec in records:
        subset = rec.subset
        folder = folders.get(id(subset))
        if folder is None:
            text = os.fspath(subset.image_dir)
            folder = folders[id(subset)] = (text if text.endswith(os.sep) else text + os.sep, subset.caption_extension)
        name = rec.path.rpartition("/")[2]
        dot = name.rfind(".")
        if dot > 0 and name[:dot].strip("."):
            name = name[:dot]
        out.append(folder[0] + name + folder[1])
    return out


def caption_candidates(image_path: Path | str) -> list[Path]:
    """Every existing same-stem caption file (``.txt`` and ``.caption``)."""
    return [p for ext in CAPTION_EXTENSIONS if (p := caption_file_for(image_path, ext)).is_file()]


def caption_rel_paths(image_rel_path: str, extension: str) -> tuple[str, ...]:
    """The dataset-relative paths of every caption file that belongs to the image at ``image_rel_path``:
    the subset's ``extension`` first, then kohya's ``.txt`` and ``.caption`` (health flags raised on any of
    them count for the image)."""
    stem = os.path.splitext(image_rel_path)[0]
    return tuple(stem + ext for ext in dict.fromkeys((extension, *CAPTION_EXTENSIONS)))
