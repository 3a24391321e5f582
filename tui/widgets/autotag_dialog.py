"""The autotag dialog: which WD14 tagger, thresholds, mode and trigger words, checked before anything runs.

The form is a view of ``curator.autotag.config.AutotagConfig`` (the same fields as ``kiln autotag``): pressing
Run validates it there and resolves the model folder or cached repo id with ``curator.autotag.model``; a
problem is shown under the form, naming the field and the fix, and nothing starts. The dialog returns the
validated config (or None when cancelled).
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, RadioButton, RadioSet, Static

from curator.textsafe import safe_text
from tui.bindings import bindings
from tui.widgets.dialogs import DIALOG_CSS

MODES = (
    ("missing", "only images without tags"),
    ("append", "add new tags after the existing ones"),
    ("replace", "replace the tags (lines after the first are kept)"),
)
DEVICES = ("auto", "cpu", "cuda", "rocm")
CHECKBOXES = (
    ("general_mcut", "MCut general"),
    ("character_mcut", "MCut character"),
    ("character_first", "characters first"),
    ("prefix_from_folder", "folder as trigger"),
    ("ratings", "rating tags"),
    ("keep_underscores", "keep underscores"),
)


def _join(values: Any) -> str:
    if isinstance(values, list | tuple):
        return ", ".join(str(v) for v in values)
    return str(values or "")


class AutotagScreen(ModalScreen[Any]):
    """Autotag settings for the images in scope. ctrl+s (or enter in a field) runs, esc cancels."""

    DEFAULT_CSS = DIALOG_CSS + """
    AutotagScreen #dialog { width: 86; }
    AutotagScreen #dialog .title { margin-bottom: 0; }
    AutotagScreen #form { height: auto; max-height: 12; margin: 1 0; }
    AutotagScreen .row { height: 1; margin-bottom: 1; }
    AutotagScreen.-dense .row, AutotagScreen.-dense #at-mode-row, AutotagScreen.-dense #at-mode-help {
        margin-bottom: 0;
    }
    AutotagScreen .label { width: 15; color: $text-muted; }
    AutotagScreen .row Input { width: 1fr; height: 1; border: none; padding: 0 1; background: $boost; }
    AutotagScreen .row Input:focus { background: $primary 30%; }
    AutotagScreen .row Input.short { width: 10; }
    AutotagScreen .gap { width: 2; }
    AutotagScreen #at-mode-row { height: 1; margin-bottom: 1; }
    AutotagScreen RadioSet { layout: horizontal; border: none; height: 1; width: 1fr; padding: 0; }
    AutotagScreen RadioButton { padding: 0 2 0 0; }
    AutotagScreen .checks { height: auto; layout: grid; grid-size: 3; grid-rows: 1; }
    AutotagScreen .checks Checkbox { border: none; height: 1; padding: 0; }
    AutotagScreen #at-mode-help { color: $text-muted; height: 1; margin-bottom: 1; }
    AutotagScreen #at-error { color: $error; height: auto; }
    AutotagScreen #at-scope { color: $text-muted; }
    AutotagScreen .buttons { margin-top: 1; height: 1; }
    """
    BINDINGS = bindings("autotag")

    def __init__(self, settings: dict[str, Any], scope_label: str) -> None:
        super().__init__()
        self.settings = dict(settings)
        self.scope_label = scope_label

    def compose(self) -> ComposeResult:
        s = self.settings
        with Vertical(id="dialog"):
            yield Label("Autotag with a WD14 tagger", classes="title")
            yield Static(safe_text(f"Scope: {self.scope_label}. Nothing is written before you confirm the diff."),
                         id="at-scope")
            with VerticalScroll(id="form"):
                with Horizontal(classes="row"):
                    yield Label("Model", classes="label")
                    yield Input(_join(s.get("model")), id="at-model",
                                placeholder="folder with model.onnx + selected_tags.csv, or a cached repo id")
                with Horizontal(id="at-mode-row"):
                    yield Label("Mode", classes="label")
                    with RadioSet(id="at-mode"):
                        for mode, _ in MODES:
                            yield RadioButton(mode, value=s.get("mode", "missing") == mode, id=f"at-mode-{mode}")
                yield Static(id="at-mode-help")
                with Horizontal(classes="row"):
                    yield Label("General ≥", classes="label")
                    yield Input(str(s.get("general_threshold", 0.35)), id="at-general", classes="short",
                                type="number")
                    yield Static(classes="gap")
                    yield Label("Character ≥", classes="label")
                    yield Input(str(s.get("character_threshold", 0.85)), id="at-character", classes="short",
                                type="number")
                with Horizontal(classes="row"):
                    yield Label("Trigger words", classes="label")
                    yield Input(_join(s.get("prefix")), id="at-prefix",
                                placeholder="kept first in every caption, e.g. mychar")
                with Horizontal(classes="row"):
                    yield Label("Exclude", classes="label")
                    yield Input(_join(s.get("exclude")), id="at-exclude",
                                placeholder="never written, e.g. watermark, signature")
                with Horizontal(classes="row"):
                    yield Label("Max tags", classes="label")
                    yield Input("" if s.get("max_tags") is None else str(s["max_tags"]), id="at-max-tags",
                                classes="short", type="integer", placeholder="no cap")
                    yield Static(classes="gap")
                    yield Label("Device", classes="label")
                    yield Input(str(s.get("device", "auto")), id="at-device", classes="short",
                                placeholder="auto")
                with Horizontal(classes="checks"):
                    for key, label in CHECKBOXES:
                        yield Checkbox(label, value=bool(s.get(key, False)), id=f"at-{key.replace('_', '-')}")
            yield Static(id="at-error")
            with Horizontal(classes="buttons"):
                yield Button("Run (ctrl+s)", variant="primary", id="run", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#at-model", Input).focus()
        self._show_mode_help()
        self.on_resize()

    def on_resize(self, event: object = None) -> None:
        """Short terminals (24 lines) get the form without blank lines between fields."""
        self.set_class(self.app.size.height < 36, "-dense")

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        event.stop()
        self._show_mode_help()

    def _show_mode_help(self) -> None:
        mode = self._mode()
        self.query_one("#at-mode-help", Static).update(f"{' ' * 15}{mode}: {dict(MODES)[mode]}")

    def _mode(self) -> str:
        pressed = self.query_one("#at-mode", RadioSet).pressed_button
        return (pressed.id or "").removeprefix("at-mode-") if pressed else "missing"

    # ----- the form -----------------------------------------------------------------------------
    def form_values(self) -> dict[str, Any]:
        """The fields as ``AutotagConfig`` input (strings are parsed and checked by the config model)."""
        values: dict[str, Any] = {
            "model": self.query_one("#at-model", Input).value,
            "general_threshold": self.query_one("#at-general", Input).value.strip() or None,
            "character_threshold": self.query_one("#at-character", Input).value.strip() or None,
            "prefix": self.query_one("#at-prefix", Input).value,
            "exclude": self.query_one("#at-exclude", Input).value,
            "max_tags": self.query_one("#at-max-tags", Input).value.strip() or None,
            "device": self.query_one("#at-device", Input).value.strip() or "auto",
        }
        values["mode"] = self._mode()
        for key, _ in CHECKBOXES:
            values[key] = self.query_one(f"#at-{key.replace('_', '-')}", Checkbox).value
        return {k: v for k, v in values.items() if v is not None}

    def validated(self) -> tuple[Any, str]:
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

    # ----- actions ------------------------------------------------------------------------------
    def action_run(self) -> None:
        config, problem = self.validated()
        if config is None:
            self.query_one("#at-error", Static).update(safe_text(problem))  # paths in it are data, not markup
            return
        self.dismiss(config)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_run()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "run":
            self.action_run()
        else:
            self.action_cancel()
