"""The status line: how many images are shown of how many, the selection, the filter and a note on the
background work (scan, checks, filtering). It follows the dataset model by itself."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.widgets import Static

from curator.textsafe import safe_text
from tui.messages import ModelChanged, follow
from tui.model import DatasetModel
from tui.state import CurrentChanged


class StatusBar(Static):
    DEFAULT_CSS = """
    StatusBar { height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    """

    def __init__(self, model: DatasetModel, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = model
        self.note = ""
        self._unfollow: Callable[[], None] | None = None

    def on_mount(self) -> None:
        self._unfollow = follow(self, self.model.changes)
        self.redraw()

    def on_unmount(self) -> None:
        if self._unfollow is not None:
            self._unfollow()

    def on_model_changed(self, message: ModelChanged) -> None:
        if not isinstance(message.change, CurrentChanged):  # moving the cursor changes nothing here
            self.redraw()

    def show_note(self, note: str) -> None:
        self.note = note
        self.redraw()

    def redraw(self) -> None:
        model = self.model
        state = model.state
        text = Text(no_wrap=True, overflow="ellipsis")
        shown = len(state.matching(model.rows)) if state.predicate is not None else len(model.rows)
        text.append(f"{shown}/{len(model.rows)} images")
        if state.selected:
            text.append(f"  {len(state.selected)} selected", style="bold")
        if state.filter_text:
            text.append("  filter: ")
            text.append_text(safe_text(state.filter_text, style="italic"))
        if self.note:
            text.append("  ")
            text.append_text(safe_text(self.note, style="bold"))
        self.update(text)
