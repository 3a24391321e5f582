"""Caption findings, read the way kohya reads captions.

kohya opens ``splitext(image)[0] + caption_extension`` as UTF-8 text, takes ``readlines()[0].strip()`` and
fails on an empty file. So: a caption that is not UTF-8 breaks training; lines after the first are silently
ignored; tags are the comma-separated parts of that first line.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping

from curator.layout import CAPTION_EXTENSIONS, DatasetLayout, Subset
from curator.records import Flag, ImageRecord
from curator.textsafe import printable, shorten

_LINE_SPLIT = re.compile(r"\r\n|\r|\n")
_SPACES = re.compile(r"\s+")
UTF8_BOM = b"\xef\xbb\xbf"


def _encoding_hint(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return " (it looks like UTF-16)"
    try:
        sample = data.decode("cp1252")
    except UnicodeDecodeError:
        return ""
    return f" (as Windows-1252 it reads {shorten(printable(sample), 40)!r})"


def read_caption_flags(rel_path: str, data: bytes) -> list[Flag]:
    """Flags about one caption file's content (encoding, empty, multiline, duplicate tags)."""
    flags: list[Flag] = []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1].hex()
        flags.append(
            Flag(
                rel_path,
                "caption-encoding",
                f"not UTF-8: byte 0x{bad} at offset {exc.start}{_encoding_hint(data)}; kohya cannot read it. "
                "Re-save it as UTF-8 (kiln never rewrites it silently)",
            )
        )
        return flags
    if data.startswith(UTF8_BOM):
        flags.append(
            Flag(
                rel_path,
                "caption-encoding",
                "starts with a UTF-8 byte-order mark (offset 0); kohya keeps it as part of the first tag",
            )
        )
        text = text[1:]
    lines = _LINE_SPLIT.split(text)
    if lines and lines[-1] == "":
        lines.pop()  # a trailing newline ends the last line, it does not start a new one
    first = lines[0].strip() if lines else ""
    if not first:
        detail = "the file is empty" if not text.strip() else "the first line is empty (kohya reads only that line)"
        if not data:
            detail += "; kohya stops with an error on an empty caption file"
        flags.append(Flag(rel_path, "empty-caption", detail))
    extra = [line for line in lines[1:] if line.strip()]
    if extra:
        flags.append(
            Flag(
                rel_path,
                "multiline-caption",
                f"{len(lines)} lines; kohya reads only the first, ignoring "
                f"{shorten(printable(extra[0].strip()), 40)!r}" + (f" and {len(extra) - 1} more" if len(extra) > 1 else ""),
            )
        )
    if first:
        counts = Counter(_SPACES.sub(" ", tag.strip()).lower() for tag in first.split(","))
        counts.pop("", None)
        repeated = [(tag, n) for tag, n in counts.items() if n > 1]
        if repeated:
            text_list = ", ".join(f"{shorten(printable(tag), 30)!r} ×{n}" for tag, n in repeated[:5])
            more = f" and {len(repeated) - 5} more" if len(repeated) > 5 else ""
            flags.append(Flag(rel_path, "duplicate-tags", f"repeated tags: {text_list}{more}"))
    return flags


def _other_extensions(extension: str) -> list[str]:
    return [ext for ext in CAPTION_EXTENSIONS if ext != extension]


def caption_flags(
    layout: DatasetLayout,
    records: Iterable[ImageRecord],
    other_files: Mapping[str, set[str]],
) -> list[Flag]:
    """Caption findings for every image and every orphan caption file.

    ``other_files``: per subset ``rel_dir``, the names of the non-image files in that folder (from the walk).
    Image flags are reported on the image's path; orphan and content flags on the caption's path.
    """
    flags: list[Flag] = []
    by_subset: dict[str, list[ImageRecord]] = {}
    for record in records:
        by_subset.setdefault(record.subset.rel_dir, []).append(record)
    for subset in layout.subsets:
        names = other_files.get(subset.rel_dir, set())
        subset_records = by_subset.get(subset.rel_dir, [])
        flags += _subset_caption_flags(subset, subset_records, names)
    return flags


def _rel(subset: Subset, name: str) -> str:
    return f"{subset.rel_dir}/{name}" if subset.rel_dir else name


def _subset_caption_flags(subset: Subset, records: list[ImageRecord], names: set[str]) -> list[Flag]:
    flags: list[Flag] = []
    ext = subset.caption_extension
    stems: set[str] = set()
    for record in records:
        image_name = record.path.rsplit("/", 1)[-1]
        stem = os.path.splitext(image_name)[0]
        stems.add(stem)
        target = stem + ext
        others = [stem + e for e in _other_extensions(ext) if stem + e in names]
        if target not in names:
            detail = f"no {target}"
            if others:
                detail += f" (there is {others[0]}, but the caption extension is {ext})"
            if subset.class_tokens:
                detail += f"; kohya will train it with the class tokens {printable(subset.class_tokens)!r} only"
            flags.append(Flag(record.path, "missing-caption", detail))
            continue
        if others:
            flags.append(
                Flag(
                    record.path,
                    "both-caption-files",
                    f"both {target} and {', '.join(others)} exist; kohya reads only {target} (caption extension {ext})",
                )
            )
        caption_abs = subset.image_dir / target
        try:
            data = caption_abs.read_bytes()
        except OSError as exc:
            flags.append(Flag(_rel(subset, target), "caption-encoding", f"cannot read the caption: {exc.strerror}"))
            continue
        flags += read_caption_flags(_rel(subset, target), data)
    for name in sorted(names):
        stem, extension = os.path.splitext(name)
        if extension.lower() in CAPTION_EXTENSIONS and stem not in stems:
            flags.append(Flag(_rel(subset, name), "orphan-caption", f"no image named {printable(stem)}.* beside it"))
    return flags
