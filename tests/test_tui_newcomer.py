"""Issue 18: the curator TUI as a newcomer meets it (one broken image, a read-only dataset, defaults that
disagree, edits from another shell, keys and layout glitches). Each test drives the app with a pilot on a copy
of the sample dataset and checks what is on screen and on disk."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("textual")

from rich.text import Text
from textual.widgets import Static

from tests.test_tui_workflows import PHOTO_DIR, browser, copy_example, make_app, wait_for, wait_loaded


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return copy_example(tmp_path / "dataset")


def rendered(widget: Static) -> str:
    content = widget.render()
    return content.plain if isinstance(content, Text) else str(content)


# ----------------------------------------------------------------------------------- item 1: broken images


def test_buckets_view_leaves_out_a_zero_byte_image_and_counts_it(dataset: Path) -> None:
    (dataset / PHOTO_DIR / "empty.png").write_bytes(b"")
    (dataset / PHOTO_DIR / "empty.txt").write_text("empty\n")

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot)
            await pilot.press("4")
            view = app.view("buckets")
            chart = view.query_one("#bucket-chart", Static)
            await wait_for(pilot, lambda: "share" in rendered(chart) or view.query_one("#bucket-error").display)
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert not view.query_one("#bucket-error").display, rendered(view.query_one("#bucket-error", Static))
            text = rendered(chart)
            assert "1 unreadable image(s) left out" in text and "empty.png" in text
            assert "steps/epoch" in text

    asyncio.run(run())


# ------------------------------------------------------------------------ item 2: writes that fail, per file


def notes(app) -> list[str]:
    return [n.message for n in app._notifications]


def test_a_refused_write_says_what_failed_and_why_for_each_file(dataset: Path) -> None:
    from tui.widgets.dialogs import ConfirmScreen
    from tui.widgets.tag_editor import TagList

    locked = [dataset / PHOTO_DIR / "astronaut.txt", dataset / PHOTO_DIR / "cat.txt"]
    for path in locked:
        path.chmod(0o444)  # read-only: the user's "do not touch"

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot)
            lst = browser(app).image_list
            # one image, in the tag editor
            lst.move_to_path(f"{PHOTO_DIR}/astronaut.jpg")
            tag_list = app.query_one(TagList)
            await wait_for(pilot, lambda: tag_list.tags == lst.cursor_row.tags and tag_list.tags)
            await pilot.press("e", "d")  # delete the first tag
            await wait_for(pilot, lambda: any("not written" in n for n in notes(app)))
            message = next(n for n in notes(app) if "not written" in n)
            assert "astronaut.txt" in message and "read-only" in message
            assert "0 caption(s) written" not in " ".join(notes(app))
            assert tag_list.tags == lst.cursor_row.tags  # the editor shows what is on disk
            app.clear_notifications()
            # a bulk operation over everything: the two files are named with their reason, the rest written
            await pilot.press("escape", "3")
            app.query_one("#f-tags").value = "newcomer"
            app.query_one("#scope-all").value = True
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await wait_for(pilot, lambda: any("not written" in n for n in notes(app)))
            message = next(n for n in notes(app) if "not written" in n)
            total = len(app.model.rows)
            assert f"{total - 2} caption(s) written" in message and "2 not written" in message
            for path in locked:
                assert f"{path.name}: the file is read-only" in message
                assert b"newcomer" not in path.read_bytes()

    asyncio.run(run())


# -------------------------------------------------------------------------- item 3: one set of bucket settings


def cli_buckets(*argv: str) -> dict:
    import contextlib
    import io
    import json

    from tui.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["buckets", *argv, "--json"]) == 0
    return json.loads(out.getvalue())


async def bucket_chart(pilot, view) -> str:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    return rendered(view.query_one("#bucket-chart", Static))


def test_tui_buckets_use_the_settings_every_command_uses(dataset: Path) -> None:
    from textual.widgets import Input

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot)
            await pilot.press("4")
            view = app.view("buckets")
            values = {i: view.query_one(f"#{i}", Input).value for i in ("res", "min", "max", "step", "batch", "epochs")}
            assert values == {"res": "512", "min": "256", "max": "1024", "step": "64", "batch": "1", "epochs": "10"}
            source = rendered(view.query_one("#bucket-source", Static))
            assert "512×512, buckets 256–1024 px, step 64" in source and "kohya's defaults" in source
            cli = cli_buckets(str(dataset))
            steps = cli["steps"]
            text = await bucket_chart(pilot, view)
            assert (f"{steps['with_repeats']} images×repeats, batch 1: {steps['batches_per_epoch']} batches/epoch"
                    in text), text
            assert f"{len(cli['buckets'])} buckets" in text
            # 1024 in the form, applied with enter: the browser's buckets and bucket: filters are kiln buckets'
            res = view.query_one("#res", Input)
            res.value = "1024"
            res.focus()
            await pilot.press("enter")
            await bucket_chart(pilot, view)
            cli = cli_buckets(str(dataset), "--resolution", "1024")
            assert app.model.bucket_settings.resolution == (1024, 1024) and app.model.bucket_settings.max_bucket == 1024
            tui_buckets = {r.path: list(r.bucket) for r in app.model.rows}
            assert tui_buckets == {i["path"]: i["bucket"] for i in cli["images"]}
            assert "the Buckets view" in rendered(view.query_one("#bucket-source", Static))
            browser(app).apply_filter("bucket:1024x1024")
            shown = {r.path for r in app.model.matching_rows()}
            assert shown and shown == {i["path"] for i in cli["images"] if i["bucket"] == [1024, 1024]}
            # a combination kohya refuses is refused here too, naming the field to change (not silently fixed)
            res.value = "1536"
            await pilot.pause()
            error = view.query_one("#bucket-error", Static)
            assert error.display and "max 1024 is smaller than the resolution's long side 1536" in rendered(error)
            view.query_one("#max", Input).value = "2048"
            await pilot.pause()
            assert not error.display

    asyncio.run(run())


def test_tui_takes_the_train_configs_bucket_settings(dataset: Path, tmp_path: Path) -> None:
    from textual.widgets import Input

    config = tmp_path / "run.toml"
    config.write_text(f"[model]\npath = 'x.safetensors'\n[dataset]\npath = '{dataset.as_posix()}'\n"
                      "resolution = 768\nmax_bucket_reso = 1536\n[train]\nbatch_size = 4\n", encoding="utf-8")

    async def run() -> None:
        app = make_app(dataset, train_config=config)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_loaded(pilot)
            await pilot.press("4")
            view = app.view("buckets")
            assert view.query_one("#res", Input).value == "768" and view.query_one("#max", Input).value == "1536"
            assert view.query_one("#batch", Input).value == "4"
            assert "run config run.toml" in rendered(view.query_one("#bucket-source", Static))
            cli = cli_buckets(str(dataset), "--train-config", str(config))
            assert {r.path: list(r.bucket) for r in app.model.rows} == {i["path"]: i["bucket"] for i in cli["images"]}

    asyncio.run(run())


# ------------------------------------------------------------ item 4: filter box, stale errors, stale previews


def test_every_one_line_text_field_shows_its_text_while_focused(dataset: Path) -> None:
    from textual.widgets import Input

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot)
            await pilot.press("slash")
            await pilot.press(*"tag:greyscale")
            box = app.query_one("#filter", Input)
            assert box.has_focus and box.value == "tag:greyscale"
            assert box.content_region.height == 1, "the focused filter box has no room for its text"
            assert "tag:greyscale" in box.render_line(0).text
            await pilot.press("escape")
            for key in ("2", "3", "4"):
                await pilot.press(key)
                await pilot.pause()
                for field in app.active_view.query(Input):
                    if not field.display or field.size.height != 1:
                        continue
                    field.focus()
                    await pilot.pause()
                    assert field.content_region.height == 1, f"{field.id} in {app.active_view.id}"

    asyncio.run(run())


def test_escape_closes_a_bad_filter_with_its_error(dataset: Path) -> None:
    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot)
            view = browser(app)
            await pilot.press("slash", *"tag:greyscale", "enter")
            shown = len(view.image_list.view)
            await pilot.press("slash", "ctrl+u", *"(greyscale", "enter")
            error = view.query_one("#filter-error", Static)
            assert error.display
            await pilot.press("escape")
            assert not error.display, "a stale filter error stays on screen after esc"
            box = view.query_one("#filter")
            assert box.value == "tag:greyscale" and "-error" not in box.classes  # the filter in use
            assert len(view.image_list.view) == shown and view.image_list.has_focus

    asyncio.run(run())


def test_bulk_preview_is_cleared_when_what_it_shows_no_longer_holds(dataset: Path) -> None:
    from textual.widgets import OptionList, RadioButton

    from tui.widgets.dialogs import ConfirmScreen

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot)
            await pilot.press("space", "space", "3")
            diff = app.query_one("#diff", Static)

            async def preview() -> None:
                await pilot.press("ctrl+e")
                await wait_for(pilot, lambda: "would change" in rendered(diff))

            app.query_one("#f-tags").value = "watermark"
            await preview()
            app.query_one("#scope-all", RadioButton).value = True  # another scope
            await pilot.pause()
            assert "would change" not in rendered(diff) and "ctrl+e" in rendered(diff)
            await preview()
            app.query_one("#op-list", OptionList).highlighted = 1  # another operation
            await pilot.pause()
            assert "would change" not in rendered(diff)
            app.query_one("#op-list", OptionList).highlighted = 0
            app.query_one("#f-tags").value = "watermark"
            await preview()
            await pilot.press("1", "escape", "3")  # the selection the scope holds changed
            await pilot.pause()
            assert "would change" in rendered(diff)  # scope is "all": unaffected
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await wait_for(pilot, lambda: "written" in " ".join(notes(app)))
            await pilot.pause()
            assert "would change" not in rendered(diff), "the diff of an applied operation stays on screen"

    asyncio.run(run())


# ------------------------------------------------------------------------ item 5: edits from another shell


def kiln_elsewhere(*argv: str) -> None:
    """Run kiln in another process, as another shell would."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(repo)}
    done = subprocess.run([sys.executable, "-m", "tui.cli", *argv], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_edits_and_undo_from_another_shell_reach_every_view(dataset: Path) -> None:
    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_loaded(pilot)
            rows = app.model.rows
            visible = {r.path for r in browser(app).watched_rows()}
            assert len(visible) < len(rows)  # some images are off screen
            await asyncio.to_thread(kiln_elsewhere, "tags", "add", str(dataset), "from elsewhere")
            await wait_for(pilot, lambda: all("from elsewhere" in r.tags for r in app.model.rows), timeout=15)
            assert app.model.vocabulary()["from elsewhere"] == len(rows)
            await pilot.press("3")
            history = app.query_one("#history")
            await wait_for(pilot, lambda: "from elsewhere" in str(history.get_option_at_index(0).prompt))
            await asyncio.to_thread(kiln_elsewhere, "tags", "undo", str(dataset))
            await wait_for(pilot, lambda: not any("from elsewhere" in r.tags for r in app.model.rows), timeout=15)
            await wait_for(pilot, lambda: "undone" in str(history.get_option_at_index(0).prompt))
            await wait_for(pilot, lambda: any("changed outside kiln, reloaded" in n for n in notes(app)))
            # the TUI's own undo then undoes what is now the last entry, not a stale one
            await pilot.press("2")
            assert app.model.vocabulary()["from elsewhere"] == 0

    asyncio.run(run())


def test_an_editor_change_to_an_image_off_screen_is_picked_up(dataset: Path, monkeypatch) -> None:
    import tui.shell.captions

    monkeypatch.setattr(tui.shell.captions, "SWEEP_SECONDS", 0.5)

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_loaded(pilot)
            visible = {r.path for r in browser(app).watched_rows()}
            hidden = next(r for r in app.model.rows if r.path not in visible)
            caption = hidden.caption_target
            assert caption is not None
            caption.write_text("edited in vim, elsewhere\n", encoding="utf-8")
            await wait_for(pilot, lambda: hidden.path in app.model.by_path
                           and app.model.by_path[hidden.path].tags == ["edited in vim", "elsewhere"], timeout=15)
            await wait_for(pilot, lambda: any(hidden.name in n for n in notes(app)))

    asyncio.run(run())


# ------------------------------------------------------------------- item 6: query values that match nothing


def test_filter_refuses_a_flag_kind_that_does_not_exist(dataset: Path) -> None:
    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot)
            await pilot.press("slash", *"flag:lowres", "enter")
            error = browser(app).query_one("#filter-error", Static)
            assert error.display
            text = rendered(error)
            assert "flag:lowres matches nothing" in text and "low-res" in text and "^" in text
            assert app.model.state.filter_text == ""  # the old filter (none) stays

    asyncio.run(run())


# -------------------------------------------------------------------- item 8 in the TUI: empty folder, loops


def test_an_empty_folder_opens_with_a_warning_and_writes_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()

    async def run() -> None:
        app = make_app(empty)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: "no images" in app.status_note)
            assert any("no images" in n and "nothing was written" in n for n in notes(app))
            await pilot.press("2", "3", "4", "5", "1")  # every view copes
        assert not (empty / ".kiln").exists()

    asyncio.run(run())


def test_skipped_symlink_loops_are_told(dataset: Path) -> None:
    (dataset / PHOTO_DIR / "loop.png").symlink_to("loop.png")

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_loaded(pilot)
            await wait_for(pilot, lambda: any("loop.png: a symbolic link loop" in n for n in notes(app)))

    asyncio.run(run())


# ------------------------------------------------------------------------------ item 9: keys and layout


def test_ctrl_e_previews_from_inside_a_bulk_text_field(dataset: Path) -> None:
    from textual.widgets import Input

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot)
            await pilot.press("space", "3")
            field = app.query_one("#f-tags", Input)
            field.focus()
            await pilot.press(*"watermark")
            await pilot.press("ctrl+a")  # the cursor to the start (Input's own key)
            await pilot.press("ctrl+e")
            await wait_for(pilot, lambda: "+ watermark" in rendered(app.query_one("#diff", Static)))
            assert field.has_focus and field.value == "watermark"
            await pilot.press("ctrl+x")  # no autotag running: ctrl+x is the field's (cut), not a notice
            assert not any("Cancelling" in n for n in notes(app))

    asyncio.run(run())


@pytest.mark.parametrize("size", [(80, 24), (120, 40), (200, 50)])
def test_r_restores_right_after_k_without_touching_focus(dataset: Path, size: tuple[int, int]) -> None:
    from tui.widgets.dialogs import ConfirmScreen

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=size) as pilot:
            await wait_loaded(pilot)
            await pilot.press("5")
            health = app.view("health")
            await wait_for(pilot, lambda: bool(health.clusters))
            cluster = health.clusters[0]
            await pilot.press("5")
            await wait_for(pilot, lambda: app.query_one("#cluster-pane").cluster is cluster)
            assert app.query_one("#health-tree").has_focus
            await pilot.press("K")  # on the highlighted cluster, without entering it first
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            pane = app.query_one("#cluster-pane")
            others = [p for p in cluster.members if p != pane.cards[pane.current].rel_path]
            await pilot.press("y")
            await wait_for(pilot, lambda: not any((dataset / p).exists() for p in others))
            await wait_loaded(pilot)
            assert app.focused is not None and health in app.focused.ancestors_with_self
            await pilot.press("R")
            await wait_for(pilot, lambda: all((dataset / p).exists() for p in others))

    asyncio.run(run())


def screen_lines(app) -> list[str]:
    """The screen as text, one string per terminal row."""
    return ["".join(segment.text for segment in strip) for strip in app.screen._compositor.render_strips()]


@pytest.mark.parametrize("view", ["1", "2", "3", "4", "5"])
def test_footer_keys_never_run_under_the_palette_key_at_80_columns(dataset: Path, view: str) -> None:
    from textual.widgets._footer import FooterKey

    from tui.shell.footer import KilnFooter

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_loaded(pilot)
            await pilot.press(view)
            await pilot.pause(0.2)
            footer = app.query_one(KilnFooter)
            keys = list(footer.query(FooterKey))
            palette = [k for k in keys if k.has_class("-command-palette")]
            assert len(palette) == 1 and screen_lines(app)[-1].rstrip().endswith("^p palette")
            shown = [k for k in keys if k not in palette]
            assert shown and all(k.region.right <= palette[0].region.x for k in shown), \
                [(k.key_display, k.region) for k in shown]
            if view == "1":  # the help key is kept whatever else is left out
                assert any(k.action.endswith("help") for k in shown)

    asyncio.run(run())


def test_the_thin_mark_stays_on_its_bucket_row_when_the_chart_scrolls(dataset: Path) -> None:
    from rich.cells import cell_len
    from textual.widgets import Input

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_loaded(pilot)
            await pilot.press("4")
            view = app.view("buckets")
            view.query_one("#res", Input).value = "1024"  # 11 buckets: the chart needs its scroll bar
            chart = view.query_one("#bucket-chart", Static)
            await wait_for(pilot, lambda: "1024×1024" in rendered(chart))
            await app.workers.wait_for_complete()
            await pilot.pause()
            scroll = view.query_one("#bucket-chart-scroll")
            assert scroll.max_scroll_y > 0
            rows = [line for line in rendered(chart).splitlines() if "×" in line.split(" ")[0]]
            assert len(rows) == 11 and sum("thin" in r for r in rows) == 9
            assert all(cell_len(r) <= scroll.scrollable_content_region.width for r in rows)
            shown = screen_lines(app)
            assert not any(line.strip() == "thin" for line in shown)  # never wrapped onto a row of its own
            assert sum(line.rstrip().endswith("thin") for line in shown) >= 5

    asyncio.run(run())


@pytest.mark.parametrize("size", [(80, 24), (200, 50)])
def test_the_training_panel_leaves_the_curator_most_of_the_screen(dataset: Path, size: tuple[int, int]) -> None:
    from tui.runs.panel import TrainingPanel

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=size) as pilot:
            await wait_loaded(pilot)
            await pilot.press("f2")
            await wait_for(pilot, lambda: bool(app.query(TrainingPanel)) and app.query_one(TrainingPanel).shows > 0)
            panel = app.query_one(TrainingPanel)
            assert panel.outer_size.width <= max(30, size[0] * 0.4)
            assert panel.outer_size.width >= 30
            title = rendered(panel.query_one("#panel-title", Static))
            assert all(f"{k} {w}" in title for k, w in (("s", "stop"), ("S", "save"), ("r", "resume"), ("n", "new")))

    asyncio.run(run())


def test_wide_names_keep_the_list_columns_aligned(dataset: Path) -> None:
    from rich.cells import cell_len

    from tests.conftest import photo, save_photo

    wide = "猫の写真とても長い名前のファイル.png"
    save_photo(photo("chelsea.png", (512, 512)), dataset / PHOTO_DIR / wide)

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_loaded(pilot)
            lines = screen_lines(app)
            wide_line = next(line for line in lines if "猫" in line)
            plain_line = next(line for line in lines if "astronaut.jpg" in line)
            for line in (wide_line, plain_line):
                assert "512x512" in line, line
            column = [cell_len(line[: line.index("512x512")]) for line in (wide_line, plain_line)]
            assert column[0] == column[1], (wide_line, plain_line)
            assert "…" in wide_line  # cut to its column with an ellipsis

    asyncio.run(run())


def test_a_non_utf8_tag_reads_the_same_in_the_tui_as_in_the_cli(dataset: Path) -> None:
    from textual.widgets import DataTable

    (dataset / PHOTO_DIR / "cat.txt").write_bytes(b"caf\xe9, kilnsample")

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot)
            await pilot.press("2")
            table = app.query_one("#tag-table", DataTable)
            await wait_for(pilot, lambda: table.row_count > 0)
            cells = [str(table.get_row_at(i)[1]) for i in range(table.row_count)]
            assert "caf\\xe9" in cells
            assert not any("\udce9" in c or "\ufffd" in c for c in cells)
            assert not any("\udce9" in line for line in screen_lines(app))

    asyncio.run(run())


def test_bulk_history_names_the_tags_as_kiln_tags_history_does(dataset: Path) -> None:
    from textual.widgets import OptionList

    from curator.dataset import Dataset
    from curator.tags.journal import Journal
    from tui.widgets.dialogs import ConfirmScreen

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot)
            await pilot.press("space", "3")
            app.query_one("#f-tags").value = "watermark, signature"
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            history = app.query_one("#history", OptionList)
            await wait_for(pilot, lambda: "#1 " in str(history.get_option_at_index(0).prompt))
            entry = str(history.get_option_at_index(0).prompt)
            assert "add 'watermark', 'signature' at end on selection (1 images)" in entry, entry

    asyncio.run(run())
    dataset_ = Dataset.open(dataset)
    descriptions = [e.description for e in Journal(dataset_.index).history()]
    assert descriptions[0] == "add 'watermark', 'signature' at end on selection (1 images)"


def test_the_preview_says_what_to_fix_never_bare_exception_text(dataset: Path, monkeypatch) -> None:
    from textual.widgets import OptionList

    from tui.model import DatasetModel

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot)
            await pilot.press("space", "3")
            diff = app.query_one("#diff", Static)
            ops = app.query_one("#op-list", OptionList)

            async def preview(op: int, expect: str, **fields: object) -> str:
                ops.highlighted = op
                await pilot.pause()
                for name, value in fields.items():
                    app.query_one(f"#f-{name}").value = value
                await pilot.press("ctrl+e")
                await wait_for(pilot, lambda: expect in rendered(diff))
                return rendered(diff)

            text = await preview(6, "Cannot preview")  # normalise with nothing chosen
            assert "choose spaces, lower, escape and/or unescape" in text and "--" not in text
            text = await preview(2, "Cannot preview", old="(", regex=True)
            assert "bad regular expression '('" in text
            text = await preview(4, "Cannot preview", keep="-1")
            assert "not a whole number" in text and "invalid literal" not in text

            def broken(*_args: object, **_kwargs: object) -> list[object]:
                raise KeyError("tags")

            monkeypatch.setattr(DatasetModel, "plan", broken)
            text = await preview(0, "Cannot preview", tags="x")
            assert "an unexpected KeyError" in text and "nothing was written" in text

    asyncio.run(run())


@pytest.mark.parametrize("size", [(80, 24), (200, 50)])
def test_help_fits_the_terminal_without_garbling_its_columns(dataset: Path, size: tuple[int, int]) -> None:
    from rich.cells import cell_len

    from tui.widgets.dialogs import HelpScreen

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=size) as pilot:
            await wait_loaded(pilot)
            await pilot.press("question_mark")
            await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
            await pilot.pause(0.2)
            scroll = app.screen.query_one("#help")
            width = scroll.scrollable_content_region.width
            text = rendered(app.screen.query_one("#help-text", Static))
            lines = text.splitlines()
            assert all(cell_len(line) <= width for line in lines), max(lines, key=cell_len)
            ids = [line.split()[-1] for line in lines if line.rstrip().endswith("app.undo")]
            assert ids == ["app.undo"]  # each binding id whole, at the end of its row
            assert not any(line.strip() in ("app.undo", "app.leave-field", "app.help") for line in lines)

    asyncio.run(run())
