"""Modal dialogs: confirm (for anything destructive), a one-line prompt, and the `?` help listing."""

from __future__ import annotations

from rich.text import Text
from textual import events
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


HELP_WIDTH = 96  # the help table's width before the dialog is laid out
HelpSections = list[tuple[str, list[tuple[str, str, str]]]]


def help_text(sections: HelpSections, notes: list[str], width: int) -> Text:
    """Help as three columns (keys, description, binding id) that fit ``width`` cells: a description wraps
    inside its column, the id goes on a line of its own when the columns cannot all fit."""
    import textwrap

    text = Text()
    for note in notes:
        text.append_text(safe_text(note, style="dim"))
        text.append("\n")
    if notes:
        text.append("\n")
    rows = [row for _title, section in sections for row in section]
    keys_w = min(22, max((len(k) for k, _d, _i in rows), default=8))
    id_w = min(max((len(i) for _k, _d, i in rows), default=8), width - 2 - keys_w - 2 - 1 - 24)
    all_below = id_w < 12  # too narrow for three columns: each id under its description
    desc_w = max(10, width - 2 - keys_w - 2 - (0 if all_below else 1 + id_w))
    for title, section in sections:
        text.append(f"{title}\n", style="bold underline")
        for keys, description, binding_id in section:
            lines = textwrap.wrap(description, desc_w) or [""]
            if len(keys) > keys_w:  # a long list of keys: a line of its own, the description below it
                text.append(f"  {keys}\n", style="bold")
                keys = ""
            id_below = all_below or len(binding_id) > id_w  # a long id: a line of its own
            text.append(f"  {keys:<{keys_w}}  ", style="bold")
            text.append(lines[0] if id_below else lines[0].ljust(desc_w))
            if not id_below:
                text.append(f" {binding_id}", style="dim")
            text.append("\n")
            for more in lines[1:]:
                text.append(" " * (keys_w + 4) + more + "\n")
            if id_below:
                text.append(" " * (keys_w + 4) + binding_id + "\n", style="dim")
        text.append("\n")
    return text


class HelpScreen(ModalScreen[None]):
    """Every key binding of the app, grouped by where it applies, with the id a keymap file moves it by;
    ``notes`` (the keymap file and what was wrong in it) above them."""

    DEFAULT_CSS = DIALOG_CSS + "#dialog { width: 100; height: 90%; } #help { height: 1fr; }"
    BINDINGS = bindings("help")

    def __init__(self, sections: HelpSections, notes: list[str] | None = None) -> None:
        super().__init__()
        self.sections = sections
        self.notes = notes or []

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Keys  (esc to close; ctrl+p searches every action)", classes="title")
            with VerticalScroll(id="help"):
                yield Static(help_text(self.sections, self.notes, HELP_WIDTH), id="help-text")

    def on_resize(self, event: events.Resize) -> None:
        self.call_after_refresh(self._lay_out)

    def _lay_out(self) -> None:
        """The table laid out for the width the dialog has (80 columns: descriptions wrap in their column)."""
        width = self.query_one("#help", VerticalScroll).scrollable_content_region.width
        if width:
            self.query_one("#help-text", Static).update(help_text(self.sections, self.notes, width))

    def action_close(self) -> None:
        self.dismiss(None)
