"""The curator TUI's config folder and its remembered preferences (theme, image protocol, browser layout)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ValidationError

CONFIG_NAME = "tui.toml"


class TuiPrefs(BaseModel):
    """What the TUI remembers between runs."""

    theme: str = "kiln-dark"
    image_protocol: str | None = None
    autotag_model: str | None = None
    browser_layout: str = "list"  # the Browse view's layout: "list" or "grid" (`m` switches)
    autotag: dict[str, object] = {}  # the autotag dialog's last settings (curator.autotag.AutotagConfig fields)
    caption: dict[str, object] = {}  # the caption dialog's last settings (curator.caption.CaptionConfig fields)


def config_dir() -> Path:
    """The TUI's config folder: ``<user config dir>/kiln`` (``~/.config/kiln`` on Linux; ``KILN_CONFIG_DIR``
    overrides it, e.g. for tests). It holds the preferences (``tui.toml``), the keymap (``keymap.toml``) and
    the user's themes (``themes/*.toml``)."""
    import os

    override = os.environ.get("KILN_CONFIG_DIR")
    if override:
        return Path(override)
    from platformdirs import user_config_dir

    return Path(user_config_dir("kiln"))


def prefs_path() -> Path:
    """``<config dir>/tui.toml``."""
    return config_dir() / CONFIG_NAME


def load_prefs() -> TuiPrefs:
    """Read the preferences; a missing or broken file gives the defaults (never an error at start-up)."""
    path = prefs_path()
    try:
        return TuiPrefs.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except (OSError, tomllib.TOMLDecodeError, ValidationError, UnicodeDecodeError):
        return TuiPrefs()


def save_prefs(prefs: TuiPrefs) -> None:
    """Write the preferences atomically (temp file, fsync, rename); failures (read-only home) are ignored."""
    import tomli_w

    from curator.fsutil import atomic_write_bytes

    path = prefs_path()
    data = {k: v for k, v in prefs.model_dump().items() if v is not None}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, tomli_w.dumps(data).encode("utf-8"))
    except OSError:
        pass
