"""The caption dialog: which captioning model (BLIP, Florence-2, a chat VLM), where the captions go, the prompt
and lengths, checked before anything runs.

The form is a view of ``curator.caption.config.CaptionConfig`` (the same fields as ``kiln caption``): pressing
Run validates it there and finds the model folder or cached repo id and its family with
``curator.caption.model``; a problem is shown under the form, naming the field and the fix, and nothing
starts. The dialog returns the validated config (or None when cancelled). The form's frame is
``tui.widgets.model_run_dialog``'s, shared with the autotag dialog.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Input, Label, Static

from tui.bindings import bindings
from tui.widgets.model_run_dialog import ModelRunDialog, field_text

if TYPE_CHECKING:
    from curator.caption.config import CaptionConfig

NUMBERS = (("max_new_tokens", "Max length", 75), ("num_beams", "Beams", 3), ("batch_size", "Batch", 8))


class CaptionScreen(ModelRunDialog["CaptionConfig"]):
    """Caption settings for the images in scope. ctrl+s (or enter in a field) runs, esc cancels."""

    PREFIX = "cap"
    HEADING = "Caption with a local BLIP, Florence-2 or VLM model"
    MODEL_PLACEHOLDER = "folder with config.json and the weights, or a cached repo id"
    MODES = (
        ("write", "a caption file of its own beside each image (the extension below)"),
        ("prepend", "the sentence before the tags of the tag caption"),
        ("append", "the sentence after the tags of the tag caption"),
    )
    DEFAULT_MODE = "write"
    CHECKBOXES = (
        ("prefix_from_folder", "folder as trigger"),
        ("force", "replace existing caption files"),
    )
    LABEL_WIDTH = 13

    DEFAULT_CSS = f"""
    CaptionScreen #dialog {{ width: 90; }}
    CaptionScreen #form {{ max-height: 14; }}
    CaptionScreen .label {{ width: {LABEL_WIDTH}; }}
    CaptionScreen .row Input.short {{ width: 9; }}
    CaptionScreen .checks {{ height: 1; }}
    CaptionScreen .checks Checkbox {{ margin-right: 2; }}
    """
    BINDINGS = bindings("caption")

    def compose_fields(self) -> ComposeResult:
        s = self.settings
        with Horizontal(classes="row"):
            yield Label("Extension", classes="label")
            yield Input(field_text(s.get("extension", ".caption")), id="cap-extension", classes="short")
            yield Static(classes="gap")
            yield Label("Device", classes="label")
            yield Input(field_text(s.get("device", "auto")), id="cap-device", classes="short", placeholder="auto")
        with Horizontal(classes="row"):
            yield Label("Prompt", classes="label")
            yield Input(field_text(s.get("prompt")), id="cap-prompt",
                        placeholder="empty: the model's default; {trigger} {tags} {folder} are filled in")
        with Horizontal(classes="row"):
            yield Label("Trigger words", classes="label")
            yield Input(field_text(s.get("prefix")), id="cap-prefix", placeholder="put first, e.g. ohwx woman")
        with Horizontal(classes="row"):
            for n, (key, label, default) in enumerate(NUMBERS):
                if n:
                    yield Static(classes="gap")
                yield Label(label, classes="label")
                yield Input(field_text(s.get(key, default)), id=self.field_id(key), classes="short", type="integer")

    def form_values(self) -> dict[str, object]:
        """The fields as ``CaptionConfig`` input (strings are parsed and checked by the config model)."""
        prompt = self.input_text("prompt")
        values: dict[str, object] = {
            "model": self.input_text("model").strip(),
            "mode": self._mode(),
            "extension": self.input_text("extension"),
            "device": self.input_text("device").strip() or "auto",
            "prompt": prompt if prompt.strip() else None,
            "prefix": self.input_text("prefix"),
        }
        for key, _label, default in NUMBERS:
            values[key] = self.input_text(key).strip() or default
        return values | self.checkbox_values()

    def validated(self) -> tuple[CaptionConfig | None, str]:
        """(config, "") when the form is valid and the model can be found, else (None, what to fix)."""
        from pydantic import ValidationError

        from curator.caption.config import FIELD_HINTS, CaptionConfig
        from curator.caption.model import CaptionModelError, detect_family, resolve_model
        from curator.configerrors import describe_validation_error

        try:
            config = CaptionConfig.model_validate(self.form_values())
        except ValidationError as exc:
            return None, describe_validation_error(exc, "caption", FIELD_HINTS)
        try:
            detect_family(resolve_model(config.model))
        except CaptionModelError as exc:
            return None, str(exc)
        return config, ""
