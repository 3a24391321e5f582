"""What the caption and autotag dialogs share: a form over a config model that runs a local model on the images
in scope (model field, mode radio set with its help line, the dialog's own fields, check boxes, the problem
line, Run/Cancel), checked before anything runs.

A dialog subclasses ``ModelRunDialog`` with its id prefix (``cap``, ``at``: widget ids are ``PREFIX-field``), its
modes and default mode, its check boxes, and ``compose_fields`` / ``form_values`` / ``validated``. It returns the
validated config, or None when cancelled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, TypeVar

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, RadioButton, RadioSet, Static

from curator.textsafe import safe_text
from tui.widgets.dialogs import DIALOG_CSS

if TYPE_CHECKING:
    from pydantic import BaseModel

ConfigT = TypeVar("ConfigT", bound="BaseModel")

DENSE_BELOW = 36
"""Terminals shorter than this (24 lines) get the form without blank lines between fields."""


def field_text(value: object) -> str:
    """A setting as an input's text: a list comma-joined, None empty."""
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


class ModelRunDialog(ModalScreen[ConfigT | None]):
    """Settings of one model run on the images in scope. ctrl+s (or enter in a field) runs, esc cancels."""

    PREFIX: ClassVar[str]
    HEADING: ClassVar[str]
    MODEL_PLACEHOLDER: ClassVar[str]
    MODES: ClassVar[tuple[tuple[str, str], ...]]
    """(mode, what it does), in the order the radio set shows them."""
    DEFAULT_MODE: ClassVar[str]
    CHECKBOXES: ClassVar[tuple[tuple[str, str], ...]]
    """(config field, label)."""
    LABEL_WIDTH: ClassVar[int]

    DEFAULT_CSS = DIALOG_CSS + """
    ModelRunDialog #dialog .title { margin-bottom: 0; }
    ModelRunDialog #form { height: auto; margin: 1 0; }
    ModelRunDialog .row, ModelRunDialog .mode-row { height: 1; margin-bottom: 1; }
    ModelRunDialog.-dense .row, ModelRunDialog.-dense .mode-row, ModelRunDialog.-dense .mode-help {
        margin-bottom: 0;
    }
    ModelRunDialog .label { color: $text-muted; }
    ModelRunDialog .row Input { width: 1fr; height: 1; border: none; padding: 0 1; background: $boost; }
    ModelRunDialog .row Input:focus { background: $primary 30%; }
    ModelRunDialog .gap { width: 2; }
    ModelRunDialog RadioSet { layout: horizontal; border: none; height: 1; width: 1fr; padding: 0; }
    ModelRunDialog RadioButton { padding: 0 2 0 0; }
    ModelRunDialog .checks Checkbox { border: none; height: 1; padding: 0; }
    ModelRunDialog .mode-help { color: $text-muted; height: 1; margin-bottom: 1; }
    ModelRunDialog .problem { color: $error; height: auto; }
    ModelRunDialog .scope { color: $text-muted; }
    ModelRunDialog .buttons { margin-top: 1; height: 1; }
    """

    def __init__(self, settings: dict[str, object], scope_label: str) -> None:
        super().__init__()
        self.settings = dict(settings)
        self.scope_label = scope_label

    def field_id(self, key: str) -> str:
        """The widget id of a config field: ``PREFIX-field-name``."""
        return f"{self.PREFIX}-{key.replace('_', '-')}"

    def compose(self) -> ComposeResult:
        s = self.settings
        with Vertical(id="dialog"):
            yield Label(self.HEADING, classes="title")
            yield Static(safe_text(f"Scope: {self.scope_label}. Nothing is written before you confirm the diff."),
                         id=self.field_id("scope"), classes="scope")
            with VerticalScroll(id="form"):
                with Horizontal(classes="row"):
                    yield Label("Model", classes="label")
                    yield Input(field_text(s.get("model")), id=self.field_id("model"),
                                placeholder=self.MODEL_PLACEHOLDER)
                with Horizontal(id=self.field_id("mode_row"), classes="mode-row"):
                    yield Label("Mode", classes="label")
                    with RadioSet(id=self.field_id("mode")):
                        for mode, _ in self.MODES:
                            yield RadioButton(mode, value=s.get("mode", self.DEFAULT_MODE) == mode,
                                              id=f"{self.PREFIX}-mode-{mode}")
                yield Static(id=self.field_id("mode_help"), classes="mode-help")
                yield from self.compose_fields()
                with Horizontal(classes="checks"):
                    for key, label in self.CHECKBOXES:
                        yield Checkbox(label, value=bool(s.get(key, False)), id=self.field_id(key))
            yield Static(id=self.field_id("error"), classes="problem")
            with Horizontal(classes="buttons"):
                yield Button("Run (ctrl+s)", variant="primary", id="run", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def compose_fields(self) -> ComposeResult:
        """The dialog's own rows, between the mode and the check boxes."""
        raise NotImplementedError

    def on_mount(self) -> None:
        self.query_one(f"#{self.field_id('model')}", Input).focus()
        self._show_mode_help()
        self.on_resize()

    def on_resize(self, event: object = None) -> None:
        """Short terminals get the form without blank lines between fields."""
        self.set_class(self.app.size.height < DENSE_BELOW, "-dense")

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        event.stop()
        self._show_mode_help()

    def _show_mode_help(self) -> None:
        mode = self._mode()
        self.query_one(f"#{self.field_id('mode_help')}", Static).update(
            f"{' ' * self.LABEL_WIDTH}{mode}: {dict(self.MODES)[mode]}")

    # ----- the form -----------------------------------------------------------------------------
    def _mode(self) -> str:
        """The mode picked in the radio set."""
        pressed = self.query_one(f"#{self.field_id('mode')}", RadioSet).pressed_button
        return (pressed.id or "").removeprefix(f"{self.PREFIX}-mode-") if pressed else self.DEFAULT_MODE

    def input_text(self, key: str) -> str:
        """The text in the input of a config field."""
        return self.query_one(f"#{self.field_id(key)}", Input).value

    def checkbox_values(self) -> dict[str, bool]:
        """The check boxes, by config field."""
        return {key: self.query_one(f"#{self.field_id(key)}", Checkbox).value for key, _ in self.CHECKBOXES}

    def form_values(self) -> dict[str, object]:
        """The fields as the config model's input (strings are parsed and checked by the model)."""
        raise NotImplementedError

    def validated(self) -> tuple[ConfigT | None, str]:
        """(config, "") when the form is valid and the model can be found, else (None, what to fix)."""
        raise NotImplementedError

    # ----- actions ------------------------------------------------------------------------------
    def action_run(self) -> None:
        config, problem = self.validated()
        if config is None:  # paths in the problem are data, not markup
            self.query_one(f"#{self.field_id('error')}", Static).update(safe_text(problem))
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
