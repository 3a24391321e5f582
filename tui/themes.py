"""Load the TUI's themes from the ``themes/`` package (TOML files → ``textual.theme.Theme``)."""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from textual.theme import Theme

DEFAULT_THEME = "kiln-dark"


def load_themes() -> dict[str, Theme]:
    """Every ``themes/*.toml`` as a Theme, by name. A broken file is skipped with a message on stderr."""
    import sys

    from textual.theme import Theme

    found: dict[str, Theme] = {}
    for entry in sorted(resources.files("themes").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".toml"):
            continue
        try:
            data = tomllib.loads(entry.read_text(encoding="utf-8"))
            variables = {str(k): str(v) for k, v in data.pop("variables", {}).items()}
            theme = Theme(variables=variables, **data)
        except (tomllib.TOMLDecodeError, TypeError, ValueError) as exc:
            print(f"kiln: theme file {entry.name} ignored: {exc}", file=sys.stderr)
            continue
        found[theme.name] = theme
    return found


def resolve_theme_name(requested: str | None, available: set[str]) -> str | None:
    """Map a user's ``--theme`` value (``dark``, ``kiln-dark``, ``textual-light`` …) to a registered name."""
    if not requested:
        return None
    for candidate in (requested, f"kiln-{requested}"):
        if candidate in available:
            return candidate
    return None
