"""Bulk tag operations, consolidation, absorb and statistics on a real kohya-layout dataset of photographs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console
from skimage import data as skdata

from curator.dataset import Dataset
from curator.tags import journal, stats
from curator.tags.consolidate import RulesError, consolidate, consolidate_tags, load_rules
from curator.tags.items import ScopeError, load_items
from curator.tags.ops import (
    OperationError,
    absorb,
    absorb_candidates,
    add_tags,
    dedupe,
    normalize,
    plan_to_diff,
    remove_tags,
    replace_tag,
    set_trigger,
    sort_tags,
)
from curator.tags.preview import render_diffs

PHOTOS = (skdata.astronaut, skdata.chelsea, skdata.coffee, skdata.rocket, skdata.camera)

CAPTIONS = {
    "10_ohwx woman/a": b"1girl, long_hair, blue_eyes, smile, white_shirt, shirt\n",
    "10_ohwx woman/b": b"1girl,long_hair,blue_eyes,cat_ears,^_^\r\nsecond line\r\n",
    "10_ohwx woman/c": b"ohwx woman, 1girl, very long hair, long hair, blond hair, smile, smile, blue eyes",
    "10_ohwx woman/d": b"Long Hair, Blue Eyes, [red]markup[/red], ganyu (genshin impact)\n",
    "5_sks dog/e": b"dog, grass, outdoors\n",
    "5_sks dog/f": None,
}


def make_dataset(root: Path) -> Path:
    for n, (key, raw) in enumerate(CAPTIONS.items()):
        folder, stem = key.split("/")
        (root / folder).mkdir(parents=True, exist_ok=True)
        img = PHOTOS[n % len(PHOTOS)]()
        Image.fromarray(img).resize((128 if n % 2 else 64, 64)).save(root / folder / f"{stem}.png")
        if raw is not None:
            (root / folder / f"{stem}.txt").write_bytes(raw)
    return root


@pytest.fixture()
def ds(tmp_path: Path):
    dataset = Dataset.open(make_dataset(tmp_path / "ds"), quiet=True)
    yield dataset
    dataset.close()


def after_of(changes, name: str) -> bytes | None:
    return next(c.after for c in changes if c.caption_path.name == name)


def test_add_front_end_position_and_create(ds) -> None:
    items = load_items(ds)
    changes = add_tags(items, "solo", position="front")
    assert after_of(changes, "a.txt") == b"solo, 1girl, long_hair, blue_eyes, smile, white_shirt, shirt\n"
    assert after_of(changes, "b.txt") == b"solo,1girl,long_hair,blue_eyes,cat_ears,^_^\r\nsecond line\r\n"
    assert after_of(changes, "f.txt") == b"solo\n"  # created
    assert next(c for c in changes if c.caption_path.name == "f.txt").before is None
    end = add_tags(items, "new tag")
    assert after_of(end, "a.txt").endswith(b"shirt, new_tag\n")  # the file's underscore convention
    at = add_tags(items, "x", position=1, create=False)
    assert after_of(at, "e.txt") == b"dog, x, grass, outdoors\n"
    assert all(c.caption_path.name != "f.txt" for c in at)
    assert not add_tags(items, "1girl", create=False) or all(
        b"1girl" not in (c.before or b"") for c in add_tags(items, "1girl", create=False)
    )
    with pytest.raises(OperationError):
        add_tags(items, " , ")


def test_remove_and_glob(ds) -> None:
    items = load_items(ds)
    changes = remove_tags(items, ["long hair"])
    assert after_of(changes, "a.txt") == b"1girl, blue_eyes, smile, white_shirt, shirt\n"
    assert after_of(changes, "d.txt") == b"Blue Eyes, [red]markup[/red], ganyu (genshin impact)\n"
    globbed = remove_tags(items, ["*hair"])
    assert after_of(globbed, "c.txt") == b"ohwx woman, 1girl, smile, smile, blue eyes"


def test_replace_plain_regex_and_errors(ds) -> None:
    items = load_items(ds)
    changes = replace_tag(items, "long hair", "short hair")
    assert after_of(changes, "a.txt") == b"1girl, short_hair, blue_eyes, smile, white_shirt, shirt\n"
    assert after_of(changes, "d.txt") == b"short hair, Blue Eyes, [red]markup[/red], ganyu (genshin impact)\n"
    merged = replace_tag(items, "very long hair", "long hair")  # becomes a duplicate: dropped
    assert after_of(merged, "c.txt") == b"ohwx woman, 1girl, long hair, blond hair, smile, smile, blue eyes"
    rx = replace_tag(items, r"^(\w+) eyes$", r"\1 eyes, eye focus", regex=True)
    assert after_of(rx, "a.txt") == b"1girl, long_hair, blue_eyes, eye_focus, smile, white_shirt, shirt\n"
    with pytest.raises(OperationError, match="bad regular expression"):
        replace_tag(items, "(unclosed", "x", regex=True)
    removal = replace_tag(items, "smile", "")
    assert (
        after_of(removal, "c.txt") == b"ohwx woman, 1girl, very long hair, long hair, blond hair, blue eyes"
    )


def test_dedupe_sort_normalize(ds) -> None:
    items = load_items(ds)
    assert (
        after_of(dedupe(items), "c.txt")
        == b"ohwx woman, 1girl, very long hair, long hair, blond hair, smile, blue eyes"
    )
    alpha = sort_tags(items, by="alpha", keep=1)
    assert (
        after_of(alpha, "c.txt")
        == b"ohwx woman, 1girl, blond hair, blue eyes, long hair, smile, smile, very long hair"
    )
    freq = sort_tags(items, by="freq")
    first = (
        after_of(freq, "e.txt")
        if any(c.caption_path.name == "e.txt" for c in freq)
        else b"dog, grass, outdoors\n"
    )
    assert first == b"dog, grass, outdoors\n"  # ties keep alphabetical order
    assert after_of(freq, "a.txt").startswith(b"blue_eyes, long_hair, 1girl")
    norm = normalize(items, spaces=True, lower=True)
    assert after_of(norm, "b.txt") == b"1girl,long hair,blue eyes,cat ears,^_^\r\nsecond line\r\n"
    assert after_of(norm, "d.txt") == b"long hair, blue eyes, [red]markup[/red], ganyu (genshin impact)\n"
    esc = normalize(items, escape=True)
    assert after_of(esc, "d.txt") == b"Long Hair, Blue Eyes, [red]markup[/red], ganyu \\(genshin impact\\)\n"
    with pytest.raises(OperationError):
        normalize(items)


def test_trigger_default_class_tokens_and_keep_tokens(ds) -> None:
    plan = set_trigger(load_items(ds))
    assert plan.keep_tokens == 1
    assert plan.words == {"10_ohwx woman": ["ohwx woman"], "5_sks dog": ["sks dog"]}
    assert (
        after_of(plan.changes, "a.txt")
        == b"ohwx woman, 1girl, long_hair, blue_eyes, smile, white_shirt, shirt\n"
    )
    assert all(c.caption_path.name != "c.txt" for c in plan.changes)  # already first
    assert after_of(plan.changes, "f.txt") == b"sks dog\n"
    moved = set_trigger(load_items(ds, where="tag:smile"), "smile, 1girl")
    assert moved.keep_tokens == 2
    assert (
        after_of(moved.changes, "c.txt")
        == b"smile, 1girl, ohwx woman, very long hair, long hair, blond hair, blue eyes"
    )


def test_scopes_query_and_files(ds) -> None:
    assert {it.path for it in load_items(ds, where="folder:5_*")} == {"5_sks dog/e.png", "5_sks dog/f.png"}
    assert {it.path for it in load_items(ds, where="tag:long_hair -tag:smile")} == {
        "10_ohwx woman/b.png",
        "10_ohwx woman/d.png",
    }
    assert {it.path for it in load_items(ds, where="tags<4")} == {"5_sks dog/e.png", "5_sks dog/f.png"}
    from curator.buckets import BucketSettings, assign_bucket

    w, h = assign_bucket(128, 64, BucketSettings()).bucket  # no dataset TOML: kohya's defaults
    wide = {it.path for it in load_items(ds, where=f"bucket:{w}x{h}")}
    assert wide == {"10_ohwx woman/b.png", "10_ohwx woman/d.png", "5_sks dog/f.png"}
    assert [it.path for it in load_items(ds, files=[ds.root / "10_ohwx woman/a.txt", "5_sks dog/e.png"])] == [
        "10_ohwx woman/a.png",
        "5_sks dog/e.png",
    ]
    with pytest.raises(ScopeError):
        load_items(ds, files=["nope.png"])


def test_consolidation_rules_and_user_file(ds, tmp_path: Path) -> None:
    rules = load_rules()
    new, fired = consolidate_tags(["absurdly long hair", "very long hair", "long hair", "blond hair"], rules)
    assert new == ["absurdly long hair", "blonde hair"]
    assert ("alias", "blond hair -> blonde hair") in fired
    plan = consolidate(load_items(ds), rules)
    assert after_of(plan.changes, "a.txt") == b"1girl, long_hair, blue_eyes, smile, white_shirt\n"
    assert (
        after_of(plan.changes, "c.txt")
        == b"ohwx woman, 1girl, very long hair, blonde hair, smile, smile, blue eyes"
    )
    assert {h.rule for h in plan.hits} >= {"white shirt drops shirt", "very long hair drops long hair"}

    user = tmp_path / "mine.toml"
    user.write_text(
        '[aliases]\n"feline ears" = ["cat ears"]\n[implications]\n"ganyu (genshin impact)" = ["blue eyes"]\n'
    )
    plan = consolidate(load_items(ds), load_rules([user], builtin=False))
    assert after_of(plan.changes, "b.txt") == b"1girl,long_hair,blue_eyes,feline_ears,^_^\r\nsecond line\r\n"
    assert after_of(plan.changes, "d.txt") == b"Long Hair, [red]markup[/red], ganyu (genshin impact)\n"

    suffix = consolidate(
        load_items(ds, where="folder:10_*"), load_rules(builtin=False), suffix_heuristic=True
    )
    assert after_of(suffix.changes, "a.txt") == b"1girl, long_hair, blue_eyes, smile, white_shirt\n"

    bad = tmp_path / "bad.toml"
    for text, words in (
        ("[aliases\n", "not valid TOML"),
        ("[other]\n", "unknown table"),
        ('[aliases]\n"a" = 3\n', "list of tag names"),
        ('[implications]\n"a" = ["b"]\n"b" = ["a"]\n', "cycle"),
    ):
        bad.write_text(text)
        with pytest.raises(RulesError, match=words):
            load_rules([bad], builtin=False)
    with pytest.raises(RulesError, match="no such rules file"):
        load_rules([tmp_path / "missing.toml"])


def test_absorb_candidates_and_apply(ds) -> None:
    cands = absorb_candidates(load_items(ds), min_share=0.75)
    found = {(c.folder, c.tag) for c in cands}
    assert ("10_ohwx woman", "blue eyes") in found and ("10_ohwx woman", "long hair") in found
    assert ("10_ohwx woman", "ohwx woman") not in found  # the trigger itself is not a candidate
    assert all(c.share >= 0.75 for c in cands)
    changes = absorb(load_items(ds), ["blue eyes"], folders=["10_ohwx woman"])
    assert len(changes) == 4 and all(b"blue" not in c.after.split(b"\n")[0].lower() for c in changes)
    with pytest.raises(OperationError):
        absorb_candidates(load_items(ds), min_share=0)


def test_diff_preview_is_data_not_markup(ds) -> None:
    changes = add_tags(load_items(ds, where="name:d"), "[bold]x[/bold]\x1b[31m")
    diffs = plan_to_diff(changes)
    assert diffs[0].added == ["[bold]x[/bold]\x1b[31m"] and diffs[0].removed == []
    console = Console(record=True, width=200, color_system="truecolor")
    console.print(render_diffs(diffs, ds.root))
    text = console.export_text()
    assert "[red]markup[/red]" in text and "[bold]x[/bold]" in text
    assert "\x1b[31m" not in text
    assert "10_ohwx woman/d.txt" in text


def test_stats_frequencies_cooccurrence_tokens_and_cache(ds) -> None:
    freq = stats.tag_frequencies(ds)
    assert freq.images == 6 and freq.captioned == 5
    assert freq.counts["long hair"] == 4 and freq.counts["smile"] == 2  # once per image
    per = stats.tag_frequencies(ds, by_folder=True)
    assert set(per) == {"10_ohwx woman", "5_sks dog"} and per["5_sks dog"].counts["dog"] == 1
    co = stats.cooccurrence(ds, "smile")
    assert len(co.with_tag) == 2 and co.together["1girl"] == 2 and len(co.without_tag) == 4
    tokens = {t.path: t for t in stats.token_counts(ds)}
    assert tokens["5_sks dog/e.png"].tokens == 5  # dog , grass , outdoors
    assert tokens["5_sks dog/e.png"].warning is None

    # the cache notices edits by stat (size/mtime), including through the journal
    target = ds.root / "5_sks dog/e.txt"
    target.write_bytes(b"cat\n")
    assert stats.tag_frequencies(ds).counts["cat"] == 1
    journal.apply_changes(ds, replace_tag(load_items(ds), "cat", "kitten"), "replace", "x")
    time.sleep(0.01)
    assert stats.tag_frequencies(ds).counts["kitten"] == 1
    assert "cat" not in stats.tag_frequencies(ds).counts


def test_query_items_for_tui_and_trainer(ds) -> None:
    from curator.tags.items import query_items
    from curator.tags.query import parse_query

    items = {it.path: it for it in query_items(ds)}
    assert len(items) == 6
    assert "missing-caption" in items["5_sks dog/f.png"].flags
    assert "multiline-caption" in items["10_ohwx woman/b.png"].flags
    q = parse_query("flag:missing-caption OR (tag:smile tokens>10)")
    assert sorted(p for p, it in items.items() if q.matches(it)) == [
        "10_ohwx woman/a.png",
        "10_ohwx woman/c.png",
        "5_sks dog/f.png",
    ]
    assert {it.path for it in load_items(ds, where="flag:multiline-caption")} == {"10_ohwx woman/b.png"}


def test_folder_only_queries_are_decided_per_folder_as_per_image(ds) -> None:
    """A query that looks at folders only is asked once per subset; it chooses exactly the images (and
    captions) that asking it of every image chooses, for plain names, globs, NOT, AND and OR."""
    from curator.tags.items import CaptionItem, select, select_folders
    from curator.tags.query import parse_query

    records = ds.images()
    for text in ("folder:5_*", 'folder:"10_ohwx woman"', "-folder:5_*", "folder:10_* OR folder:5_*",
                 "folder:10_* folder:5_*", "folder:nothing*", "-(folder:5_* OR folder:10_*)"):
        query = parse_query(text)
        assert query.fields == {"folder"}
        per_image = [it.record for it in select(ds, [CaptionItem(r, "", None) for r in records], query)]
        assert select_folders(records, query) == per_image, text
        loaded = load_items(ds, where=query)
        assert [it.record for it in loaded] == per_image, text
        assert all(it.raw == CAPTIONS[it.path.rsplit(".", 1)[0]] for it in loaded)
