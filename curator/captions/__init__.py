"""Caption files: parsing and writing kohya captions with their conventions preserved.

``curator.captions.files`` (dataset helper) locates an image's caption file; this package parses and formats.
"""

from curator.captions.caption import Caption, CaptionStyle, load_caption, read_caption
from curator.captions.tagtext import escape_parens, is_kaomoji, plain, tag_key, unescape_parens

__all__ = [
    "Caption",
    "CaptionStyle",
    "load_caption",
    "read_caption",
    "escape_parens",
    "is_kaomoji",
    "plain",
    "tag_key",
    "unescape_parens",
]
