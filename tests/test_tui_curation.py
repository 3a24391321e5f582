"""Pilot-driven tests of the curation workflows: bulk edits, the Tags view, duplicates, text safety, help, themes.

Same real sample dataset and helpers as tests/test_tui_workflows.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("textual")

from tests.test_tui_workflows import (
    PHOTO_DIR,
    browser,
    caption_of,
    copy_example,
    make_app,
    wait_for,
    wait_loaded,
)
from tui.app import KilnApp
from tui.config import TuiPrefs


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return copy_example(tmp_path / "dataset")



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
            app.query_one("#f-tags").value = "watermark, signature"
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
            await wait_for(pilot, lambda: "add 'watermark', 'signature' at end" in str(
                app.query_one("#history").get_option_at_index(0).prompt))

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
            app.query_one("#tag-search").focus()
            await pilot.press(*"monochrome", "enter")  # narrows the list, then back to it
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
    folder = root / "3_[red]weird"
    save_photo(photo("coffee.png", (256, 256)), folder / "[bold]x[reverse].png")
    (folder / "[bold]x[reverse].txt").write_bytes(b"[red]tag[/], \x1b[31mevil\x07, plain\n")

    async def run() -> None:
        app = make_app(root)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            lst = browser(app).image_list
            line = lst.render_line(0).text
            assert "[bold]x[reverse]" in line and "3_[red]weird" in line
            from tui.widgets.tag_editor import TagList

            shown = [str(opt.prompt) for opt in app.query_one(TagList)._options]
            assert "[red]tag[/]" in shown
            assert all("\x1b" not in s and "\x07" not in s for s in shown)
            assert any("\ufffd[31mevil" in s for s in shown)
            facts = app.query_one("#facts").render()
            assert "[bold]x[reverse].png" in str(facts)

    asyncio.run(run())


def test_help_lists_bindings_and_palette_holds_every_action(dataset: Path) -> None:
    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            await pilot.press("question_mark")
            from tui.widgets.dialogs import HelpScreen

            assert isinstance(app.screen, HelpScreen)
            text = "\n".join(f"{k} {d}" for _, rows in app.screen.sections for k, d, _ in rows)
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


def test_notifications_show_file_text_literally(dataset: Path) -> None:
    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            from curator.textsafe import safe_text

            app.notify(safe_text("Caption changed: [bold]x[/].txt \\x1b"))
            app.notify("bad [/] markup from a curator error \x1b[31m")
            await pilot.pause(0.3)
            notes = list(app._notifications)
            assert all(isinstance(n.message, str) and n.markup is False for n in notes)
            assert any("[bold]x[/].txt" in n.message for n in notes)
            assert any("bad [/] markup" in n.message and "\x1b" not in n.message for n in notes)
            await pilot.pause(0.3)  # the toasts render without a markup error

    asyncio.run(run())


def test_autotag_runs_in_the_background_and_applies_after_confirmation(dataset: Path, tmp_path: Path,
                                                                         monkeypatch) -> None:
    from tests.onnx_models import make_tagger

    model_dir = make_tagger(tmp_path / "wd-tiny", [("autotagged", 0, 0.9), ("never", 0, 0.01)], probes=False)
    monkeypatch.setenv("KILN_AUTOTAG_MODEL", str(model_dir))
    missing = [p for p in dataset.rglob("*.png") if not p.with_suffix(".txt").exists()]
    assert missing, "the sample dataset has an image without a caption"

    async def run() -> None:
        app = make_app(dataset)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            await pilot.press("3")
            app.query_one("#scope-all").value = True
            await pilot.press("ctrl+g")
            from tui.widgets.autotag_dialog import AutotagScreen
            from tui.widgets.dialogs import ConfirmScreen

            await wait_for(pilot, lambda: isinstance(app.screen, AutotagScreen))
            assert app.screen.query_one("#at-model").value == str(model_dir)  # from KILN_AUTOTAG_MODEL
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), timeout=60)
            await pilot.press("y")
            await wait_for(pilot, lambda: all(p.with_suffix(".txt").exists() for p in missing))
            for p in missing:
                assert p.with_suffix(".txt").read_text().strip() == "autotagged"
            # images that had tags were left alone (mode: missing)
            assert "autotagged" not in caption_of(dataset, f"{PHOTO_DIR}/astronaut.jpg").read_text()

    asyncio.run(run())


def test_autotag_dialog_checks_the_settings_and_remembers_them(dataset: Path, tmp_path: Path,
                                                               monkeypatch) -> None:
    """A bad threshold or a missing model is named in the dialog and nothing runs; settings that ran are
    remembered (model, thresholds, mode, trigger words) and prefill the next dialog."""
    from tests.onnx_models import make_tagger
    from tui.widgets.autotag_dialog import AutotagScreen
    from tui.widgets.dialogs import ConfirmScreen

    monkeypatch.delenv("KILN_AUTOTAG_MODEL", raising=False)
    model_dir = make_tagger(tmp_path / "wd-tiny", [("autotagged", 0, 0.9), ("faint", 0, 0.5)], probes=False)
    before = {p: p.read_bytes() for p in dataset.rglob("*.txt")}
    prefs = TuiPrefs()

    async def run() -> None:
        app = KilnApp(dataset, image_protocol="halfblock", prefs=prefs, persist_prefs=False)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            await pilot.press("3")
            app.query_one("#scope-all").value = True
            await pilot.press("ctrl+g")
            await wait_for(pilot, lambda: isinstance(app.screen, AutotagScreen))
            dialog = app.screen
            error = dialog.query_one("#at-error")

            await pilot.press("ctrl+s")  # no model given
            assert isinstance(app.screen, AutotagScreen)
            assert "model" in str(error.render())

            dialog.query_one("#at-model").value = str(tmp_path / "no-such-tagger")
            await pilot.press("ctrl+s")
            assert isinstance(app.screen, AutotagScreen)
            assert "does not exist" in str(error.render())

            dialog.query_one("#at-model").value = str(model_dir)
            dialog.query_one("#at-general").value = "1.5"
            await pilot.press("ctrl+s")
            assert isinstance(app.screen, AutotagScreen)
            assert "general_threshold" in str(error.render()) and "between 0 and 1" in str(error.render())

            dialog.query_one("#at-general").value = "0.6"  # "faint" (0.5) stays out
            dialog.query_one("#at-prefix").value = "kilnchar"
            dialog.query_one("#at-mode-append").value = True
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), timeout=60)
            await pilot.press("n")
            await pilot.pause()
            assert {p: p.read_bytes() for p in dataset.rglob("*.txt")} == before  # declined: nothing written

            assert prefs.autotag_model == str(model_dir)
            assert prefs.autotag["general_threshold"] == 0.6 and prefs.autotag["mode"] == "append"
            assert prefs.autotag["prefix"] == ["kilnchar"]

            await pilot.press("ctrl+g")  # the next dialog starts from the last settings
            await wait_for(pilot, lambda: isinstance(app.screen, AutotagScreen))
            again = app.screen
            assert again.query_one("#at-model").value == str(model_dir)
            assert again.query_one("#at-general").value == "0.6"
            assert again.query_one("#at-prefix").value == "kilnchar"
            assert again.query_one("#at-mode-append").value is True
            await pilot.press("escape")
            assert not isinstance(app.screen, AutotagScreen)

    asyncio.run(run())


def scanned_rows(dataset: Path) -> list:
    """The browser rows of ``dataset`` after a scan, captions read (what the Bulk view autotags)."""
    from tui.model import DatasetModel

    model = DatasetModel(dataset)
    model.open()
    model.scan()
    return model.load_rows(model.scanned_records())


def test_autotag_trigger_words_go_first_and_threshold_applies(dataset: Path, tmp_path: Path) -> None:
    import threading

    from curator.autotag.config import AutotagConfig
    from tests.onnx_models import make_tagger
    from tui.autotag import run_autotag

    model_dir = make_tagger(tmp_path / "m", [("sure", 0, 0.9), ("maybe", 0, 0.5)], probes=False)
    rows = scanned_rows(dataset)
    untagged = [r for r in rows if not r.tags]
    assert untagged
    config = AutotagConfig(model=str(model_dir), general_threshold=0.6, prefix=["kilnchar"])
    changes = run_autotag(config, rows, lambda d, t: None, threading.Event())
    assert len(changes) == len(untagged)  # mode missing: only images without tags
    assert all(c.after.decode().strip() == "kilnchar, sure" for c in changes)


def test_autotag_stops_when_cancelled(dataset: Path, tmp_path: Path) -> None:
    import threading

    from curator.autotag.config import AutotagConfig
    from tests.onnx_models import make_tagger
    from tui.autotag import run_autotag

    config = AutotagConfig(model=str(make_tagger(tmp_path / "m", [("x", 0, 0.9)], probes=False)))
    rows = scanned_rows(dataset)
    for row in rows:
        row.tags = []  # pretend every image needs tags
    seen: list[tuple[int, int]] = []
    cancel = threading.Event()
    cancel.set()
    changes = run_autotag(config, rows, lambda d, t: seen.append((d, t)), cancel)
    assert changes == [] and seen[0] == (0, len(rows))


def test_autotag_settings_survive_a_restart(tmp_path: Path) -> None:
    """The remembered dialog settings go through the prefs file (atomic write) and come back the same."""
    from curator.autotag.config import AutotagConfig
    from tui.autotag import initial_settings, remember
    from tui.config import load_prefs, prefs_path, save_prefs

    prefs = TuiPrefs()
    config = AutotagConfig(model=str(tmp_path / "wd"), general_threshold=0.5, general_mcut=True,
                           exclude=["watermark", "signature"], prefix=["kilnchar"], mode="replace", max_tags=30)
    remember(prefs, config)
    save_prefs(prefs)
    assert prefs_path().is_file() and not list(prefs_path().parent.glob("*.tmp*"))
    settings = initial_settings(load_prefs())
    again = AutotagConfig.model_validate(settings)
    assert again.model_dump() == {**config.model_dump(), "workers": again.workers}


# ------------------------------------------------------------------------------------ suggestions, quality


def test_tag_suggestions_are_reviewed_and_applied(tmp_path: Path) -> None:
    from tests.conftest import photo, save_photo
    from tui.widgets.dialogs import ConfirmScreen
    from tui.widgets.suggestions import SuggestionsScreen

    root = tmp_path / "ds"
    folder = root / "10_laetitia"
    for n, name in enumerate(("astronaut.png", "chelsea.png", "coffee.png")):
        save_photo(photo(name, (96, 96)), folder / f"img{n}.jpg", quality=90)
        (folder / f"img{n}.txt").write_text("laetitia, red boots, boots, red footwear, smile\n")

    async def run() -> None:
        app = make_app(root)
        async with app.run_test(size=(110, 34)) as pilot:
            await wait_loaded(pilot)
            await pilot.press("2")
            app.query_one("#tag-table").focus()
            await pilot.press("S")
            await wait_for(pilot, lambda: isinstance(app.screen, SuggestionsScreen))
            screen = app.screen
            assert screen.suggestions[0].id == "consolidate:red boots"
            assert "red footwear" in str(screen.query_one("#suggestion-detail").render())
            await pilot.press("space", "ctrl+s")  # tick the first, apply
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await wait_for(pilot, lambda: (folder / "img0.txt").read_text() == "laetitia, red boots, smile\n")
            assert all((folder / f"img{n}.txt").read_text() == "laetitia, red boots, smile\n" for n in range(3))
            await pilot.press("u")
            await wait_for(pilot, lambda: "red footwear" in (folder / "img0.txt").read_text())

    asyncio.run(run())


def test_health_view_lists_quality_findings_worst_first(tmp_path: Path) -> None:
    from PIL import ImageFilter

    from tests.conftest import photo, save_photo

    folder = tmp_path / "ds" / "1_set"
    save_photo(photo("chelsea.png", (640, 480)), folder / "sharp.jpg", quality=92)
    save_photo(photo("astronaut.png", (640, 640)).filter(ImageFilter.GaussianBlur(3)), folder / "soft.jpg", quality=92)
    save_photo(photo("coffee.png", (640, 480)).filter(ImageFilter.GaussianBlur(8)), folder / "softer.jpg", quality=92)

    async def run() -> None:
        app = make_app(tmp_path / "ds")
        async with app.run_test(size=(110, 34)) as pilot:
            await wait_loaded(pilot)
            await pilot.press("5")
            tree = app.query_one("#health-tree")
            await wait_for(pilot, lambda: any("blurry" in str(n.label) for n in tree.root.children))
            node = next(n for n in tree.root.children if str(n.label).startswith("blurry"))
            scores = [leaf.data.flag.score for leaf in node.children]
            paths = [leaf.data.path for leaf in node.children]
            assert scores == sorted(scores, reverse=True) and len(scores) >= 1
            assert "1_set/sharp.jpg" not in paths
            assert str(node.children[0].label).startswith(f"{scores[0]:.2f} ")

    asyncio.run(run())


def test_health_view_lists_watermarked_images_worst_first_with_where(tmp_path: Path) -> None:
    from tests.conftest import photo, save_photo
    from tests.test_quality import CROPS, MARKED, _crop
    from tests.watermarks import plant

    folder = tmp_path / "ds" / "1_set"
    for n, (source, size) in enumerate(MARKED):
        save_photo(plant(_crop(source, size, CROPS[n % 3]), "logo"), folder / f"mark_{n}.jpg", quality=90)
    for name in ("camera.png", "coins.png", "brick.png"):
        save_photo(photo(name).convert("RGB"), folder / f"clean_{name}")

    async def run() -> None:
        app = make_app(tmp_path / "ds")
        async with app.run_test(size=(110, 34)) as pilot:
            await wait_loaded(pilot)
            await pilot.press("5")
            tree = app.query_one("#health-tree")
            await wait_for(pilot, lambda: any("watermark" in str(n.label) for n in tree.root.children))
            node = next(n for n in tree.root.children if str(n.label).startswith("watermark"))
            scores = [leaf.data.flag.score for leaf in node.children]
            paths = [leaf.data.path for leaf in node.children]
            assert len(scores) >= 6 and scores == sorted(scores, reverse=True)
            assert all(p.startswith("1_set/mark_") for p in paths)
            assert "top-left corner" in str(node.children[0].label)

    asyncio.run(run())


# ------------------------------------------------------------------------------------------------ captions


def test_caption_dialog_checks_then_captions_the_scope_and_undo_reverts(dataset: Path, tmp_path: Path,
                                                                       monkeypatch) -> None:
    """ctrl+k in the Bulk view: a bad model or value is named in the dialog and nothing runs; a tiny BLIP then
    captions every image into .caption files (the tag captions untouched), previewed and confirmed, one journal
    entry that u reverts; the settings are remembered."""
    from tests.caption_models import make_blip
    from tui.widgets.caption_dialog import CaptionScreen
    from tui.widgets.dialogs import ConfirmScreen

    monkeypatch.delenv("KILN_CAPTION_MODEL", raising=False)
    blip = make_blip(tmp_path / "blip-tiny")
    images = sorted(p for p in dataset.rglob("*") if p.suffix.lower() in (".jpg", ".png", ".webp")
                    and ".kiln" not in p.parts)  # fmt: skip
    tags_before = {p: p.read_bytes() for p in dataset.rglob("*.txt")}
    prefs = TuiPrefs()

    def captions() -> list[Path]:
        return [p for p in dataset.rglob("*.caption") if ".kiln" not in p.relative_to(dataset).parts]

    async def run() -> None:
        app = KilnApp(dataset, image_protocol="halfblock", prefs=prefs, persist_prefs=False)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            await pilot.press("3")
            app.query_one("#scope-all").value = True
            await pilot.press("ctrl+k")
            await wait_for(pilot, lambda: isinstance(app.screen, CaptionScreen))
            dialog = app.screen
            error = dialog.query_one("#cap-error")

            dialog.query_one("#cap-model").value = str(tmp_path / "no-such-model")
            await pilot.press("ctrl+s")
            assert isinstance(app.screen, CaptionScreen) and "no such model folder" in str(error.render())

            dialog.query_one("#cap-model").value = str(blip)
            dialog.query_one("#cap-max-new-tokens").value = "0"
            await pilot.press("ctrl+s")
            assert isinstance(app.screen, CaptionScreen) and "max_new_tokens" in str(error.render())

            dialog.query_one("#cap-max-new-tokens").value = "5"
            dialog.query_one("#cap-num-beams").value = "1"
            dialog.query_one("#cap-batch-size").value = "4"
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), timeout=120)
            assert not captions()  # nothing written before the confirmation
            await pilot.press("y")
            await wait_for(pilot, lambda: len(captions()) == len(images))
            for image in images:
                text = image.with_suffix(".caption").read_text()
                assert text.startswith("a photo of") and text.endswith("\n") and text.count("\n") == 1
            assert {p: p.read_bytes() for p in dataset.rglob("*.txt")} == tags_before
            assert prefs.caption["model"] == str(blip) and prefs.caption["max_new_tokens"] == 5

            await pilot.press("escape")
            await pilot.press("u")
            await wait_for(pilot, lambda: not captions())  # undone: moved to the journal's trash

            await pilot.press("ctrl+k")  # the next dialog starts from the last settings
            await wait_for(pilot, lambda: isinstance(app.screen, CaptionScreen))
            assert app.screen.query_one("#cap-model").value == str(blip)
            assert app.screen.query_one("#cap-max-new-tokens").value == "5"
            await pilot.press("escape")

    asyncio.run(run())


def test_tui_captioning_stops_when_cancelled(dataset: Path, tmp_path: Path) -> None:
    """The background run stops after the batch in progress when cancelled, keeping what it captioned."""
    import threading

    from curator.caption.config import CaptionConfig
    from tests.caption_models import make_blip
    from tui.captioning import run_caption

    rows = scanned_rows(dataset)
    assert len(rows) > 2
    config = CaptionConfig(model=str(make_blip(tmp_path / "blip-tiny")), batch_size=1, max_new_tokens=3, num_beams=1)
    cancel = threading.Event()
    seen: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        if done >= 2:
            cancel.set()

    from tui.model import DatasetModel

    model = DatasetModel(dataset)
    model.open()
    plan = run_caption(config, model.caption_items(rows), dataset, progress, cancel)
    assert plan.report.interrupted and len(plan.changes) == 2 and seen[0] == (0, len(rows))
    assert all(c.caption_path.suffix == ".caption" and c.before is None for c in plan.changes)
    assert not [p for p in dataset.rglob("*.caption")]  # planning writes nothing


def test_quality_thresholds_given_to_the_tui_judge_its_health_view(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``kiln DATASET --quality KIND=VALUE`` sets the health view's thresholds: a blurred photograph flagged by
    default is not with blurry=off; a bad value is named and the TUI does not start."""
    from PIL import ImageFilter

    from curator.scan.config import QualityThresholds
    from tests.conftest import photo, save_photo
    from tui.cli import main as kiln

    folder = tmp_path / "ds" / "1_set"
    save_photo(photo("chelsea.png", (640, 480)), folder / "sharp.jpg", quality=92)
    save_photo(photo("coffee.png", (640, 480)).filter(ImageFilter.GaussianBlur(8)), folder / "softer.jpg", quality=92)

    async def kinds(quality: QualityThresholds | None) -> set[str]:
        app = KilnApp(tmp_path / "ds", image_protocol="halfblock", prefs=TuiPrefs(), persist_prefs=False,
                      quality=quality)  # fmt: skip
        async with app.run_test(size=(110, 34)) as pilot:
            await wait_loaded(pilot)
            await pilot.press("5")
            tree = app.query_one("#health-tree")
            await wait_for(pilot, lambda: bool(tree.root.children))
            return {str(n.label).split(" (")[0] for n in tree.root.children}

    assert "blurry" in asyncio.run(kinds(None))
    assert "blurry" not in asyncio.run(kinds(QualityThresholds.parse(["blurry=off"])))

    assert kiln([str(tmp_path / "ds"), "--quality", "blurry=7"]) == 1
    assert "blurry" in capsys.readouterr().err
    assert kiln([str(tmp_path / "ds"), "--quality", "sharpness=0.3"]) == 1
    assert "sharpness" in capsys.readouterr().err


def test_suspect_tags_are_reviewed_and_removed_where_suspected(tmp_path: Path) -> None:
    """x in the Tags view: a low-confidence autotag (its kept probability) and a contradiction are listed with
    why; the ticked one is removed only from the image it is suspected in, previewed, and u restores it."""
    from curator.autotag.scores import store
    from curator.dataset import Dataset
    from tests.conftest import photo, save_photo
    from tui.widgets.dialogs import ConfirmScreen
    from tui.widgets.suspects import SuspectsScreen

    folder = tmp_path / "ds" / "10_laetitia"
    names = ("astronaut.png", "chelsea.png", "coffee.png")
    captions = ("laetitia, 1girl, solo, hat, long hair", "laetitia, 1girl, solo, hat, long hair, short hair",
                "laetitia, 1girl, solo, long hair")  # fmt: skip
    for n, (name, caption) in enumerate(zip(names, captions, strict=True)):
        save_photo(photo(name, (96, 96)), folder / f"img{n}.jpg", quality=90)
        (folder / f"img{n}.txt").write_text(caption + "\n")
    with Dataset.open(tmp_path / "ds") as ds:
        ds.scan(progress=False)
        store(ds.index, {"10_laetitia/img0.jpg": {"hat": 0.31, "long hair": 0.9},
                         "10_laetitia/img1.jpg": {"hat": 0.93, "short hair": 0.4, "long hair": 0.8}}, "wd-test")  # fmt: skip
    before = {n: (folder / f"img{n}.txt").read_bytes() for n in range(3)}

    async def run() -> None:
        app = make_app(tmp_path / "ds")
        async with app.run_test(size=(110, 34)) as pilot:
            await wait_loaded(pilot)
            await pilot.press("2")
            app.query_one("#tag-table").focus()
            await pilot.press("x")
            await wait_for(pilot, lambda: isinstance(app.screen, SuspectsScreen))
            screen = app.screen
            found = {(s.kind, s.tag): s for s in screen.suspects}
            assert found[("low-confidence", "hat")].paths == ["10_laetitia/img0.jpg"]  # sure of it in img1
            assert found[("contradiction", "short hair")].paths == ["10_laetitia/img1.jpg"]
            assert screen.suspects[0].kind == "low-confidence"
            assert "0.31" in str(screen.query_one("#suspect-detail").render())
            await pilot.press("space", "ctrl+s")  # tick the low-confidence hat, remove it
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await wait_for(pilot, lambda: (folder / "img0.txt").read_bytes() != before[0])
            assert (folder / "img0.txt").read_text() == "laetitia, 1girl, solo, long hair\n"
            assert (folder / "img1.txt").read_bytes() == before[1]  # its hat was a sure one
            await pilot.press("u")
            await wait_for(pilot, lambda: (folder / "img0.txt").read_bytes() == before[0])

    asyncio.run(run())
