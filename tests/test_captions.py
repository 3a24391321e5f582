"""Caption parsing and writing: byte-identical round trips, the file's own conventions, kohya's first line."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from curator.captions import Caption, is_kaomoji, load_caption, tag_key
from curator.captions.tagtext import escape_parens, plain, unescape_parens

SAMPLES = [
    b"1girl, long hair, blue eyes\n",
    b"1girl,long_hair,blue_eyes",
    b"1girl , long hair ,blue eyes",
    b"a photo of ohwx woman, smiling, outdoors\r\n",
    b"ganyu \\(genshin impact\\), 1girl, ^_^, o_o\n",
    b"tags, here,\n",
    b"tags, here,  ",
    b"  padded, tags  \n",
    b"first, line\nsecond line kohya ignores\nthird\n",
    b"\xef\xbb\xbfbom, file\n",
    b"not utf8 \xff\xfe, tag\n",
    b"",
    b"\n",
    b"\r\n",
    b"single",
    b"a,,b, ,c",
    b"weighted (tag:1.2), [bracket], {brace}\n",
    b"only\rcarriage",
]


@pytest.mark.parametrize("raw", SAMPLES)
def test_untouched_caption_is_byte_identical(raw: bytes) -> None:
    cap = Caption.parse(raw)
    assert cap.to_bytes() == raw
    assert cap.with_tags(list(cap.tags)).to_bytes() == raw


def test_random_bytes_round_trip() -> None:
    rng = random.Random(7)
    alphabet = [b"a", b"b", b" ", b",", b"_", b"\n", b"\r", b"\\(", b")", b"\xff", b"\xc3\xa9", b"\t"]
    for _ in range(500):
        raw = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert Caption.parse(raw).to_bytes() == raw


def test_rebuilt_caption_is_a_fixed_point() -> None:
    """Changing tags and parsing the result gives back exactly those tags with the same conventions."""
    for raw in SAMPLES:
        cap = Caption.parse(raw)
        new = cap.with_tags(cap.tags + ["added tag"])
        again = Caption.parse(new.to_bytes())
        assert again.tags == new.tags
        assert again.rest == cap.rest and again.eol == cap.eol and again.bom == cap.bom


def test_first_line_only_and_extra_lines_kept_and_flagged() -> None:
    cap = Caption.parse(b"a, b\nnatural language caption\n")
    assert cap.tags == ["a", "b"]
    assert cap.extra_lines
    assert cap.first_line == "a, b"
    out = cap.with_tags(["b"]).to_bytes()
    assert out == b"b\nnatural language caption\n"
    assert not Caption.parse(b"a, b\n").extra_lines


def test_conventions_kept_when_tags_change() -> None:
    cap = Caption.parse(b"long_hair,blue_eyes,ganyu_\\(genshin_impact\\)\r\n")
    assert cap.style.underscores and cap.style.escaped_parens and cap.style.joiner == ","
    out = cap.with_tags(cap.tags + ["white shirt", "keqing (genshin impact)", "^_^"]).to_bytes()
    assert (
        out
        == b"long_hair,blue_eyes,ganyu_\\(genshin_impact\\),white_shirt,keqing_\\(genshin_impact\\),^_^\r\n"
    )

    spaced = Caption.parse(b"long hair, blue eyes")
    out = spaced.with_tags(spaced.tags + ["white_shirt", "x \\(y\\)"]).to_bytes()
    assert out == b"long hair, blue eyes, white shirt, x (y)"  # no newline added: the file had none

    trailing = Caption.parse(b"a, b, \n")
    assert trailing.with_tags(["a"]).to_bytes() == b"a, \n"


def test_bom_and_undecodable_bytes_survive_edits() -> None:
    cap = Caption.parse(b"\xef\xbb\xbfcaf\xe9, ok\n")
    assert cap.decode_error and cap.bom
    assert cap.with_tags(cap.tags + ["new"]).to_bytes() == b"\xef\xbb\xbfcaf\xe9, ok, new\n"


def test_new_caption_defaults() -> None:
    assert Caption.new(["ohwx woman", "1girl"]).to_bytes() == b"ohwx woman, 1girl\n"


def test_tag_keys_and_kaomoji() -> None:
    assert tag_key("Long_Hair") == tag_key("long hair") == "long hair"
    assert tag_key("ganyu_\\(genshin_impact\\)") == "ganyu (genshin impact)"
    for face in ("^_^", "o_o", ">_<", "0_0", "x_x", "-_-", "u_u", ";_;"):
        assert is_kaomoji(face), face
        assert tag_key(face) == face
        assert plain(face) == face
    for tag in ("long_hair", "a_b_c", "hair_ornament", "1girl"):
        assert not is_kaomoji(tag)
    assert escape_parens("a (b)") == "a \\(b\\)"
    assert escape_parens("a \\(b\\)") == "a \\(b\\)"
    assert unescape_parens("a \\(b\\)") == "a (b)"


def test_load_caption_reads_file(tmp_path) -> None:
    p = tmp_path / "x.txt"
    p.write_bytes(b"a, b\r\n")
    cap = load_caption(p)
    assert cap.tags == ["a", "b"] and cap.eol == "\r\n"


def test_custom_separator() -> None:
    cap = Caption.parse(b"a | b c | d", separator="|")
    assert cap.tags == ["a", "b c", "d"]
    assert cap.with_tags(["d", "a"]).to_bytes() == b"d | a"


def test_the_caption_cache_keeps_a_non_utf8_captions_tags(tmp_path: Path) -> None:
    """Issue 18: a latin-1 caption's keys hold surrogates, which sqlite refused as text; the failed write left
    a transaction open and the next scan of the TUI failed ("cannot start a transaction within a transaction")."""
    from curator.index import Index
    from curator.tags.cache import CaptionCache

    root = tmp_path / "ds"
    root.mkdir()
    caption = root / "cafe.txt"
    caption.write_bytes("caf\xe9, coffee\n".encode("latin-1"))
    with Index.open(root) as index:
        for _ in range(2):  # stored, then read back from the cache
            cache = CaptionCache(index, root)
            assert cache.read_many([caption])[caption] == caption.read_bytes()
            assert cache.keys[caption] == ["caf\udce9", "coffee"]
            assert not index.conn.in_transaction
        with index.transaction() as tx:  # the connection is usable
            tx.execute("SELECT 1")


def test_the_caption_cache_reads_without_keys_and_caption_tags_share_strings(tmp_path: Path) -> None:
    """The TUI parses the bytes itself: ``with_keys=False`` returns the same bytes, fresh or cached, keeps no
    keys, and a later reader still gets them. Parsed tags are one string per distinct tag."""
    from curator.index import Index
    from curator.tags.cache import CaptionCache

    root = tmp_path / "ds"
    root.mkdir()
    first, second, gone = root / "a.txt", root / "b.txt", root / "c.txt"
    first.write_bytes(b"red boots, smile\n")
    second.write_bytes(b"smile, red boots")
    with Index.open(root) as index:
        for _ in range(2):  # read from the files (and stored), then from the cache
            cache = CaptionCache(index, root)
            data = cache.read_many([first, second, gone], with_keys=False)
            assert data == {first: first.read_bytes(), second: second.read_bytes(), gone: None}
            assert cache.keys == {}
        cache = CaptionCache(index, root)
        cache.read_many([first, second])
        assert cache.keys == {first: ["red boots", "smile"], second: ["smile", "red boots"]}
    a, b = Caption.parse(first.read_bytes()).tags, Caption.parse(second.read_bytes()).tags
    assert a[0] is b[1] and a[1] is b[0]
