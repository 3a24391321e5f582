"""The TUI's themes: the shipped ``themes/*.toml`` plus the user's ``<config dir>/themes/*.toml``.

A theme file maps ``textual.theme.Theme`` fields (``name``, ``primary``, ``background``, ``dark`` …) and a
``[variables]`` table (Textual CSS variables such as ``footer-key-foreground``). A user theme with the name of a
shipped one replaces it. Every file is checked before it is registered (fields, colours, and for the user's each
variable parsed as the CSS it becomes; tests/test_tui_themes.py runs that on the shipped ones): a broken one is
skipped with a one-line problem, never a crash later when it is applied.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from tui.config import config_dir

if TYPE_CHECKING:
    from textual.theme import Theme

DEFAULT_THEME = "kiln-dark"


class ThemeError(ValueError):
    """A theme file that cannot be used; the message says what to fix."""


@dataclass
class ThemeSet:
    """The usable themes by name, where each came from, and what was wrong with the files skipped."""

    themes: dict[str, Theme] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def user_themes_dir() -> Path:
    return config_dir() / "themes"


def load_themes(user_dir: Path | None = None) -> ThemeSet:
    """The shipped themes, then the user's (``user_dir``, default ``<config dir>/themes``)."""
    found = ThemeSet()
    shipped = sorted((e for e in resources.files("themes").iterdir() if e.name.endswith(".toml")),
                     key=lambda e: e.name)
    for entry in shipped:
        _add(found, partial(entry.read_text, encoding="utf-8"), f"themes/{entry.name}", shipped=True)
    folder = user_themes_dir() if user_dir is None else user_dir
    try:
        user_files = sorted(p for p in folder.iterdir() if p.suffix == ".toml")
    except OSError:  # no user themes (the usual case)
        user_files = []
    for path in user_files:
        _add(found, partial(path.read_text, encoding="utf-8"), str(path))
    return found


def _add(found: ThemeSet, read: Callable[[], str], source: str, shipped: bool = False) -> None:
    try:
        theme = theme_from_toml(read(), check_css=not shipped)  # the shipped ones are checked by a test
    except (OSError, UnicodeDecodeError) as exc:
        found.problems.append(f"theme {source}: cannot be read ({exc}); skipped")
        return
    except ThemeError as exc:
        found.problems.append(f"theme {source}: {exc}; skipped")
        return
    found.themes[theme.name] = theme
    found.sources[theme.name] = source


def theme_from_toml(text: str, check_css: bool = True) -> Theme:
    """A checked ``Theme`` from a theme file's text. Raises ``ThemeError``. ``check_css``: also parse each
    variable as the CSS it becomes (~2 ms a theme; the shipped themes skip it at start, a test runs it)."""
    import dataclasses

    from textual.theme import Theme

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ThemeError(f"not valid TOML ({exc})") from None
    variables = data.pop("variables", {})
    if not isinstance(variables, dict):
        raise ThemeError("[variables] must be a table of name = \"value\"")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ThemeError('it needs a name = "…" (the name --theme and the palette use)')
    fields = {f.name for f in dataclasses.fields(Theme)} - {"variables"}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ThemeError(f"unknown field {unknown[0]!r} (a theme has {', '.join(sorted(fields))} and [variables])")
    for key, value in data.items():
        if key in ("dark", "ansi"):
            if not isinstance(value, bool):
                raise ThemeError(f"{key} must be true or false")
        elif key in ("luminosity_spread", "text_alpha"):
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ThemeError(f"{key} must be a number")
        elif not isinstance(value, str):
            raise ThemeError(f"{key} must be a string such as \"#E0803A\"")
    bad = [k for k, v in variables.items() if not isinstance(v, str)]
    if bad:
        raise ThemeError(f"variable {bad[0]} must be a string")
    try:
        theme = Theme(variables={str(k): str(v) for k, v in variables.items()}, **data)
        generated = theme.to_color_system().generate()
    except Exception as exc:  # noqa: BLE001 - any colour Textual cannot parse: say which and why
        raise ThemeError(f"a colour is not valid ({exc})") from None
    if check_css:
        _check_variables(theme.variables, generated)
    return theme


def _check_variables(variables: dict[str, str], generated: dict[str, str]) -> None:
    """Parse each variable as the CSS Textual makes of it (a colour, or a text style for ``*-style``), so a bad
    value is caught here and not as a stylesheet error when the theme is applied."""
    if not variables:
        return
    from textual.css.stylesheet import Stylesheet, StylesheetParseError

    def parses(css: str) -> bool:
        sheet = Stylesheet(variables={**generated, **variables})
        sheet.add_source(css)
        try:
            sheet.parse()
        except StylesheetParseError:
            return False
        return True

    # each variable is referenced, as the app's CSS does: its value is substituted once (a $reference inside a
    # value is not resolved there), so this parses exactly what applying the theme would
    rules = {name: f"Widget {{ {'text-style' if name.endswith('style') else 'color'}: ${name}; }}"
             for name in variables}
    if parses("\n".join(rules.values())):
        return
    for name, css in rules.items():
        if not parses(css):
            kind = "a text style such as bold" if name.endswith("style") else "a colour such as #E0803A 35%"
            raise ThemeError(f"variable {name} = {variables[name]!r} is not {kind}")


def resolve_theme_name(requested: str | None, available: set[str]) -> str | None:
    """Map a user's ``--theme`` value (``dark``, ``kiln-dark``, ``textual-light`` …) to a registered name."""
    if not requested:
        return None
    for candidate in (requested, f"kiln-{requested}"):
        if candidate in available:
            return candidate
    return None
