"""The autotagger's underscore rule: Danbooru tags turn `_` into spaces, except kaomoji.

`KAOMOJI` below is the documented list the WD14 tagger tools (A1111's wd14-tagger extension, taggui, kohya)
keep as-is. The caption layer (`curator.captions.tagtext.is_kaomoji`) recognises a superset (more faces
and a shape rule); a tag either list calls a kaomoji keeps its underscores, so the two never disagree.
Tags are compared with the caption layer's `tag_key`, so `long_hair` and `long hair` are one tag.
"""

from __future__ import annotations

from curator.captions.tagtext import is_kaomoji as _caption_is_kaomoji
from curator.captions.tagtext import tag_key

KAOMOJI: frozenset[str] = frozenset(
    {
        "0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9", ">_o",
        "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||",
    }
)

__all__ = ["KAOMOJI", "display_tag", "is_kaomoji", "tag_key"]


def is_kaomoji(tag: str) -> bool:
    """True for a kaomoji tag (on `KAOMOJI` or recognised by the caption layer)."""
    return tag.strip().lower() in KAOMOJI or _caption_is_kaomoji(tag)


def display_tag(tag: str, keep_underscores: bool = False) -> str:
    """The tag as written into a caption: underscores become spaces unless kept or the tag is a kaomoji."""
    if keep_underscores or is_kaomoji(tag):
        return tag
    return tag.replace("_", " ")
