"""The caption dialog: which captioning model (BLIP, Florence-2, a chat VLM), where the captions go, the prompt
and lengths, checked before anything runs.

The form is a view of ``curator.caption.config.CaptionConfig`` (the same fields as ``kiln caption``): pressing
Run validates it there and finds the model folder or cached repo id and its family with
``curator.caption.model``; a problem is shown under the form, naming the field and the fix, and nothing
starts. The dialog returns the validated config (or None when cancelled).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, RadioButton, RadioSet, Static

from curator.textsafe import safe_text
from tui.bindings import bindings
from tui.widgets.dialogs import DIALOG_CSS

if TYPE_CHECKING:
    from curator.caption.config import CaptionConfig

MODES = (
    ("write", "a caption file of its own beside each image (the extension below)"),
    ("prepend", "the sentence before the tags of the tag caption"),
    ("append", "the sentence after the tags of the tag caption"),
)
CHECKBOXES = (
    ("prefix_from_folder", "folder as trigger"),
    ("force", "replace existing caption files"),
)
NUMBERS = (("max_new_tokens", "Max length", 75), ("num_beams", "Beams", 3), ("batch_size", "Batch", 8))


def _text(value: object) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


class CaptionScreen(ModalScreen["CaptionConfig | None"]):
    """Caption settings for the images in scope. ctrl+s (or enter in a field) runs, esc cancels."""

    DEFAULT_CSS = DIALOG_CSS + """
    CaptionScreen #dialog { width: 90; }
    CaptionScreen #dialog .title { margin-bottom: 0; }
    CaptionScreen #form { height: auto; max-height: 14; margin: 1 0; }
    CaptionScreen .row { height: 1; margin-bottom: 1; }
    CaptionScreen.-dense .row, CaptionScreen.-dense #cap-mode-row, CaptionScreen.-dense #cap-mode-help {
        margin-bottom: 0;
    }
    CaptionScreen .label { width: 13; color: $text-muted; }
    CaptionScreen .row Input { width: 1fr; height: 1; border: none; padding: 0 1; background: $boost; }
    CaptionScreen .row Input:focus { background: $primary 30%; }
    CaptionScreen .row Input.short { width: 9; }
    CaptionScreen .gap { width: 2; }
    CaptionScreen #cap-mode-row { height: 1; margin-bottom: 1; }
    CaptionScreen RadioSet { layout: horizontal; border: none; height: 1; width: 1fr; padding: 0; }
    CaptionScreen RadioButton { padding: 0 2 0 0; }
    CaptionScreen .checks { height: 1; }
    CaptionScreen .checks Checkbox { border: none; height: 1; padding: 0; margin-right: 2; }
    CaptionScreen #cap-mode-help { color: $text-muted; height: 1; margin-bottom: 1; }
    CaptionScreen #cap-error { color: $error; height: auto; }
    CaptionScreen #cap-scope { color: $text-muted; }
    CaptionScreen .buttons { margin-top: 1; height: 1; }
    """
    BINDINGS = bindings("caption")

    def __init__(self, settings: dict[str, object], scope_label: str) -> None:
        super().__init__()
        self.settings = dict(settings)
        self.scope_label = scope_label

    def compose(self) -> ComposeResult:
        s = self.settings
        with Vertical(id="dialog"):
            yield Label("Caption with a local BLIP, Florence-2 or VLM model", classes="title")
            yield Static(safe_text(f"Scope: {self.scope_label}. Nothing is written before you confirm the diff."),
                         id="cap-scope")
            with VerticalScroll(id="form"):
                with Horizontal(classes="row"):
                    yield Label("Model", classes="label")
                    yield Input(_text(s.get("model")), id="cap-model",
                                placeholder="folder with config.json and the weights, or a cached repo id")
                with Horizontal(id="cap-mode-row"):
                    yield Label("Mode", classes="label")
                    with RadioSet(id="cap-mode"):
                        for mode, _ in MODES:
                            yield RadioButton(mode, value=s.get("mode", "write") == mode, id=f"cap-mode-{mode}")
                yield Static(id="cap-mode-help")
                with Horizontal(classes="row"):
                    yield Label("Extension", classes="label")
                    yield Input(_text(s.get("extension", ".caption")), id="cap-extension", classes="short")
                    yield Static(classes="gap")
                    yield Label("Device", classes="label")
                    yield Input(_text(s.get("device", "auto")), id="cap-device", classes="short", placeholder="auto")
                with Horizontal(classes="row"):
                    yield Label("Prompt", classes="label")
                    yield Input(_text(s.get("prompt")), id="cap-prompt",
                                placeholder="empty: the model's default; {trigger} {tags} {folder} are filled in")
                with Horizontal(classes="row"):
                    yield Label("Trigger words", classes="label")
                    yield Input(_text(s.get("prefix")), id="cap-prefix", placeholder="put first, e.g. ohwx woman")
                with Horizontal(classes="row"):
                    for n, (key, label, default) in enumerate(NUMBERS):
                        if n:
                            yield Static(classes="gap")
                        yield Label(label, classes="label")
                        yield Input(_text(s.get(key, default)), id=f"cap-{key.replace('_', '-')}", classes="short",
                                    type="integer")
                with Horizontal(classes="checks"):
                    for key, label in CHECKBOXES:
                        yield Checkbox(label, value=bool(s.get(key, False)), id=f"cap-{key.replace('_', '-')}")
            yield Static(id="cap-error")
            with Horizontal(classes="buttons"):
                yield Button("Run (ctrl+s)", variant="primary", id="run", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#cap-model", Input).focus()
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
        self.query_one("#cap-mode-help", Static).update(f"{' ' * 13}{mode}: {dict(MODES)[mode]}")

    def _mode(self) -> str:
        pressed = self.query_one("#cap-mode", RadioSet).pressed_button
        return (pressed.id or "").removeprefix("cap-mode-") if pressed else "write"

    # ----- the form -----------------------------------------------------------------------------
    def form_values(self) -> dict[str, object]:
        """The fields as ``CaptionConfig`` input (strings are parsed and checked by the config model)."""
        prompt = self.query_one("#cap-prompt", Input).value
        values: dict[str, object] = {
            "model": self.query_one("#cap-model", Input).value.strip(),
            "mode": self._mode(),
            "extension": self.query_one("#cap-extension", Input).value,
            "device": self.query_one("#cap-device", Input).value.strip() or "auto",
            "prompt": prompt if prompt.strip() else None,
            "prefix": self.query_one("#cap-prefix", Input).value,
        }
        for key, _label, default in NUMBERS:
            text = self.query_one(f"#cap-{key.replace('_', '-')}", Input).value.strip()
            values[key] = text or default
        for key, _ in CHECKBOXES:
            values[key] = self.query_one(f"#cap-{key.replace('_', '-')}", Checkbox).value
        return values

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

    # ----- actions ------------------------------------------------------------------------------
    def action_run(self) -> None:
        config, problem = self.validated()
        if config is None:
            self.query_one("#cap-error", Static).update(safe_text(problem))  # paths in it are data, not markup
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
