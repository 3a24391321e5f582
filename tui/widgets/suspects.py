"""Review suspect tags (``curator.tags.suspects``): low autotag confidence, contradictions, rare tags; tick the
ones to remove.

Keyboard: ↑/↓ move, space (or enter) ticks, ``a`` ticks all (or none), ctrl+s removes the ticked ones (the
owner previews the diff and writes through the journal), esc closes. A suspect is removed only from the images
it is suspected in. The screen only returns the chosen suspects.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, SelectionList, Static
from textual.widgets.selection_list import Selection

from curator.tags.suspects import Suspect
from curator.textsafe import safe_text
from tui.bindings import bindings

KIND_STYLE = {"low-confidence": "yellow", "contradiction": "red", "rare": "magenta"}
MAX_PATHS = 12


def suspect_label(suspect: Suspect) -> Text:
    label = Text(f"{suspect.kind:15s} ", style=KIND_STYLE.get(suspect.kind, "dim"))
    label.append_text(safe_text(suspect.tag, style="bold"))
    label.append(f"  {len(suspect.paths)} image(s)", style="dim")
    if suspect.score is not None:
        label.append(f"  p={suspect.score:.2f}", style="dim")
    return label


def suspect_detail(suspect: Suspect) -> Text:
    text = Text()
    text.append_text(safe_text(suspect.tag, style="bold"))
    text.append(f"  ({suspect.kind})\n")
    text.append_text(safe_text(suspect.detail, style="dim"))
    text.append(f"\nremoved from these {len(suspect.paths)} image(s) only:\n")
    for path in suspect.paths[:MAX_PATHS]:
        text.append("  ")
        text.append_text(safe_text(path))
        text.append("\n")
    if len(suspect.paths) > MAX_PATHS:
        text.append(f"  … {len(suspect.paths) - MAX_PATHS} more\n", style="dim")
    return text


class SuspectsScreen(ModalScreen[list[Suspect] | None]):
    """The dataset's suspect tags, to tick and remove."""

    DEFAULT_CSS = """
    SuspectsScreen { align: center middle; }
    SuspectsScreen #suspects-box {
        width: 110; max-width: 98%; height: 90%; border: thick $primary; background: $surface; padding: 0 1;
    }
    SuspectsScreen #suspects-title { text-style: bold; color: $primary; height: 1; }
    SuspectsScreen SelectionList { height: 2fr; border: none; }
    SuspectsScreen #suspect-detail { height: 1fr; border-top: tall $panel; overflow-y: auto; }
    """
    BINDINGS = bindings("suspects")

    def __init__(self, suspects: list[Suspect]) -> None:
        super().__init__()
        self.suspects = suspects

    def compose(self) -> ComposeResult:
        with Vertical(id="suspects-box"):
            yield Label(
                Text(f"{len(self.suspects)} suspect tag(s): space ticks, a all, ctrl+s removes, esc closes"),
                id="suspects-title",
            )
            yield SelectionList[int](
                *(Selection(suspect_label(s), n) for n, s in enumerate(self.suspects)), id="suspect-list"
            )
            yield Static(id="suspect-detail")

    def on_mount(self) -> None:
        listing = self.query_one(SelectionList)
        listing.focus()
        if self.suspects:
            listing.highlighted = 0
            self._show(0)
        else:
            self.query_one("#suspect-detail", Static).update(
                Text("no suspect tag: no low-confidence autotag, contradiction or rare tag", style="green")
            )

    def _show(self, index: int | None) -> None:
        if index is not None and 0 <= index < len(self.suspects):
            self.query_one("#suspect-detail", Static).update(suspect_detail(self.suspects[index]))

    def on_selection_list_selection_highlighted(self, event: SelectionList.SelectionHighlighted[int]) -> None:
        event.stop()
        self._show(event.selection_index)

    def action_toggle_all(self) -> None:
        listing = self.query_one(SelectionList)
        if len(listing.selected) == len(self.suspects):
            listing.deselect_all()
        else:
            listing.select_all()

    def action_apply(self) -> None:
        chosen = sorted(self.query_one(SelectionList).selected)
        self.dismiss([self.suspects[n] for n in chosen] if chosen else None)

    def action_close(self) -> None:
        self.dismiss(None)
