"""Unit tests of the TUI's building blocks: protocol detection, half-block rendering, the preview cache,
text safety, the virtualised list, completion and the bar chart."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from curator.textsafe import safe_text
from tests.conftest import photo, save_photo
from tui.imaging import ThumbnailCache, detect_protocol, fit_cells, halfblock_lines


@pytest.mark.parametrize(
    ("env", "override", "expected"),
    [
        ({"TERM": "xterm-256color"}, None, "halfblock"),
        ({"TERM": "xterm-kitty", "KITTY_WINDOW_ID": "1"}, None, "kitty"),
        ({"TERM": "xterm-256color", "TERM_PROGRAM": "WezTerm"}, None, "kitty"),
        ({"TERM": "foot"}, None, "sixel"),
        ({"TERM": "xterm-256color", "TERM_PROGRAM": "iTerm.app"}, None, "sixel"),
        # inside tmux, graphics are off unless asked for
        ({"TERM": "tmux-256color", "TMUX": "/tmp/tmux-0/default,1,0", "KITTY_WINDOW_ID": "1"}, None, "halfblock"),
        ({"TERM": "screen-256color", "KITTY_WINDOW_ID": "1"}, None, "halfblock"),
        ({"TERM": "tmux-256color", "TMUX": "x", "KILN_IMAGE_PROTOCOL": "sixel"}, None, "sixel"),
        ({"TERM": "xterm-kitty", "KILN_IMAGE_PROTOCOL": "halfblock"}, None, "halfblock"),
        ({"TERM": "xterm", "KILN_IMAGE_PROTOCOL": "sixel"}, "kitty", "kitty"),  # the CLI flag wins
        ({"TERM": "xterm-kitty", "KILN_IMAGE_PROTOCOL": "auto"}, None, "kitty"),
    ],
)
def test_detect_protocol(env: dict, override: str | None, expected: str) -> None:
    assert detect_protocol(env, override) == expected


def test_detect_protocol_rejects_unknown_names_clearly() -> None:
    with pytest.raises(ValueError, match="halfblock, sixel, kitty"):
        detect_protocol({"KILN_IMAGE_PROTOCOL": "ascii"})


def test_fit_cells_keeps_aspect_in_half_block_pixels() -> None:
    assert fit_cells(1000, 500, 40, 20) == (40, 20)  # width-bound: 40 px wide, 20 px = 10 rows
    assert fit_cells(500, 1000, 40, 20) == (20, 40)  # height-bound: 2 px per row
    assert fit_cells(0, 10, 40, 20) == (0, 0)


def test_halfblock_uses_upper_pixel_as_fg_and_lower_as_bg() -> None:
    from PIL import Image

    img = Image.new("RGB", (2, 2))
    img.putpixel((0, 0), (255, 0, 0))
    img.putpixel((1, 0), (255, 0, 0))
    img.putpixel((0, 1), (0, 0, 255))
    img.putpixel((1, 1), (0, 0, 255))
    lines = halfblock_lines(img, 2, 1)
    assert len(lines) == 1
    seg = lines[0][0]
    assert seg.text == "▀▀"
    assert seg.style.color.triplet == (255, 0, 0) and seg.style.bgcolor.triplet == (0, 0, 255)


def test_halfblock_of_a_real_photo_fills_the_box_and_centres_it() -> None:
    thumb = photo("astronaut.png", (64, 32))  # 2:1
    lines = halfblock_lines(thumb, 40, 40)
    assert len(lines) == 10  # 40 px wide -> 20 px tall -> 10 rows
    widths = {sum(len(s.text) for s in line) for line in lines}
    assert widths == {40}
    colours = {s.style.color.triplet for line in lines for s in line if s.style}
    assert len(colours) > 20  # a photograph, not a flat fill


def test_thumbnail_cache_is_keyed_by_mtime_and_size(tmp_path: Path) -> None:
    path = save_photo(photo("coffee.png", (300, 200)), tmp_path / "a.png")
    cache = ThumbnailCache(capacity=2)
    first = cache.get(path)
    assert cache.get(path) is first  # hit
    save_photo(photo("astronaut.png", (100, 100)), path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    second = cache.get(path)
    assert second is not first and second.size == (100, 100)
    for i in range(3):
        cache.get(save_photo(photo("coffee.png", (50, 50)), tmp_path / f"b{i}.png"))
    assert len(cache) == 2  # bounded


def test_thumbnail_cache_raises_on_a_broken_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(OSError):
        ThumbnailCache().get(bad)


@pytest.mark.parametrize("raw", ["[bold]x[/]", "[link=http://x]y[/link]", "a\x1b[31mb", "bell\x07", "rtl\u202eevil"])
def test_safe_text_is_literal_and_has_no_control_characters(raw: str) -> None:
    text = safe_text(raw)
    assert text.spans == []
    assert not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 or c == "\u202e" for c in text.plain)
    if "[" in raw and "\x1b" not in raw:
        assert text.plain == raw


def test_completion_ranks_prefix_matches_by_count() -> None:
    from tui.widgets.tag_editor import complete

    vocab = Counter({"long hair": 50, "long_sleeves": 80, "hair ornament": 90, "short hair": 10})
    assert complete("long", vocab, set()) == ["long_sleeves", "long hair"]
    assert complete("hair", vocab, set()) == ["hair ornament", "long hair", "short hair"]
    assert complete("long h", vocab, {"long hair"}) == []
    assert complete("", vocab, set()) == []
    # the shipped Danbooru table fills in tags the dataset does not use yet, after the dataset's own
    from curator.tags.consolidate import known_tags

    table = known_tags()
    assert "very long hair" in table and "long hair" in table
    found = complete("long", vocab, set(), limit=6, known=table)
    assert found[:2] == ["long_sleeves", "long hair"] and "long sleeves" not in found[:2]
    assert any(t.startswith("long ") and t not in vocab for t in found[2:])


def test_bar_chart_cells() -> None:
    from tui.views.buckets import bar

    assert bar(10, 10, 8) == "█" * 8
    assert bar(5, 10, 8) == "█" * 4
    assert bar(1, 2, 1) == "▌"
    assert bar(0, 10, 8) == ""


def _fake_rows(n: int):
    from tui.rows import Row

    subset = SimpleNamespace(rel_dir="10_x", repeats=10, is_reg=False)
    return [
        Row(record=SimpleNamespace(abs_path=Path(f"/nowhere/{i}.png"), subset=subset, format="PNG"),
            path=f"10_x/img{i:06d}.png", name=f"img{i:06d}.png", folder="10_x", size=1000 + i,
            width=512, height=512, bucket=(512, 512), tags=["a"] * (i % 7),
            flags=[SimpleNamespace(kind="low-res", detail="")] if i % 1000 == 0 else [])
        for i in range(n)
    ]


def test_image_list_is_virtual_and_scrolls_100k_rows() -> None:
    from textual.app import App, ComposeResult

    from tui.widgets.image_list import ImageList

    rendered: list[int] = []

    class Probe(ImageList):
        def render_line(self, y: int):
            rendered.append(y)
            return super().render_line(y)

    class ListApp(App):
        def compose(self) -> ComposeResult:
            yield Probe(id="lst")

    async def run() -> None:
        app = ListApp()
        async with app.run_test(size=(80, 24)) as pilot:
            lst = app.query_one(Probe)
            lst.set_rows(_fake_rows(100_000))
            lst.focus()
            await pilot.pause()
            rendered.clear()
            await pilot.press("G")
            await pilot.pause()
            assert lst.cursor == 99_999 and lst.scroll_offset.y == 100_000 - lst.size.height
            assert 0 < len(rendered) <= 3 * lst.size.height  # only the visible rows were drawn
            assert "img099999.png" in lst.render_line(lst.size.height - 1).text
            await pilot.press("n")  # next flagged wraps to the first flagged image
            assert lst.cursor_row.path == "10_x/img000000.png"
            lst.sort_by("size", toggle=False)
            lst.sort_by("size", toggle=True)
            assert lst.cursor_row.path == "10_x/img000000.png" and lst.cursor == 99_999

    asyncio.run(run())


def test_tag_editor_marks_the_keep_tokens_tags() -> None:
    from textual.app import App, ComposeResult

    from tui.widgets.tag_editor import TagEditor, TagList

    class EditorApp(App):
        def compose(self) -> ComposeResult:
            yield TagEditor()

    async def run() -> None:
        app = EditorApp()
        async with app.run_test(size=(60, 20)) as pilot:
            app.query_one(TagEditor).show(["sks", "1girl", "smile"], Counter(), keep_tokens=1)
            await pilot.pause()
            prompts = [str(o.prompt) for o in app.query_one(TagList)._options]
            assert prompts == ["sks  keep", "1girl", "smile"]

    asyncio.run(run())
