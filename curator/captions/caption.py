"""The ``Caption`` model: a caption file parsed the way kohya reads it, written back with its own conventions.

kohya sd-scripts reads only the first line of a caption file. kiln parses the tags of that first line, keeps
everything after it byte for byte (and flags it), and when the tags change it rebuilds only the first line
using the file's own conventions: separator spacing, underscores or spaces, escaped parentheses, line ending,
trailing newline, BOM. An untouched caption is written back byte-identical.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from sys import intern

from curator.captions.tagtext import (
    escape_parens,
    is_kaomoji,
    spaces_to_underscores,
    tag_key,
    underscores_to_spaces,
    unescape_parens,
)

BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class CaptionStyle:
    """How a caption file writes its tags."""

    joiner: str = ", "  # separator with its usual spacing
    underscores: bool = False  # multi-word tags written with underscores (``long_hair``)
    spaces: bool = False  # multi-word tags written with spaces (``long hair``); neither: no evidence
    escaped_parens: bool = False  # parentheses written ``\\(`` ``\\)`` (A1111 prompt style)
    trailing_separator: bool = False  # first line ends with the separator (``a, b,``)


class Caption:
    """A parsed caption. ``tags`` are the first line's tags exactly as written (stripped of padding).

    Immutable by convention: edits return a new ``Caption`` (:meth:`with_tags`). The style (separator spacing,
    underscores, escaping) is detected lazily, only when a changed caption is written.
    """

    __slots__ = (
        "tags",
        "separator",
        "lead",
        "trail",
        "eol",
        "rest",
        "bom",
        "decode_error",
        "raw",
        "original_line",
        "_style",
        "_keys",
    )

    def __init__(
        self,
        tags: list[str],
        separator: str = ",",
        style: CaptionStyle | None = None,
        lead: str = "",
        trail: str = "",
        eol: str = "",
        rest: str = "",
        bom: bool = False,
        decode_error: bool = False,
        raw: bytes | None = None,
        original_line: str | None = None,
    ) -> None:
        self.tags = tags
        self.separator = separator
        self.lead = lead  # whitespace before the first tag
        self.trail = trail  # whitespace after the last tag (before the line ending)
        self.eol = eol  # line ending after the first line ('' when the file is one unterminated line)
        self.rest = rest  # everything after the first line, untouched
        self.bom = bom
        self.decode_error = decode_error  # not valid UTF-8; undecodable bytes are kept as they are
        self.raw = raw  # the original bytes while unchanged, for byte-identical writes
        self.original_line = original_line  # the first line as read
        self._style = style
        self._keys: list[str] | None = None

    def __repr__(self) -> str:
        return f"Caption(tags={self.tags!r}, eol={self.eol!r}, extra_lines={self.extra_lines})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Caption) and self.to_bytes() == other.to_bytes()

    __hash__ = None  # type: ignore[assignment]

    def evolve(self, **changes: object) -> Caption:
        """A copy with some attributes changed (like ``dataclasses.replace``)."""
        values: dict[str, object] = {
            name: getattr(self, name)
            for name in ("tags", "separator", "lead", "trail", "eol", "rest", "bom", "decode_error", "raw", "original_line")
        }
        values["style"] = self._style
        values.update(changes)
        return Caption(**values)  # type: ignore[arg-type]

    # ---- reading -------------------------------------------------------------------------------------
    @classmethod
    def parse(cls, raw: bytes, separator: str = ",") -> Caption:
        """Parse caption file bytes. Never fails: undecodable bytes are preserved and flagged."""
        body = raw
        bom = body.startswith(BOM)
        if bom:
            body = body[len(BOM) :]
        try:
            text = body.decode("utf-8")
            decode_error = False
        except UnicodeDecodeError:
            text = body.decode("utf-8", errors="surrogateescape")
            decode_error = True
        nl = text.find("\n")
        if nl < 0:
            first, eol, rest = text, "", ""
            if first.endswith("\r"):
                first, eol = first[:-1], "\r"
        else:
            first, rest = text[:nl], text[nl + 1 :]
            eol = "\n"
            if first.endswith("\r"):
                first, eol = first[:-1], "\r\n"
        stripped = first.strip()
        if stripped is first or stripped == first:
            lead = trail = ""
        else:
            lead = first[: len(first) - len(first.lstrip())]
            trail = first[len(first.rstrip()) :]
        # one string per distinct tag (``sys.intern``): a dataset repeats a few thousand tags over and over, and a
        # copy of each in every caption held 79 MB of 1.5 million strings for the TUI's 100,000 rows
        tags = list(map(intern, filter(None, map(str.strip, stripped.split(separator))))) if stripped else []
        return cls(
            tags=tags,
            separator=separator,
            style=None,
            lead=lead,
            trail=trail,
            eol=eol,
            rest=rest,
            bom=bom,
            decode_error=decode_error,
            raw=raw,
            original_line=first,
        )

    @property
    def style(self) -> CaptionStyle:
        if self._style is None:
            self._style = _style_of_line((self.original_line or "").strip(), self.separator)
        return self._style

    @property
    def first_line(self) -> str:
        """The text kohya trains on (the first line, stripped)."""
        if self.raw is not None and self.original_line is not None:
            return self.original_line.strip()
        return self._format_line(self.tags).strip()

    @property
    def extra_lines(self) -> bool:
        """True when the file has text after the first line (kohya ignores it; kiln keeps it)."""
        return bool(self.rest.strip())

    @property
    def keys(self) -> list[str]:
        """The tags' comparison keys (see :func:`curator.captions.tagtext.tag_key`)."""
        if self._keys is None:
            self._keys = [tag_key(t) for t in self.tags]
        return self._keys

    # ---- writing -------------------------------------------------------------------------------------
    def conform(self, tag: str) -> str:
        """Write a new tag the way this file writes tags (underscores, escaped parentheses)."""
        return _conformed(tag, self.style)

    def _copy(self, tags: list[str], style: CaptionStyle | None = None) -> Caption:
        return Caption(
            tags=tags,
            separator=self.separator,
            style=style or self.style,
            lead=self.lead,
            trail=self.trail,
            eol=self.eol,
            rest=self.rest,
            bom=self.bom,
            decode_error=self.decode_error,
            raw=None,
            original_line=None,
        )

    def with_tags(self, tags: list[str], conform: bool = True) -> Caption:
        """A copy with a new tag list. Tags the file already had keep their exact text; new tags are
        written in the file's conventions unless ``conform`` is False (for style-changing operations)."""
        tags = [t for t in map(str.strip, tags) if t]
        if conform:
            existing = set(self.tags)
            tags = [t if t in existing else self.conform(t) for t in tags]
        if tags == self.tags and self.raw is not None:
            return self
        return self._copy(tags)

    def _format_line(self, tags: list[str]) -> str:
        style = self.style
        line = style.joiner.join(tags)
        if style.trailing_separator and tags:
            line += style.joiner.rstrip() or self.separator
        return line

    def to_bytes(self) -> bytes:
        """The file content. Byte-identical to the input when nothing changed."""
        if self.raw is not None:
            return self.raw
        line = self._format_line(self.tags)
        text = (self.lead + line + self.trail) if line else ""
        text += self.eol + self.rest
        data = text.encode("utf-8", errors="surrogateescape")
        return BOM + data if self.bom else data

    @classmethod
    def new(cls, tags: list[str], separator: str = ",", newline: str = "\n") -> Caption:
        """A caption for a file that does not exist yet (``, `` joined, tags as given, trailing newline)."""
        return cls(
            tags=[], separator=separator, style=CaptionStyle(joiner=separator + " "), eol=newline, raw=None
        ).with_tags(tags, conform=False)


def quick_retag(
    raw: bytes, edit: Callable[[list[str], list[str]], list[str] | None], keys: dict[str, str]
) -> bytes | None:
    """``Caption.parse(raw).with_tags(edit(tags, tag_keys))`` as bytes, worked out without a ``Caption`` for the
    usual caption file: ASCII, ``,`` separated, a printable first line without padding whose separators are all
    written alike (``a, b`` or ``a,b``), and new tags every style writes alike (no blank, ``_``, parenthesis or
    backslash). ``raw`` itself when nothing changes; None for any other caption (use ``Caption``). ``keys``: a
    memo of :func:`tag_key` the caller keeps across files. The bytes are those ``Caption`` writes (a test holds
    the two to each other)."""
    if not raw.isascii():
        return None
    nl = raw.find(b"\n")
    line = (raw if nl < 0 else raw[:nl]).decode("ascii")
    if not line or line[0] == " " or line[-1] == " " or " ," in line or not line.isprintable():
        return None
    n = line.count(",")
    spaced = line.count(", ")
    if spaced == 0:
        joiner = ","
    elif spaced == n and ",  " not in line:
        joiner = ", "
    else:
        return None
    tags = [t for t in map(str.strip, line.split(",")) if t]
    tag_keys = []
    for tag in tags:
        key = keys.get(tag)
        if key is None:
            key = keys[tag] = tag_key(tag)
        tag_keys.append(key)
    new = edit(tags, tag_keys)
    if new is None or new == tags:
        return raw
    new = [t for t in map(str.strip, new) if t]
    existing = set(tags)
    for tag in new:
        if tag not in existing and not _style_free(tag):
            return None
    if new == tags:
        return raw
    if len(tags) <= 1:
        joiner = ", "
    out = joiner.join(new)
    if new and n > 0 and line.endswith(","):  # a trailing separator stays
        out += ","
    data = out.encode("utf-8", errors="surrogateescape")
    return data if nl < 0 else data + raw[nl:]


@lru_cache(maxsize=1024)
def _style_free(tag: str) -> bool:
    """Every caption style writes ``tag`` as it is (what :meth:`Caption.conform` gives, whatever the style)."""
    return all(
        _conformed(tag, _shared_style(", ", underscores, spaces, escaped, False)) == tag
        for underscores in (False, True)
        for spaces in (False, True)
        for escaped in (False, True)
    )


@lru_cache(maxsize=64)
def _splitter(separator: str) -> re.Pattern[str]:
    """``separator`` with the blanks around it, captured (``re.split`` then keeps the joiners)."""
    return re.compile("(" + r"\s*" + re.escape(separator) + r"\s*" + ")")


def _split(line: str, separator: str) -> tuple[list[str], list[str], bool]:
    """Split a line into tags, the exact separator strings (with spacing) between them, and whether the
    line ends with a separator."""
    if not line:
        return [], [], False
    parts = _splitter(separator).split(line)
    tags: list[str] = []
    joiners: list[str] = []
    for i in range(0, len(parts), 2):
        piece = parts[i].strip()
        if not piece:
            continue
        if tags and i >= 1:
            joiners.append(parts[i - 1])
        tags.append(piece)
    trailing = len(parts) > 1 and not parts[-1].strip() and bool(tags)
    return tags, joiners, trailing


def _style_of_line(line: str, separator: str) -> CaptionStyle:
    """The style of a (stripped) first line. Same result as ``_detect_style(*_split(line))``, without the
    regular expression and the per-tag loop in the usual case where every separator is written the same
    way (``a, b, c`` or ``a,b,c``)."""
    if not line:
        return _detect_style([], [], separator, False, line)
    if len(separator) == 1 and not separator.isspace() and line.isprintable():
        # printable: no blank but the plain space (every other whitespace character is a control or
        # separator character). The joiners are then uniform when no separator has a space before it and
        # either none or every one has exactly one space after it
        n = line.count(separator)
        if (" " + separator) not in line:
            spaced = line.count(separator + " ")
            if spaced == 0:
                joiner = separator
            elif spaced == n and (separator + "  ") not in line:
                joiner = separator + " "
            else:
                joiner = ""
            if joiner:
                tags = [t for t in map(str.strip, line.split(separator)) if t]
                trailing = n > 0 and line.endswith(separator) and bool(tags)
                return _detect_style(tags, [joiner] if len(tags) > 1 else [], separator, trailing, line)
    parts = _splitter(separator).split(line)
    seps = parts[1::2]
    if len(set(seps)) > 1:  # mixed spacing: count which joiner is the most common
        tags, joiners, trailing = _split(line, separator)
        return _detect_style(tags, joiners, separator, trailing, line)
    tags = [t for t in (p.strip() for p in parts[0::2]) if t]
    trailing = len(parts) > 1 and not parts[-1].strip() and bool(tags)
    return _detect_style(tags, seps[:1] if len(tags) > 1 else [], separator, trailing, line)


def _detect_style(
    tags: list[str], joiners: list[str], separator: str, trailing: bool, line: str | None = None
) -> CaptionStyle:
    """``line`` (the text the tags come from), when given, lets the tag scans be skipped for characters
    it does not contain."""
    if not joiners:
        joiner = separator + " "
    elif len(joiners) == 1 or len(set(joiners)) == 1:
        joiner = joiners[0]
    else:
        joiner = Counter(joiners).most_common(1)[0][0]
    if separator.strip() and not joiner.strip():
        joiner = separator + " "
    if line is not None and "_" not in line:  # no underscore: spaces win as soon as one tag has one
        underscores, spaces = False, " " in line and any(" " in t for t in tags)
    else:
        multi_underscore = sum(1 for t in tags if "_" in t and not is_kaomoji(t) and " " not in t)
        multi_space = sum(1 for t in tags if " " in t)
        underscores, spaces = multi_underscore > multi_space, multi_space > multi_underscore
    escaped = (line is None or "\\" in line) and any("\\(" in t or "\\)" in t for t in tags)
    return _shared_style(joiner, underscores, spaces, escaped, trailing)


@lru_cache(maxsize=4096)
def _conformed(tag: str, style: CaptionStyle) -> str:
    """``tag`` written in ``style`` (cached: a bulk edit conforms the same new tag for thousands of files that
    share a handful of styles)."""
    tag = " ".join(tag.split())
    if style.underscores:
        tag = spaces_to_underscores(tag)
    elif style.spaces:
        tag = " ".join(underscores_to_spaces(tag).split())
    return escape_parens(tag) if style.escaped_parens else unescape_parens(tag)


@lru_cache(maxsize=512)
def _shared_style(joiner: str, underscores: bool, spaces: bool, escaped: bool, trailing: bool) -> CaptionStyle:
    """One immutable ``CaptionStyle`` per combination (thousands of captions share a handful)."""
    return CaptionStyle(
        joiner=joiner,
        underscores=underscores,
        spaces=spaces,
        escaped_parens=escaped,
        trailing_separator=trailing,
    )


def load_caption(path: Path | str, separator: str = ",") -> Caption:
    """Read and parse a caption file (raises ``OSError`` when it cannot be read)."""
    return Caption.parse(Path(path).read_bytes(), separator=separator)


read_caption = load_caption  # the name docs/ARCHITECTURE.md uses
