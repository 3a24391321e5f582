"""Review tag suggestions (``curator.tags.suggest``): tick the ones to apply, see each one's counts and example.

Keyboard: ↑/↓ move, space (or enter) ticks, ``a`` ticks all (or none), ctrl+s applies the ticked ones (as in the
bulk view; the owner previews the diff and writes through the journal), esc closes. The screen only returns the
chosen suggestions.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, SelectionList, Static
from textual.widgets.selection_list import Selection

from curator.tags.suggest import Suggestion
from curator.textsafe import printable, safe_text
from tui.bindings import bindings


def suggestion_label(suggestion: Suggestion) -> Text:
    label = Text(f"{suggestion.kind[:4]}  ", style="dim")
    label.append_text(safe_text(suggestion.keep, style="bold"))
    label.append(" drops ")
    for n, dropped in enumerate(suggestion.drop):
        if n:
            label.append(", ")
        label.append_text(safe_text(dropped.tag, style="red"))
    label.append(f"  ({suggestion.files} captions)", style="dim")
    return label


def suggestion_detail(suggestion: Suggestion) -> Text:
    text = Text()
    text.append_text(safe_text(suggestion.id, style="bold"))
    text.append(f"\nkeep '{printable(suggestion.keep)}' ({suggestion.keep_count} captions); drop, where it is:\n")
    for dropped in suggestion.drop:
        text.append("  ")
        text.append_text(safe_text(dropped.tag, style="red"))
        text.append(f"  {dropped.together}/{dropped.count}  ", style="bold")
        text.append_text(safe_text(dropped.reason, style="dim"))
        text.append("\n")
    if suggestion.example is not None:
        path, before, after = suggestion.example
        text.append_text(safe_text(path, style="dim"))
        text.append("\n- ", style="red")
        text.append_text(safe_text(before))
        text.append("\n+ ", style="green")
        text.append_text(safe_text(after))
    return text


class SuggestionsScreen(ModalScreen[list[Suggestion] | None]):
    """The dataset's consolidation and implication suggestions, to tick and apply."""

    DEFAULT_CSS = """
    SuggestionsScreen { align: center middle; }
    SuggestionsScreen #suggestions-box {
        width: 110; max-width: 98%; height: 90%; border: thick $primary; background: $surface; padding: 0 1;
    }
    SuggestionsScreen #suggestions-title { text-style: bold; color: $primary; height: 1; }
    SuggestionsScreen SelectionList { height: 2fr; border: none; }
    SuggestionsScreen #suggestion-detail { height: 1fr; border-top: tall $panel; overflow-y: auto; }
    """
    BINDINGS = bindings("suggestions")

    def __init__(self, suggestions: list[Suggestion]) -> None:
        super().__init__()
        self.suggestions = suggestions

    def compose(self) -> ComposeResult:
        with Vertical(id="suggestions-box"):
            yield Label(
                Text(f"{len(self.suggestions)} tag suggestion(s): space ticks, a all, ctrl+s applies, esc closes"),
                id="suggestions-title",
            )
            yield SelectionList[int](
                *(Selection(suggestion_label(s), n) for n, s in enumerate(self.suggestions)), id="suggestion-list"
            )
            yield Static(id="suggestion-detail")

    def on_mount(self) -> None:
        listing = self.query_one(SelectionList)
        listing.focus()
        if self.suggestions:
            listing.highlighted = 0
            self._show(0)
        else:
            self.query_one("#suggestion-detail", Static).update(Text("no consolidation or implication found", style="green"))

    def _show(self, index: int | None) -> None:
        if index is not None and 0 <= index < len(self.suggestions):
            self.query_one("#suggestion-detail", Static).update(suggestion_detail(self.suggestions[index]))

    def on_selection_list_selection_highlighted(self, event: SelectionList.SelectionHighlighted[int]) -> None:
        event.stop()
        self._show(event.selection_index)

    def action_toggle_all(self) -> None:
        listing = self.query_one(SelectionList)
        if len(listing.selected) == len(self.suggestions):
            listing.deselect_all()
        else:
            listing.select_all()

    def action_apply(self) -> None:
        chosen = sorted(self.query_one(SelectionList).selected)
        self.dismiss([self.suggestions[n] for n in chosen] if chosen else None)

    def action_close(self) -> None:
        self.dismiss(None)
