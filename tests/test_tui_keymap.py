"""Key bindings: one registry with ids (tui/bindings.py), a user keymap that moves them (tui/keymap.py), help and
the palette generated from the registry with the keymap applied; bad entries are reported, never fatal."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

pytest.importorskip("textual")

from tests.test_tui_workflows import browser, copy_example, make_app, wait_for, wait_loaded
from tui.bindings import all_keys, contexts
from tui.keymap import check_key, check_keymap, key_label, load_keymap


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "config"
    folder.mkdir()
    monkeypatch.setenv("KILN_CONFIG_DIR", str(folder))
    return folder


def _tui_classes() -> list[type]:
    import tui

    classes = []
    for info in pkgutil.walk_packages(tui.__path__, "tui."):
        if info.name in ("tui.__main__",):
            continue
        module = importlib.import_module(info.name)
        classes += [c for _, c in inspect.getmembers(module, inspect.isclass) if c.__module__ == module.__name__]
    return classes


def test_every_binding_of_the_tui_has_a_registered_id() -> None:
    from textual.binding import Binding

    import tui.runs

    tui.runs.register()  # the runs package registers its contexts as the app does
    known = all_keys()
    found = 0
    for cls in _tui_classes():
        for binding in cls.__dict__.get("BINDINGS", []):
            assert isinstance(binding, Binding), (cls, binding)
            assert binding.id in known, f"{cls.__name__}: {binding.key} → {binding.action} has no registered id"
            ctx, key = known[binding.id]
            assert (binding.key, binding.action) == (key.keys, key.action)
            found += 1
    assert found >= 60  # every view, widget and dialog
    ids = [ctx.binding_id(k) for ctx in contexts() for k in ctx.keys]
    assert len(ids) == len(set(ids))


def test_docs_list_every_binding_id() -> None:
    import tui.runs

    tui.runs.register()
    docs = (Path(__file__).resolve().parents[1] / "docs" / "TUI.md").read_text(encoding="utf-8")
    missing = [i for i in all_keys() if f"`{i}`" not in docs and not i.startswith("app.view-")]
    assert not missing, f"docs/TUI.md (Changing keys) does not list {missing}"


def test_bad_entries_are_named_and_the_good_ones_kept() -> None:
    overrides, problems = check_keymap({
        "app": {"undo": "ctrl+z"},                       # a table per context
        "images.down": ["down", "ctrl+n"],              # a list of keys
        "browser.edti-tags": "x",                       # typo
        "images.up": "ctrl+",                            # not a key
        "tags.rename": "Ctrl+E",                         # not a modifier
        "tags.sort": "ctrl+E",                           # upper case after a modifier
        "app.help": 5,                                   # not a key at all
        "browser.layout": "",                            # empty
        "browser.bulk": "e",                             # clashes with browser.edit-tags (default e)
        "grid.left": "f13",
    })
    assert overrides == {"app.undo": "ctrl+z", "images.down": "down,ctrl+n", "grid.left": "f13"}
    text = "\n".join(problems)
    assert len(problems) == 7, text
    assert "unknown binding id 'browser.edti-tags' (did you mean 'browser.edit-tags'?)" in text
    assert "images.up: 'ctrl+' ends with +" in text
    assert "tags.rename: 'Ctrl+E' has 'Ctrl', which is not a modifier" in text
    assert "write ctrl+shift+e" in text
    assert "app.help: expected a key" in text and "got 5" in text
    assert "browser.layout: '' is empty" in text
    assert "'Edit tags' (browser.edit-tags) and 'Bulk' (browser.bulk)" in text and "browser.bulk ignored" in text


def test_swapping_two_keys_is_not_a_clash_but_stealing_one_is() -> None:
    overrides, problems = check_keymap({"browser.edit-tags": "b", "browser.bulk": "e"})
    assert overrides == {"browser.edit-tags": "b", "browser.bulk": "e"} and problems == []
    # grid.left shares the widget with the images' keys: j is images.down's
    overrides, problems = check_keymap({"grid.left": "j"})
    assert overrides == {} and "grid.left ignored" in problems[0]


def test_keys_and_labels() -> None:
    for good in ("a", "K", "?", "question_mark", "slash", "f5", "pageup", "ctrl+shift+up", "shift+tab", "space"):
        assert check_key(good) is None, good
    for bad in ("", "ctrl+", "control+x", "ctrl+ctrl+x", "pagedwn", "a b"):
        assert check_key(bad) is not None, bad
    assert key_label("question_mark,ctrl+p") == "? / ctrl+p"
    assert key_label("escape") == "esc" and key_label("slash") == "/"


def test_a_broken_or_missing_file_gives_the_defaults(config_dir: Path) -> None:
    assert load_keymap().overrides == {} and load_keymap().problems == []
    (config_dir / "keymap.toml").write_text('"app.undo" = "ctrl+z\n', encoding="utf-8")
    keymap = load_keymap()
    assert keymap.overrides == {}
    assert "not valid TOML" in keymap.problems[0] and "keymap.toml" in keymap.problems[0]


def test_a_user_keymap_moves_keys_and_help_and_palette_show_it(config_dir: Path, tmp_path: Path) -> None:
    (config_dir / "keymap.toml").write_text(
        '# my keys\n'
        '"browser.edit-tags" = "ctrl+e"\n'
        '[app]\n'
        'help = "f1"\n'
        'nonsense = "x"\n',
        encoding="utf-8")
    dataset = copy_example(tmp_path / "dataset")

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot)
            # the bad entry is reported at start (and the app runs)
            await wait_for(pilot, lambda: any("app.nonsense" in n.message for n in app._notifications))
            from textual.widgets import Input

            from tui.widgets.dialogs import HelpScreen
            from tui.widgets.tag_editor import TagList

            await pilot.press("e")  # no longer bound: nothing happens
            assert not isinstance(app.focused, TagList)
            await pilot.press("ctrl+e")
            assert isinstance(app.focused, TagList)
            await pilot.press("escape")
            browser(app).focus_images()
            await pilot.press("question_mark")  # moved to f1
            assert not isinstance(app.screen, HelpScreen)
            await pilot.press("f1")
            assert isinstance(app.screen, HelpScreen)
            sections = {title: {d: k for k, d, _ in rows} for title, rows in app.screen.sections}
            assert sections["Browse view"]["Edit tags"] == "ctrl+e" and sections["Everywhere"]["Help"] == "f1"
            assert any("app.nonsense" in note for note in app.screen.notes)  # help shows the problems too
            assert str(config_dir / "keymap.toml") in app.screen.notes[0]
            await pilot.press("escape")
            commands = {(c.title, c.help.rsplit(" · key ", 1)[0]): c.help for c in app.get_system_commands(app.screen)}
            assert commands[("Edit tags", "Browse view")].endswith("key ctrl+e")
            assert commands[("Help", "Everywhere")].endswith("key f1")
            # the footer (Textual's own) shows the moved key too
            footer_keys = {b.binding.id: k for k, b in app.screen.active_bindings.items() if b.binding.id}
            assert footer_keys.get("browser.edit-tags") == "ctrl+e"
            assert not isinstance(app.focused, Input)

    asyncio.run(run())


def test_a_palette_command_builds_its_view_and_runs_there(tmp_path: Path) -> None:
    dataset = copy_example(tmp_path / "dataset")

    async def run() -> None:
        app = make_app(dataset)
        app.view_manager.last_input = float("inf")  # nothing built in the background (before it could start)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot)
            assert "tags" not in {v.id for v in app.views()}
            command = next(c for c in app.get_system_commands(app.screen) if c.title == "Sort count/name")
            await command.callback()
            tags = app.view("tags")
            await wait_for(pilot, lambda: app.active_view is tags and not tags.sort_by_count)
            assert app.focused is tags.query_one("#tag-table")

    asyncio.run(run())
