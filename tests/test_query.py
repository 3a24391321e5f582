"""The filter query language: terms, boolean logic, quoting, globs, comparisons and error positions."""

from __future__ import annotations

import pytest

from curator.tags.query import QueryError, QueryItem, parse_query


def item(**kw) -> QueryItem:
    base = dict(
        path="10_ohwx woman/img_001.png",
        name="img_001.png",
        folder="10_ohwx woman",
        tags=frozenset({"1girl", "long hair", "ganyu (genshin impact)", "^_^"}),
        n_tags=4,
        flags=frozenset({"low-res"}),
        width=512,
        height=768,
        bucket=(512, 768),
        token_count=80,
    )
    base.update(kw)
    return QueryItem(**base)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", True),
        ("tag:1girl", True),
        ("tag:long_hair", True),
        ('tag:"Long Hair"', True),
        ("tag:solo", False),
        ("-tag:solo", True),
        ("NOT tag:1girl", False),
        ("not tag:1girl", False),
        ("tag:*hair", True),
        ("tag:long*", True),
        ("tag:?girl", True),
        ("tag:ganyu_(genshin_impact)", True),
        ("tag:ganyu_\\(genshin_impact\\)", True),
        ("tag:^_^", True),
        ("tag:1girl tag:solo", False),
        ("tag:1girl OR tag:solo", True),
        ("tag:1girl and tag:solo or tag:^_^", True),
        ("tag:1girl AND (tag:solo OR tag:^_^)", True),
        ("(tag:solo OR tag:x) AND tag:1girl", False),
        ("name:img_001", True),
        ("name:IMG_0*", True),
        ("name:other", False),
        ('folder:"10_ohwx woman"', True),
        ("folder:10_*", True),
        ("folder:5_dog", False),
        ("flag:low-res", True),
        ("flag:*", True),
        ("-flag:alpha", True),
        ("bucket:512x768", True),
        ("bucket:768x512", False),
        ("tokens>75", True),
        ("tokens > 80", False),
        ("tokens>=80", True),
        ("tokens<=79", False),
        ("tokens=80", True),
        ("tokens:80", True),
        ("tags<5", True),
        ("tags<4", False),
        ("TAGS>=4 TOKENS<100", True),
        ("1girl", True),
        ("-(tag:1girl OR tag:solo)", False),
    ],
)
def test_matching(text: str, expected: bool) -> None:
    assert parse_query(text).matches(item()) is expected


def test_tokens_are_computed_lazily_once() -> None:
    calls = []

    def count() -> int:
        calls.append(1)
        return 10

    it = item(token_count=count)
    assert not parse_query("tag:1girl").matches(item(tags=frozenset())) and not calls
    q = parse_query("tokens<20 AND tokens>5")
    assert q.matches(it) and len(calls) == 1


def test_fields_reported() -> None:
    assert parse_query("tag:a OR (bucket:512x512 -flag:low-res)").fields == {"tag", "bucket", "flag"}


@pytest.mark.parametrize(
    "text, position, words",
    [
        ("tag:", 4, "needs a value"),
        ("(tag:a", 6, "missing ')'"),
        ("tag:a)", 5, "unmatched ')'"),
        ("tokens>x", 7, "whole number"),
        ("tag:a AND foo:bar", 10, "unknown field"),
        ('tag:"abc', 4, "unterminated"),
        ("tag:a OR", 8, "ends where a term"),
        ("AND tag:a", 0, "needs a term"),
        ("bucket:12", 0, "WIDTHxHEIGHT"),
        ("()", 1, "empty parentheses"),
        ("tokens~3", 0, "tokens>N"),
        ("name>3", 4, "takes ':'"),
    ],
)
def test_errors_point_at_position(text: str, position: int, words: str) -> None:
    with pytest.raises(QueryError) as info:
        parse_query(text)
    err = info.value
    assert err.position == position, (err.message, err.position)
    assert words in err.message
    assert err.pointer().splitlines()[1].index("^") == position


def test_values_that_match_nothing_are_refused_with_the_valid_ones() -> None:
    from curator.records import FLAG_KINDS

    with pytest.raises(QueryError) as info:
        parse_query("tag:a AND flag:lowres")
    error = info.value
    assert "flag:lowres matches nothing" in error.message and "did you mean flag:low-res?" in error.message
    assert all(kind in error.message for kind in FLAG_KINDS)
    assert error.position == len("tag:a AND flag:")
    assert parse_query("flag:*dup*").fields == {"flag"}  # a glob matching kinds is fine
    with pytest.raises(QueryError, match="flag:\\*nothing\\* matches nothing"):
        parse_query("flag:*nothing*")
    folders = ["10_ohwx woman", "reg/1_woman", ""]
    assert parse_query("folder:1_woman OR folder:10_*", folders=folders).fields == {"folder"}
    with pytest.raises(QueryError) as info:
        parse_query("folder:10_ohwx", folders=folders)
    assert "folder:10_ohwx matches nothing" in info.value.message and "10_ohwx woman" in info.value.message
    with pytest.raises(QueryError) as info:
        parse_query("bucket:1024x1024", buckets=[(512, 512), (576, 448)])
    assert "the bucket settings in use have no such bucket" in info.value.message
    assert "512x512, 576x448" in info.value.message
