"""Which caption file belongs to which image, the kohya way.

kohya reads ``splitext(image_path)[0] + caption_extension`` (``.caption`` by default in its scripts, ``.txt``
in most setups); only the first line counts. kiln looks at both ``.txt`` and ``.caption`` to report images
that have both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from curator.layout import CAPTION_EXTENSIONS, IMAGE_EXTENSIONS


def caption_file_for(image_path: Path | str, extension: str) -> Path:
    """The caption path kohya would read for ``image_path`` (whether or not it exists)."""
    stem, _ext = os.path.splitext(str(image_path))
    return Path(stem + extension)


def caption_target(record: Any) -> Path:
    """Where ``record``'s caption is (or would be written): its subset's caption extension."""
    return caption_file_for(record.abs_path, record.subset.caption_extension)


def caption_path(record: Any) -> Path | None:
    """The existing caption file of an ``ImageRecord`` (its subset's extension), or None."""
    path = caption_target(record)
    return path if path.is_file() else None


def caption_candidates(image_path: Path | str) -> list[Path]:
    """Every existing same-stem caption file (``.txt`` and ``.caption``)."""
    return [p for ext in CAPTION_EXTENSIONS if (p := caption_file_for(image_path, ext)).is_file()]


def is_caption_name(name: str, extensions: tuple[str, ...] = CAPTION_EXTENSIONS) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions


def image_stems(names: set[str] | list[str]) -> set[str]:
    """Stems of the image file names among ``names``."""
    return {os.path.splitext(n)[0] for n in names if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS}
