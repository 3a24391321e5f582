"""Tag text forms: the comparison key, kaomoji detection and the style conversions.

A tag can be written many ways in caption files (``long_hair``, ``long hair``, ``Long Hair``;
``ganyu_(genshin_impact)`` or ``ganyu \\(genshin impact\\)``). kiln compares tags by their *key*: parentheses
unescaped, underscores turned into spaces (except in kaomoji such as ``^_^``), whitespace collapsed, lower
case.
"""

from __future__ import annotations

import re
from functools import lru_cache

# Danbooru kaomoji tags whose underscores are part of the face (from the tag lists WD14 taggers use).
KAOMOJI = frozenset(
    {
        "0_0",
        "(o)_(o)",
        "+_+",
        "+_-",
        "._.",
        "<o>_<o>",
        "<|>_<|>",
        "=_=",
        ">_<",
        "3_3",
        "6_9",
        ">_o",
        "@_@",
        "^_^",
        "o_o",
        "u_u",
        "x_x",
        "|_|",
        "||_||",
        "-_-",
        ";_;",
        "t_t",
        "q_q",
        "._.;",
        "^_~",
        "~_~",
        ">_>",
        "<_<",
        "o_0",
        "0_o",
        "x_o",
        "n_n",
        "v_v",
        "._o",
        "-_o",
    }
)
_FACE_PART = re.compile(r"^[^\w\s]*\w?[^\w\s]*$")


def is_kaomoji(tag: str) -> bool:
    """True for emoticon tags like ``^_^``, ``o_o``, ``>_<``, ``0_0`` whose underscores must stay."""
    t = tag.strip().lower()
    if t in KAOMOJI:
        return True
    if "_" not in t or " " in t or len(t) > 8:
        return False
    parts = t.split("_")
    return len(parts) == 2 and all(p and _FACE_PART.match(p) for p in parts)


def unescape_parens(tag: str) -> str:
    return tag.replace("\\(", "(").replace("\\)", ")")


def escape_parens(tag: str) -> str:
    """A1111 prompt style: ``(`` and ``)`` become ``\\(`` and ``\\)`` (already escaped ones stay single)."""
    return re.sub(r"(?<!\\)([()])", r"\\\1", tag)


def underscores_to_spaces(tag: str) -> str:
    return tag if is_kaomoji(tag) else tag.replace("_", " ")


def spaces_to_underscores(tag: str) -> str:
    return tag if is_kaomoji(tag) else tag.replace(" ", "_")


_WS = re.compile(r"\s+")


def plain(tag: str) -> str:
    """Human form of a tag: unescaped parentheses, spaces instead of underscores, case kept."""
    return _WS.sub(" ", underscores_to_spaces(unescape_parens(tag.strip())))


@lru_cache(maxsize=1 << 17)
def tag_key(tag: str) -> str:
    """The comparison key: ``Long_Hair`` and ``long hair`` are the same tag."""
    return plain(tag).lower()
