"""The top line: the app name, the views (click one, or press its key) and the dataset's name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.style import Style
from rich.text import Text
from textual import events
from textual.widget import Widget

from curator.textsafe import safe_text
from tui.messages import ShowView

if TYPE_CHECKING:
    from tui.views.registry import ViewSpec


def theme_style(spec: str, fallback: str) -> Style:
    """A Rich style from theme colours; themes may use names Rich does not know (e.g. ANSI themes)."""
    from rich.errors import StyleSyntaxError

    try:
        return Style.parse(spec)
    except (StyleSyntaxError, ValueError):
        return Style.parse(fallback)


class ViewBar(Widget):
    """One line: the app name, the views with their keys (``labels``: view id → key label) and the dataset."""

    DEFAULT_CSS = """
    ViewBar { height: 1; background: $panel; }
    """

    def __init__(self, specs: list[ViewSpec], labels: dict[str, str], dataset_name: str, *,
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self.specs = specs
        self.labels = labels
        self.dataset_name = dataset_name
        self.active = specs[0].view_id if specs else ""
        self._spans: list[tuple[int, int, str]] = []

    def render(self) -> Text:
        theme = self.app.current_theme
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(" kiln ", style=theme_style(f"bold {theme.background} on {theme.primary}", "bold reverse"))
        text.append(" ")
        self._spans = []
        for spec in self.specs:
            label = f" {self.labels.get(spec.view_id, spec.key)} {spec.title} "
            start = text.cell_len
            if spec.view_id == self.active:
                text.append(label, style=theme_style(f"bold reverse {theme.accent or theme.primary}", "bold reverse"))
            else:
                text.append(label)
            self._spans.append((start, text.cell_len, spec.view_id))
        text.append("  ")
        text.append_text(safe_text(self.dataset_name, style="italic"))
        return text

    def set_active(self, view_id: str) -> None:
        self.active = view_id
        self.refresh()

    def on_click(self, event: events.Click) -> None:
        for start, end, view_id in self._spans:
            if start <= event.x < end:
                self.post_message(ShowView(view_id))
                return
