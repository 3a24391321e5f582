"""The autotag dialog: which WD14 tagger, thresholds, mode and trigger words, checked before anything runs.

The form is a view of ``curator.autotag.config.AutotagConfig`` (the same fields as ``kiln autotag``): pressing
Run validates it there and resolves the model folder or cached repo id with ``curator.autotag.model``; a
problem is shown under the form, naming the field and the fix, and nothing starts. The dialog returns the
validated config (or None when cancelled). The form's frame is ``tui.widgets.model_run_dialog``'s, shared with
the caption dialog.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Input, Label, Static

from tui.bindings import bindings
from tui.widgets.model_run_dialog import ModelRunDialog, field_text

if TYPE_CHECKING:
    from curator.autotag.config import AutotagConfig


class AutotagScreen(ModelRunDialog["AutotagConfig"]):
    """Autotag settings for the images in scope. ctrl+s (or enter in a field) runs, esc cancels."""

    PREFIX = "at"
    HEADING = "Autotag with a WD14 tagger"
    MODEL_PLACEHOLDER = "folder with model.onnx + selected_tags.csv, or a cached repo id"
    MODES = (
        ("missing", "only images without tags"),
        ("append", "add new tags after the existing ones"),
        ("replace", "replace the tags (lines after the first are kept)"),
    )
    DEFAULT_MODE = "missing"
    CHECKBOXES = (
        ("general_mcut", "MCut general"),
        ("character_mcut", "MCut character"),
        ("character_first", "characters first"),
        ("prefix_from_folder", "folder as trigger"),
        ("ratings", "rating tags"),
        ("keep_underscores", "keep underscores"),
    )
    LABEL_WIDTH = 15

    DEFAULT_CSS = f"""
    AutotagScreen #dialog {{ width: 86; }}
    AutotagScreen #form {{ max-height: 12; }}
    AutotagScreen .label {{ width: {LABEL_WIDTH}; }}
    AutotagScreen .row Input.short {{ width: 10; }}
    AutotagScreen .checks {{ height: auto; layout: grid; grid-size: 3; grid-rows: 1; }}
    """
    BINDINGS = bindings("autotag")

    def compose_fields(self) -> ComposeResult:
        s = self.settings
        with Horizontal(classes="row"):
            yield Label("General ≥", classes="label")
            yield Input(field_text(s.get("general_threshold", 0.35)), id="at-general", classes="short", type="number")
            yield Static(classes="gap")
            yield Label("Character ≥", classes="label")
            yield Input(field_text(s.get("character_threshold", 0.85)), id="at-character", classes="short",
                        type="number")
        with Horizontal(classes="row"):
            yield Label("Trigger words", classes="label")
            yield Input(field_text(s.get("prefix")), id="at-prefix", placeholder="kept first in every caption, e.g. mychar")
        with Horizontal(classes="row"):
            yield Label("Exclude", classes="label")
            yield Input(field_text(s.get("exclude")), id="at-exclude", placeholder="never written, e.g. watermark, signature")
        with Horizontal(classes="row"):
            yield Label("Max tags", classes="label")
            yield Input(field_text(s.get("max_tags")), id="at-max-tags", classes="short", type="integer",
                        placeholder="no cap")
            yield Static(classes="gap")
            yield Label("Device", classes="label")
            yield Input(field_text(s.get("device", "auto")), id="at-device", classes="short", placeholder="auto")

    def form_values(self) -> dict[str, object]:
        """The fields as ``AutotagConfig`` input (strings are parsed and checked by the config model; an empty
        number is left out: the model's default)."""
        values: dict[str, object] = {
            "model": self.input_text("model"),
            "general_threshold": self.input_text("general").strip() or None,
            "character_threshold": self.input_text("character").strip() or None,
            "prefix": self.input_text("prefix"),
            "exclude": self.input_text("exclude"),
            "max_tags": self.input_text("max_tags").strip() or None,
            "device": self.input_text("device").strip() or "auto",
            "mode": self._mode(),
        }
        return {k: v for k, v in values.items() if v is not None} | self.checkbox_values()

    def validated(self) -> tuple[AutotagConfig | None, str]:
        """(config, "") when the form is valid and the model can be found, else (None, what to fix)."""
        from pydantic import ValidationError

        from curator.autotag.config import FIELD_HINTS, AutotagConfig
        from curator.autotag.model import ModelError, resolve_model
        from curator.configerrors import describe_validation_error

        try:
            config = AutotagConfig.model_validate(self.form_values())
        except ValidationError as exc:
            return None, describe_validation_error(exc, "autotag", FIELD_HINTS)
        try:
            resolve_model(config.model)
        except ModelError as exc:
            return None, str(exc)
        return config, ""
