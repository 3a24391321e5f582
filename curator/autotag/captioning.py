"""Merging predicted tags into a caption file's bytes for the three modes (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from curator.autotag.tagtext import tag_key
from curator.captions import Caption

Status = Literal["tagged", "unchanged", "skipped"]


@dataclass
class CaptionPlan:
    """What autotag will do to one caption file. `after` is None when nothing is written."""

    status: Status
    after: bytes | None
    tags: list[str] = field(default_factory=list)  # the caption's tags after the change
    added: list[str] = field(default_factory=list)  # tags that were not there before


def has_tags(existing: bytes | None, separator: str = ",") -> bool:
    """True when a caption file exists and its first line holds at least one tag."""
    return existing is not None and bool(Caption.parse(existing, separator=separator).tags)


def _dedupe(tags: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for tag in tags:
        key = tag_key(tag)
        if key and key not in seen:
            seen.add(key)
            out.append(tag)
    return out


def _prefix_first(tags: list[str], prefix: list[str]) -> list[str]:
    """Prefix tags first (in their given order), each once; the rest keeps its order."""
    if not prefix:
        return tags
    existing = {tag_key(t): t for t in tags}
    head = [existing.get(tag_key(p), p) for p in _dedupe(prefix)]
    head_keys = {tag_key(t) for t in head}
    return head + [t for t in tags if tag_key(t) not in head_keys]


def plan_caption(
    existing: bytes | None,
    predicted: list[str],
    mode: str,
    prefix: list[str] | None = None,
    separator: str = ",",
) -> CaptionPlan:
    """The new caption bytes for one image.

    * missing: only when there is no caption file or its first line holds no tag; otherwise skipped.
    * append: existing tags keep their text and order; predicted tags not already present (compared with
      `tag_key`) are added at the end, written in the file's own conventions.
    * replace: the tags become the prediction; the file's separator spacing, line ending, BOM and any
      lines after the first (which kohya ignores) are kept.
    In every mode the prefix (trigger) tags are moved or inserted first.
    """
    prefix = prefix or []
    caption = Caption.parse(existing, separator=separator) if existing is not None else None
    before_tags = list(caption.tags) if caption is not None else []
    if mode == "missing" and before_tags:
        return CaptionPlan("skipped", None, before_tags, [])
    if mode == "append" and caption is not None:
        known = {tag_key(t) for t in before_tags}
        new = [t for t in _dedupe(predicted) if tag_key(t) not in known]
        tags = _prefix_first(before_tags + new, prefix)
        updated = caption.with_tags(tags, conform=True)
    elif mode in ("missing", "append", "replace"):
        tags = _prefix_first(_dedupe(predicted), prefix)
        if caption is None:
            updated = Caption.new(tags, separator=separator)
        elif not before_tags:
            # an empty caption file: no stray padding around the new tags, but keep BOM/line ending/extra lines
            blank = caption.evolve(lead="", trail="", eol=caption.eol or "\n", raw=None)
            updated = blank.with_tags(tags, conform=False)
        else:
            updated = caption.with_tags(tags, conform=False)
    else:
        raise ValueError(f"unknown autotag mode {mode!r}; use missing, append or replace")
    after = updated.to_bytes()
    known_before = {tag_key(t) for t in before_tags}
    added = [t for t in updated.tags if tag_key(t) not in known_before]
    if existing is not None and after == existing:
        return CaptionPlan("unchanged", None, list(updated.tags), [])
    return CaptionPlan("tagged", after, list(updated.tags), added)
