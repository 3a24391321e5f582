"""Modal dialogs: confirm (for anything destructive), a one-line prompt, and the `?` help listing."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from curator.textsafe import safe_text
from tui.bindings import bindings

DIALOG_CSS = """
ModalScreen { align: center middle; }
#dialog {
    width: 72; max-width: 95%; height: auto; max-height: 90%;
    border: thick $primary; background: $surface; padding: 0 1;
}
#dialog .title { text-style: bold; color: $primary; margin-bottom: 1; }
#dialog .buttons { height: auto; align-horizontal: right; margin-top: 1; }
#dialog Button { margin-left: 1; min-width: 10; }
#dialog #body { height: auto; max-height: 16; }
"""


class ConfirmScreen(ModalScreen[bool]):
    """Yes/no for a destructive action. `y`/enter confirms, `n`/esc cancels."""

    DEFAULT_CSS = DIALOG_CSS
    BINDINGS = bindings("confirm")

    def __init__(self, title: str, body: Text | str, confirm_label: str = "Yes") -> None:
        super().__init__()
        self.title_text = title
        self.body = body if isinstance(body, Text) else Text(body)
        self.confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(Text(self.title_text), classes="title")
            with VerticalScroll(id="body"):
                yield Static(self.body)
            with Horizontal(classes="buttons"):
                yield Button(Text(f"{self.confirm_label} (y)"), variant="error", id="yes")
                yield Button("No (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class PromptScreen(ModalScreen[str | None]):
    """Ask for one line of text (enter accepts, esc cancels)."""

    DEFAULT_CSS = DIALOG_CSS
    BINDINGS = bindings("prompt")

    def __init__(self, title: str, value: str = "", placeholder: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.value = value
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(Text(self.title_text), classes="title")
            yield Input(value=self.value, placeholder=self.placeholder, id="prompt")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """Every key binding of the app, grouped by where it applies, with the id a keymap file moves it by;
    ``notes`` (the keymap file and what was wrong in it) above them."""

    DEFAULT_CSS = DIALOG_CSS + "#dialog { width: 100; height: 90%; } #help { height: 1fr; }"
    BINDINGS = bindings("help")

    def __init__(self, sections: list[tuple[str, list[tuple[str, str, str]]]], notes: list[str] | None = None) -> None:
        super().__init__()
        self.sections = sections
        self.notes = notes or []

    def compose(self) -> ComposeResult:
        text = Text()
        for note in self.notes:
            text.append_text(safe_text(note, style="dim"))
            text.append("\n")
        if self.notes:
            text.append("\n")
        for title, rows in self.sections:
            text.append(f"{title}\n", style="bold underline")
            for keys, description, binding_id in rows:
                text.append(f"  {keys:<22}", style="bold")
                text.append(f"{description:<32}")
                text.append(f" {binding_id}\n", style="dim")
            text.append("\n")
        with Vertical(id="dialog"):
            yield Label("Keys  (esc to close; ctrl+p searches every action)", classes="title")
            with VerticalScroll(id="help"):
                yield Static(text)

    def action_close(self) -> None:
        self.dismiss(None)
