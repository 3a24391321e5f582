"""The quick caption edit (``curator.captions.caption.quick_retag``, what a bulk replace by key uses) writes
exactly the bytes the ``Caption`` round trip writes, on any caption: hypothesis-made ones with odd spacing,
weights, trailing separators, line endings, several lines, underscores, escapes and non-ASCII text."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from curator.captions.tagtext import tag_key
from curator.records import ImageRecord
from curator.tags.items import CaptionItem
from curator.tags.ops import _edit, _replace_keys, replace_tag, split_tags

WORDS = ["kilnchar", "KilnChar", "kiln_char", "kiln char", "1girl", "solo", "long hair", "long_hair",
         "(kilnchar:1.2)", "kilnchar\\(x\\)", "ganyu (genshin impact)", "^_^", "smile", "ohwx", "é", "  ", ""]
SEPS = [", ", ",", " ,", " , ", ",  ", ",\t"]
TAILS = ["", "\n", "\r\n", "\r", "\nsecond line\n", "\r\nmore\r\n", ",", ", ", ",\n", " \n", "\n\n"]


@st.composite
def captions(draw: st.DrawFn) -> bytes:
    words = draw(st.lists(st.sampled_from(WORDS), max_size=8))
    uniform = draw(st.booleans())
    sep = draw(st.sampled_from(SEPS))
    line = ""
    for i, word in enumerate(words):
        line += word if i == 0 else (sep if uniform else draw(st.sampled_from(SEPS))) + word
    lead = draw(st.sampled_from(["", "", " ", "\ufeff"]))
    text = lead + line + draw(st.sampled_from(TAILS))
    data = text.encode("utf-8")
    return (b"\xef\xbb\xbf" + data[3:]) if lead == "\ufeff" else data


def _item(raw: bytes) -> CaptionItem:
    """An item holding ``raw`` (the edit never looks at its image record)."""
    record = ImageRecord.__new__(ImageRecord)
    return CaptionItem(record, "/tmp/x.txt", raw)


def _slow(raws: list[bytes], old: str, new: str) -> list[tuple[bytes, bytes | None]]:
    """The Caption round trip alone (no quick path)."""
    exact = frozenset({tag_key(old)})
    replacement = split_tags(new)
    changes = _edit([_item(r) for r in raws],
                    lambda item, tags: _replace_keys(tags, item.caption.keys, exact, replacement), needs=exact)
    return [(c.before or b"", c.after) for c in changes]


@settings(max_examples=400, deadline=None)
@given(st.lists(captions(), min_size=1, max_size=6),
       st.sampled_from(["kilnchar", "kiln char", "1girl", "(kilnchar:1.2)"]),
       st.sampled_from(["kilnperson", "kiln person", "kiln_person", "a, b", "", "solo", "x\\(y\\)", "é"]))
def test_quick_replace_writes_the_bytes_the_caption_round_trip_writes(raws, old, new) -> None:
    quick = [(c.before or b"", c.after) for c in replace_tag([_item(r) for r in raws], old, new)]
    assert quick == _slow(raws, old, new)


def test_quick_replace_on_known_captions() -> None:
    raws = [b"kilnchar, 1girl, solo\n", b"kilnchar,1girl,solo", b"1girl, kilnchar, kilnchar,\r\nline 2\r\n",
            b"kilnchar", b"(kilnchar:1.2), solo\n", b"solo,  kilnchar\n", b" kilnchar, solo\n",
            b"kilnchar, kilnperson\n", b"\xef\xbb\xbfkilnchar, solo\n", b"long_hair, kilnchar\n",
            b"kilnchar ,solo", b"solo , kilnchar\n", b"kilnchar,, solo\n", b"kilnchar, solo,", b"kilnchar,\tsolo\n",
            b",kilnchar", b"kilnchar\r", b"solo, kilnchar \n", b"kilnchar\n\n", b"solo, kilnchar, ", b"kiln char, solo\n"]
    quick = replace_tag([_item(r) for r in raws], "kilnchar", "kilnperson")
    assert [(c.before, c.after) for c in quick] == _slow(raws, "kilnchar", "kilnperson")
    assert quick[0].after == b"kilnperson, 1girl, solo\n" and quick[1].after == b"kilnperson,1girl,solo"
    assert Path(quick[0].caption_path) == Path("/tmp/x.txt")
