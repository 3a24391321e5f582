"""How a bulk tag operation is put into words: the one home of a journal entry's description.

`kiln tags ...` and the TUI (Bulk view, Tags view) describe what they write with these, so an entry reads the
same in `kiln tags history`, in the TUI's history list and in the undo/redo notices: it names the tags, the
pattern or the options, never only the operation. Tags and patterns are data: they go in through
``curator.textsafe.printable``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from curator.textsafe import printable

MAX_NAMED = 6  # tags named in a description; the rest are counted


def _q(text: str) -> str:
    """``text`` in quotes, printable (a non-UTF-8 byte reads ``\\xNN``, as everywhere; the journal stores it)."""
    return f"'{printable(text)}'"


def _quoted(tags: Sequence[str]) -> str:
    named = ", ".join(_q(t) for t in tags[:MAX_NAMED])
    more = len(tags) - MAX_NAMED
    return named + (f" and {more} more" if more > 0 else "")


def describe_add(tags: Sequence[str], where: str = "end") -> str:
    """``where``: "front", "end" or "position N"."""
    return f"add {_quoted(tags)} at {where}"


def describe_remove(tags: Sequence[str]) -> str:
    return f"remove {_quoted(tags)}"


def describe_replace(old: str, new: str, regex: bool = False) -> str:
    kind = "regex " if regex else ""
    return f"replace {kind}{_q(old)} -> {_q(new)}" if new else f"remove {kind}{_q(old)}"


def describe_trigger(words: Iterable[str]) -> str:
    """``words``: the trigger of each folder ("" when none: the folders' class tokens)."""
    named = sorted({printable(w) for w in words if w})
    return "trigger first: " + (" / ".join(named) if named else "each folder's class tokens")


def describe_sort(by: str, keep: int) -> str:
    return f"sort by {by}, first {keep} kept"


def describe_dedupe() -> str:
    return "remove repeated tags"


def describe_normalize(options: Iterable[str]) -> str:
    """``options``: the normalisations chosen (spaces, lower, escape, unescape)."""
    return "normalize: " + ", ".join(options)


def describe_absorb(tags: Sequence[str]) -> str:
    return f"absorb into the trigger: remove {_quoted(tags)}"


def describe_consolidate(sources: Iterable[str], suffix_heuristic: bool = False) -> str:
    return "consolidate (" + ", ".join(sources) + (", suffix heuristic" if suffix_heuristic else "") + ")"
