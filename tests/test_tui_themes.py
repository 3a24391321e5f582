"""Themes: the shipped ones plus the user's ``<config dir>/themes/*.toml``; a broken user theme is reported and
skipped (checked before it is registered, so applying it can never crash the app)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("textual")

from tests.test_tui_workflows import copy_example, wait_for, wait_loaded
from tui.app import KilnApp
from tui.config import TuiPrefs
from tui.themes import ThemeError, load_themes, theme_from_toml

GOOD = '''name = "ember"
dark = true
primary = "#C2410C"
background = "#0C0A09"
[variables]
"footer-key-foreground" = "#F59E0B 80%"
"block-cursor-text-style" = "bold underline"
'''


@pytest.fixture
def themes_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KILN_CONFIG_DIR", str(tmp_path / "config"))
    folder = tmp_path / "config" / "themes"
    folder.mkdir(parents=True)
    return folder


def test_user_themes_are_loaded_and_broken_ones_reported(themes_dir: Path) -> None:
    (themes_dir / "ember.toml").write_text(GOOD, encoding="utf-8")
    (themes_dir / "bad-colour.toml").write_text('name = "x"\nprimary = "#GGGGGG"\n', encoding="utf-8")
    (themes_dir / "bad-variable.toml").write_text(
        'name = "y"\nprimary = "#123456"\n[variables]\n"footer-key-foreground" = "not a colour"\n', encoding="utf-8")
    (themes_dir / "typo.toml").write_text('name = "z"\nprimry = "#123456"\n', encoding="utf-8")
    (themes_dir / "README.md").write_text("not a theme", encoding="utf-8")
    found = load_themes()
    assert {"kiln-dark", "kiln-light", "kiln-high-contrast", "ember"} <= set(found.themes)
    assert not {"x", "y", "z"} & set(found.themes)
    assert found.sources["ember"] == str(themes_dir / "ember.toml")
    text = "\n".join(found.problems)
    assert len(found.problems) == 3, text
    assert "bad-colour.toml: a colour is not valid" in text
    assert "bad-variable.toml: variable footer-key-foreground = 'not a colour' is not a colour" in text
    assert "typo.toml: unknown field 'primry'" in text


def test_the_shipped_themes_pass_every_check() -> None:
    from importlib import resources

    shipped = [e for e in resources.files("themes").iterdir() if e.name.endswith(".toml")]
    assert len(shipped) >= 3
    for entry in shipped:
        theme_from_toml(entry.read_text(encoding="utf-8"), check_css=True)  # raises ThemeError when not


def test_a_user_theme_replaces_a_shipped_one_of_the_same_name(themes_dir: Path) -> None:
    (themes_dir / "mine.toml").write_text('name = "kiln-dark"\nprimary = "#00FF00"\n', encoding="utf-8")
    found = load_themes()
    assert found.themes["kiln-dark"].primary == "#00FF00"


def test_theme_files_are_checked_field_by_field() -> None:
    for text, message in [
        ('primary = "#fff"', "needs a name"),
        ('name = "a"\nprimary = "#fff"\ndark = "yes"', "dark must be true or false"),
        ('name = "a"\nprimary = 3', "primary must be a string"),
        ('name = "a"\nprimary = "#fff"\n[variables]\n"block-cursor-text-style" = "boldest"', "not a text style"),
        # a $reference inside a variable is not resolved by Textual: applying it would fail, so it is refused
        ('name = "a"\nprimary = "#fff"\n[variables]\n"footer-key-foreground" = "$primary 80%"', "is not a colour"),
        ("[[broken", "not valid TOML"),
    ]:
        with pytest.raises(ThemeError, match=message):
            theme_from_toml(text)


def test_the_app_offers_user_themes_and_reports_broken_ones(themes_dir: Path, tmp_path: Path) -> None:
    (themes_dir / "ember.toml").write_text(GOOD, encoding="utf-8")
    (themes_dir / "broken.toml").write_text('name = "broken"\nprimary = "#GGGGGG"\n', encoding="utf-8")
    dataset = copy_example(tmp_path / "dataset")

    async def run() -> None:
        app = KilnApp(dataset, image_protocol="halfblock", theme="ember", prefs=TuiPrefs(), persist_prefs=False)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            assert app.theme == "ember"
            assert app.current_theme.primary == "#C2410C"
            await wait_for(pilot, lambda: any("broken.toml" in n.message for n in app._notifications))
            seen = set()
            for _ in range(5):
                await pilot.press("ctrl+t")
                seen.add(app.theme)
            assert {"ember", "kiln-dark", "kiln-light", "kiln-high-contrast"} <= seen and "broken" not in seen

    asyncio.run(run())
