"""File-derived text → safe Rich ``Text`` (never markup, never raw escape sequences)."""

from __future__ import annotations

import re

from rich.text import Text

# C0/C1 control characters, DEL, and bidi overrides that could reorder what the terminal shows.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(value: object) -> str:
    """``value`` as a string with control characters replaced by U+FFFD (tabs/newlines become spaces).

    Uses ``curator.textsafe.printable`` when the curator provides it, so the product has one rule.
    """
    text = str(value)
    try:
        from curator.textsafe import printable as curator_printable
    except ImportError:
        curator_printable = None
    if curator_printable is not None:
        text = curator_printable(text)
    text = text.replace("\t", " ").replace("\n", " ").replace("\r", " ")
    return _CONTROL.sub("\ufffd", text)


def safe_text(value: object, style: str = "") -> Text:
    """A ``rich.text.Text`` holding ``value`` literally: ``[bold]`` stays ``[bold]``, ESC becomes U+FFFD."""
    return Text(printable(value), style=style, no_wrap=True, end="")
