"""Pilot-driven tests of the curator TUI's workflows on a copy of the real sample dataset.

Each test opens ``examples/dataset`` (real photographs with kohya captions, a planted near-duplicate, a missing
caption) copied to a temp folder, drives the app with keys like a person would, and checks the files on disk.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("textual")

from tui.app import KilnApp  # noqa: E402
from tui.config import TuiPrefs  # noqa: E402

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "dataset"
PHOTO_DIR = "10_kilnsample photo"


def copy_example(dest: Path) -> Path:
    """A fresh copy of examples/dataset at ``dest`` (no index), or one built from scikit-image photos."""
    if EXAMPLE.is_dir():
        shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(".kiln"))
        return dest
    from tests.conftest import photo, save_photo, write_caption

    folder = dest / PHOTO_DIR
    for i, (name, caption) in enumerate([("astronaut.png", "kilnsample, 1girl, astronaut, smile"),
                                         ("chelsea.png", "kilnsample, cat, no humans"),
                                         ("coffee.png", "kilnsample, coffee, cup, no humans")]):
        save_photo(photo(name, (512, 512)), folder / f"img{i}.png")
        write_caption(folder / f"img{i}.txt", caption)
    return dest


def make_app(root: Path, **kwargs) -> KilnApp:
    return KilnApp(root, image_protocol="halfblock", theme="dark", prefs=TuiPrefs(), persist_prefs=False, **kwargs)


async def wait_for(pilot, condition, timeout: float = 30.0) -> None:
    """Let the app run until ``condition()`` holds (workers run in threads)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.05)


async def wait_loaded(pilot) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: app.loaded and not app.scanning)
    await wait_for(pilot, lambda: not any(w.is_running for w in app.workers if w.group in ("load", "dupes")))
    await pilot.pause(0.1)


def browser(app):
    return app.view("browser")


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return copy_example(tmp_path / "dataset")


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("KILN_IMAGE_PROTOCOL", raising=False)


def caption_of(root: Path, rel_image: str) -> Path:
    return (root / rel_image).with_suffix(".txt")


# ---------------------------------------------------------------------------------------------- browser


def test_browser_lists_every_image_and_previews_the_focused_one(dataset: Path) -> None:
    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            lst = browser(app).image_list
            images = sorted(p for p in dataset.rglob("*") if p.suffix.lower() in {".jpg", ".png", ".webp"})
            assert len(lst.rows) == len(images)
            assert lst.cursor_row is not None
            from tui.widgets.preview import HalfBlockImage

            preview = app.query_one("#preview").query_one(HalfBlockImage)
            await wait_for(pilot, lambda: preview._thumb is not None)
            assert preview.path == lst.cursor_row.abs_path
            # the preview is drawn with half blocks whose colours come from the photo
            line = preview.render_line(preview.size.height // 2)
            assert "▀" in line.text
            await pilot.press("j", "j")
            await wait_for(pilot, lambda: preview.path == lst.cursor_row.abs_path and preview._thumb is not None)
            facts = str(app.query_one("#facts").render())
            assert lst.cursor_row.name in facts and "bucket" in facts

    asyncio.run(run())


def test_select_with_space_and_a_range_with_v(dataset: Path) -> None:
    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            lst = browser(app).image_list
            first = lst.cursor_row.path
            await pilot.press("space")
            assert lst.selected == {first} and lst.cursor == 1
            await pilot.press("v", "j", "j", "v")
            assert len(lst.selected) == 4  # the first plus rows 1..3
            await pilot.press("escape")
            assert lst.selected == set()
            await pilot.press("G")
            assert lst.cursor == len(lst.view) - 1
            await pilot.press("g", "n")  # next flagged image
            assert lst.cursor_row.flags

    asyncio.run(run())


def test_filter_with_the_query_language_and_a_bad_query(dataset: Path) -> None:
    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            lst = browser(app).image_list
            expected = {r.path for r in lst.rows if "greyscale" in r.tags}
            assert 0 < len(expected) < len(lst.rows)
            await pilot.press("slash")
            await pilot.press(*"tag:greyscale")
            await pilot.press("enter")
            assert {r.path for r in lst.view_rows()} == expected
            assert app.filter_text == "tag:greyscale"
            # a bad query keeps the current filter and says where it is wrong
            await pilot.press("slash", "ctrl+u")
            await pilot.press(*"(greyscale")
            await pilot.press("enter")
            error = app.query_one("#filter-error")
            assert error.display and "^" in str(error.render())
            assert {r.path for r in lst.view_rows()} == expected
            # clearing the query shows everything again
            await pilot.press("ctrl+u", "enter")
            assert len(lst.view) == len(lst.rows)

    asyncio.run(run())


# ------------------------------------------------------------------------------------------- tag editor


def test_tag_editor_reorder_add_with_completion_delete_and_undo(dataset: Path) -> None:
    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            lst = browser(app).image_list
            lst.move_to_path(f"{PHOTO_DIR}/astronaut.jpg")
            await pilot.pause(0.1)
            cap = caption_of(dataset, f"{PHOTO_DIR}/astronaut.jpg")
            original = cap.read_bytes()
            tags = lst.cursor_row.tags
            await pilot.press("e")  # focus the tag list
            await pilot.press("j", "j", "t")  # third tag to the front
            await wait_for(pilot, lambda: cap.read_bytes() != original)
            assert lst.cursor_row.tags[0] == tags[2]
            assert cap.read_text().split(", ")[0] == tags[2]

            # add with completion: "grey" completes to the dataset's "greyscale"
            await pilot.press("a")
            await pilot.press(*"greys")
            await pilot.press("tab", "enter")
            await wait_for(pilot, lambda: "greyscale" in cap.read_text())
            assert lst.cursor_row.tags[-1] == "greyscale"

            # delete the highlighted tag
            await pilot.press("escape")
            from tui.widgets.tag_editor import TagList

            tag_list = app.query_one(TagList)
            tag_list.highlighted = 0
            await pilot.press("d")
            await wait_for(pilot, lambda: tags[2] not in cap.read_text().split(", "))

            # three journaled edits: undo them all, the file is byte-identical again
            for _ in range(3):
                before = cap.read_bytes()
                await pilot.press("u")
                await wait_for(pilot, lambda b=before: cap.read_bytes() != b)
            assert cap.read_bytes() == original
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: cap.read_bytes() != original)
            assert cap.read_text().split(", ")[0] == tags[2]

    asyncio.run(run())


def test_caption_edited_outside_is_noticed_and_not_overwritten(dataset: Path, monkeypatch) -> None:
    import tui.app as app_module

    monkeypatch.setattr(app_module, "CAPTION_POLL_SECONDS", 0.2)

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            row = browser(app).image_list.cursor_row
            cap = row.caption_path
            cap.write_bytes(b"edited, elsewhere\n")
            await wait_for(pilot, lambda: row.tags == ["edited", "elsewhere"])
            # a stale write (file changed after kiln read it) is refused by the journal
            model = app.model
            stale = row.caption_raw
            cap.write_bytes(b"changed again\n")
            result = await asyncio.to_thread(
                model.apply, [model._change(cap, stale, b"kiln write\n")], "edit", "test stale write")
            assert result.conflicts and cap.read_bytes() == b"changed again\n"

    asyncio.run(run())


# ------------------------------------------------------------------------------------------------ bulk


def test_bulk_add_with_preview_confirm_and_undo(dataset: Path) -> None:
    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            lst = browser(app).image_list
            await pilot.press("space", "space")  # select the first two images
            chosen = sorted(lst.selected)
            caps = {p: caption_of(dataset, p) for p in chosen}
            before = {p: c.read_bytes() for p, c in caps.items()}
            untouched = caption_of(dataset, lst.view_rows()[2].path)
            untouched_bytes = untouched.read_bytes()

            await pilot.press("3")  # bulk view, scope defaults to the selection
            bulk = app.view("bulk")
            app.query_one("#tags").value = "watermark, signature"
            await pilot.press("ctrl+e")
            await wait_for(pilot, lambda: "+ watermark" in str(app.query_one("#diff").render()))
            assert all(c.read_bytes() == before[p] for p, c in caps.items())  # preview writes nothing

            await pilot.press("ctrl+s")
            from tui.widgets.dialogs import ConfirmScreen

            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await wait_for(pilot, lambda: all(b"watermark" in c.read_bytes() for c in caps.values()))
            assert untouched.read_bytes() == untouched_bytes
            for c in caps.values():
                assert c.read_text().rstrip("\n").endswith("watermark, signature")
            await wait_for(pilot, lambda: "add tags" in str(
                app.query_one("#history").get_option_at_index(0).prompt).lower())

            await pilot.press("escape")
            await pilot.press("u")
            await wait_for(pilot, lambda: all(c.read_bytes() == before[p] for p, c in caps.items()))
            assert bulk is app.active_view

    asyncio.run(run())


def test_tags_view_filters_by_a_tag_and_renames_it_everywhere(dataset: Path) -> None:
    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            await pilot.press("2")
            tags_view = app.view("tags")
            search = app.query_one("#tag-search")
            search.value = "monochrome"
            await pilot.pause(0.1)
            await pilot.press("tab")
            assert tags_view.current_tag() == "monochrome"
            await pilot.press("enter")
            lst = browser(app).image_list
            assert app.active_view.id == "browser"
            assert lst.view and all("monochrome" in r.tags for r in lst.view_rows())
            n = len(lst.view)

            await pilot.press("2")
            app.query_one("#tag-table").focus()
            await pilot.press("r")
            await pilot.press("ctrl+u", *"black and white", "enter")
            from tui.widgets.dialogs import ConfirmScreen

            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await wait_for(pilot, lambda: "monochrome" not in app.model.vocabulary())
            assert app.model.vocabulary()["black and white"] == n
            on_disk = [p.read_text() for p in dataset.rglob("*.txt")]
            assert not any("monochrome" in t for t in on_disk)

    asyncio.run(run())


# ---------------------------------------------------------------------------------------------- health


def test_resolve_duplicates_moves_to_trash_and_restores(dataset: Path) -> None:
    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            await pilot.press("5")
            health = app.view("health")
            await wait_for(pilot, lambda: bool(health.clusters))
            cluster = health.clusters[0]
            await pilot.press("5")  # activation puts the cursor on the first cluster
            await wait_for(pilot, lambda: app.query_one("#cluster-pane").cluster is cluster)
            await pilot.press("enter")  # into the cluster's cards
            pane = app.query_one("#cluster-pane")
            keep = pane.cards[pane.current].rel_path
            others = [p for p in cluster.members if p != keep]
            await pilot.press("K")
            from tui.widgets.dialogs import ConfirmScreen

            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await wait_for(pilot, lambda: not any((dataset / p).exists() for p in others))
            assert (dataset / keep).exists()
            trash = dataset / ".kiln" / "trash"
            assert any(trash.rglob(Path(others[0]).name))
            await wait_loaded(pilot)
            assert all(p not in app.model.by_path for p in others)

            app.query_one("#health-tree").focus()
            await pilot.press("R")
            await wait_for(pilot, lambda: all((dataset / p).exists() for p in others))

    asyncio.run(run())


# ----------------------------------------------------------------------------------- safety and chrome


def test_file_names_and_captions_are_shown_literally(tmp_path: Path) -> None:
    from tests.conftest import photo, save_photo

    root = tmp_path / "dataset"
    folder = root / "3_weird"
    save_photo(photo("coffee.png", (256, 256)), folder / "[bold]x[/].png")
    (folder / "[bold]x[/].txt").write_bytes(b"[red]tag[/], \x1b[31mevil\x07, plain\n")

    async def run() -> None:
        app = make_app(root)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            lst = browser(app).image_list
            line = lst.render_line(0).text
            assert "[bold]x[/].png" in line
            from tui.widgets.tag_editor import TagList

            shown = [str(opt.prompt) for opt in app.query_one(TagList)._options]
            assert "[red]tag[/]" in shown
            assert all("\x1b" not in s and "\x07" not in s for s in shown)
            assert any("\ufffd[31mevil" in s for s in shown)
            facts = app.query_one("#facts").render()
            assert "[bold]x[/].png" in str(facts)

    asyncio.run(run())


def test_help_lists_bindings_and_palette_holds_every_action(dataset: Path) -> None:
    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            await pilot.press("question_mark")
            from tui.widgets.dialogs import HelpScreen

            assert isinstance(app.screen, HelpScreen)
            text = "\n".join(f"{k} {d}" for _, rows in app.screen.sections for k, d in rows)
            for needle in ("Range", "Select", "Undo", "Redo", "Filter", "Keep this, trash others", "Apply",
                           "Delete tag", "To front", "Rename everywhere"):
                assert needle in text, needle
            await pilot.press("escape")
            titles = [c.title for c in app.get_system_commands(app.screen)]
            for needle in ("Range", "Apply", "Autotag", "View: Health", "Keep this, trash others"):
                assert needle in titles, needle

    asyncio.run(run())


def test_theme_switch_is_remembered(dataset: Path, tmp_path: Path) -> None:
    from tui.config import load_prefs

    async def run() -> None:
        app = KilnApp(dataset, image_protocol="halfblock", prefs=TuiPrefs())
        async with app.run_test(size=(80, 24)) as pilot:
            assert app.theme == "kiln-dark"
            await pilot.press("ctrl+t")
            assert app.theme == "kiln-high-contrast"
        assert load_prefs().theme == "kiln-high-contrast"
        again = KilnApp(dataset, image_protocol="halfblock")
        async with again.run_test(size=(80, 24)):
            assert again.theme == "kiln-high-contrast"

    asyncio.run(run())
