"""A generated sentence, cleaned and merged into caption bytes for the three modes (pure, no I/O).

* write: the caption file holds the sentence (after the prefix words, comma-separated), one line; an existing
  file's byte-order mark and line ending are kept.
* prepend / append: the sentence becomes one entry of the tag caption, before or after the tags (the prefix
  words stay first). Commas inside the sentence become semicolons unless asked otherwise, so kohya's caption
  shuffling and ``keep_tokens`` see it as one piece. The file's separator spacing, line ending, BOM and any
  lines after the first are kept (``curator.captions.Caption``).
"""

from __future__ import annotations

import re

from curator.captions import Caption
from curator.captions.tagtext import tag_key

_SPACES = re.compile(r"\s+")


def clean(text: str) -> str:
    """One line, single spaces, no surrounding quotes or spaces."""
    line = _SPACES.sub(" ", text).strip()
    if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'":
        line = line[1:-1].strip()
    return line


def fill_prompt(template: str, trigger: str, tags: list[str], folder: str) -> str:
    """The prompt with ``{trigger}``, ``{tags}`` (the image's tags, comma-separated) and ``{folder}``."""
    return template.format(trigger=trigger, tags=", ".join(tags), folder=folder)


def merge(
    existing: bytes | None,
    sentence: str,
    mode: str,
    prefix: list[str],
    keep_commas: bool = False,
    separator: str = ",",
) -> bytes:
    """The caption file's new bytes."""
    if mode == "write":
        line = ", ".join([*prefix, sentence]) if prefix else sentence
        if existing is not None:
            old = Caption.parse(existing, separator=separator)
            bom = "\ufeff" if existing.startswith(b"\xef\xbb\xbf") else ""
            return (bom + line + (old.eol or "\n")).encode("utf-8")
        return (line + "\n").encode("utf-8")
    if mode not in ("prepend", "append"):
        raise ValueError(f"unknown caption mode {mode!r}; use write, prepend or append")
    piece = sentence if keep_commas else sentence.replace(",", ";")
    caption = Caption.parse(existing, separator=separator) if existing is not None else Caption.new([], separator=separator)
    head = [caption.conform(p) for p in prefix]
    head_keys = {tag_key(p) for p in prefix}
    tags = [t for t in caption.tags if tag_key(t) not in head_keys]
    new = [*head, piece, *tags] if mode == "prepend" else [*head, *tags, piece]
    return caption.with_tags(new, conform=False).to_bytes()
