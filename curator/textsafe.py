"""Make file-derived text safe to show: no control characters, no terminal escape sequences.

Names, captions and tags come from files. They are data: before they reach a terminal, control characters
(ESC, BEL, C1 codes, bidi overrides that reorder what is shown) are replaced so a file name cannot move the
cursor, recolour the screen or hide text. Rich markup is a separate concern: :func:`safe_text` builds a
``rich.text.Text`` (never parsed as markup) from it; or ``rich.markup.escape`` the result. This module is the
one home of that rule for every CLI table, log line and TUI widget.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

REPLACEMENT = "\ufffd"

# C0 controls except tab/newline/carriage return, DEL, C1 controls, bidi embedding/override/isolate marks.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS = re.compile("[\t\r\n]")
# A byte that is not UTF-8, as Python's surrogateescape decoding keeps it (U+DC80..U+DCFF stand for 0x80..0xFF).
_UNDECODED_BYTE = re.compile("[\udc80-\udcff]")
_OTHER_SURROGATE = re.compile("[\ud800-\udfff]")


def _show_byte(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()) - 0xDC00:02x}"


def printable(text: object, *, keep_newlines: bool = False) -> str:
    """``text`` as a string with control characters replaced by U+FFFD.

    Tabs, carriage returns and newlines become spaces unless ``keep_newlines`` (then only newlines are kept).
    A byte that is not UTF-8 (a caption or a file name read with surrogateescape) is shown as ``\\xNN``, the
    same in the TUI, every CLI table and the logs (``café`` saved as Latin-1 reads ``caf\\xe9``); any other
    lone surrogate, which no terminal can show, becomes U+FFFD.
    """
    value = _OTHER_SURROGATE.sub(REPLACEMENT, _UNDECODED_BYTE.sub(_show_byte, str(text)))
    if keep_newlines:
        value = value.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    else:
        value = _LINE_BREAKS.sub(" ", value)
    return _CONTROL.sub(REPLACEMENT, value)


# What JSON leaves raw with ensure_ascii=False but a terminal acts on: DEL, C1 controls, bidi marks, line and
# paragraph separators (JSON itself escapes C0); and lone surrogates (a byte that is not UTF-8 in a caption or
# a name), which would make the document itself not UTF-8: as \udcXX escapes it parses back to the same text.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff]")


def dumps_json(data: object, *, indent: int | None = 2) -> str:
    """``data`` as JSON for a terminal or a script: readable UTF-8, with every character a terminal would act
    on written as a ``\\uXXXX`` escape, so the document parses back to exactly ``data`` and printing it moves
    no cursor and reorders no text."""
    import json

    text = json.dumps(data, indent=indent, ensure_ascii=False)
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def fit_text(text: str, width: int, align: str = "left") -> str:
    """``text`` cut or padded to exactly ``width`` terminal cells, wide characters (CJK, emoji) counted as the
    two cells they take, with an ellipsis where it was cut: what keeps the columns of a TUI list aligned.
    ``align``: "left" or "right" (padding goes before)."""
    from rich.cells import cell_len, set_cell_size

    if width <= 0:
        return ""
    cells = cell_len(text)
    if cells > width:
        return set_cell_size(text, width - 1) + "\u2026" if width > 1 else set_cell_size(text, width)
    pad = " " * (width - cells)
    return pad + text if align == "right" else text + pad


def shorten(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis, for table cells."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "\u2026"


def safe_text(value: object, style: str = "") -> Text:
    """A ``rich.text.Text`` holding ``value`` literally, on one line: ``[bold]`` stays ``[bold]``, ESC becomes
    U+FFFD, tabs and newlines become spaces."""
    from rich.text import Text

    return Text(printable(value), style=style, no_wrap=True, end="")


FILE_WIDTH = 100_000
"""The width of CLI output that goes to a file or a pipe: wide enough that no table column is ever cut."""


def cli_console(*, stderr: bool = False, soft_wrap: bool = False) -> Console:
    """The Rich console of a CLI command's tables and lines: no highlighting of what it prints (file-derived
    text stays as it is), the terminal's width on a terminal, and as wide as the content otherwise, so that
    ``kiln dupes > file`` or ``| grep`` never sees a path cut or folded."""
    import sys

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else FILE_WIDTH
    return Console(highlight=False, soft_wrap=soft_wrap, stderr=stderr, width=width)
