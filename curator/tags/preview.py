"""Render planned caption changes as Rich text: file path, then the before/after tag lines with removed tags
in red and added tags in green. Caption text is data: it is built with ``rich.text.Text`` (never parsed as
markup) and stripped of control characters."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rich.text import Text

from curator.tags.ops import FileDiff
from curator.textsafe import printable


def _rel(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return str(path)


def _tag_line(sign: str, tags: list[str], highlight: set[str], style: str, joiner: str) -> Text:
    line = Text(f"{sign} ", style=style)
    for i, tag in enumerate(tags):
        if i:
            line.append(joiner, style="dim")
        line.append(printable(tag), style=f"bold {style}" if tag in highlight else "")
    if not tags:
        line.append("(empty)", style="dim italic")
    return line


def render_diff(diff: FileDiff, root: Path | None = None, joiner: str | None = None) -> Text:
    """One file's diff as Rich ``Text`` (tags joined the way the file joins them unless ``joiner``)."""
    joiner = joiner if joiner is not None else (diff.joiner or ", ")
    out = Text()
    out.append(printable(_rel(diff.path, root)), style="bold")
    if diff.created:
        out.append("  (new caption file)", style="green")
    elif diff.deleted:
        out.append("  (caption file moved to .kiln/trash)", style="red")
    elif not diff.removed and not diff.added:
        out.append("  (reordered)" if diff.reordered else "  (tag text or layout changed)", style="yellow")
    out.append("\n")
    if not diff.created:
        out.append_text(_tag_line("-", diff.before_tags, set(diff.removed), "red", joiner))
        out.append("\n")
    if not diff.deleted:
        out.append_text(_tag_line("+", diff.after_tags, set(diff.added), "green", joiner))
        out.append("\n")
    return out


def render_diffs(diffs: Iterable[FileDiff], root: Path | None = None, limit: int | None = None) -> Text:
    diffs = list(diffs)
    out = Text()
    for n, diff in enumerate(diffs):
        if limit is not None and n >= limit:
            out.append(f"... and {len(diffs) - limit} more file(s) not shown (--limit 0 shows them all)\n", style="dim")
            break
        out.append_text(render_diff(diff, root))
    return out
