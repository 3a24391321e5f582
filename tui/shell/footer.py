"""The footer: Textual's, showing the keys of the focused pane, cut to the terminal's width so that nothing is
garbled. Textual's own lets the keys run under the command palette's key (docked at the right) at 80 columns;
here the keys that do not fit are left out from the end, except the help key (``?`` lists them all)."""

from __future__ import annotations

from rich.cells import cell_len
from textual import events
from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

HELP_ACTION = "help"


def _width(key: FooterKey, compact: bool) -> int:
    """Cells a key takes in the footer (compact style: key, a space, description, a margin)."""
    text = key.key_display + (" " + key.description if key.description else "")
    extra = 1 if compact else 3  # margin-right in compact style; padding around key and description otherwise
    if key.has_class("-command-palette"):
        extra = 1  # its border
    return cell_len(text) + extra


class KilnFooter(Footer):
    """A footer whose keys always fit: those that would run under the palette key are left out."""

    _laid_out_for = 0

    def compose(self) -> ComposeResult:
        children: list[Widget] = list(super().compose())
        width = self.size.width
        if not width:
            yield from children
            return
        keys = [c for c in children if isinstance(c, FooterKey)]
        palette = [k for k in keys if k.has_class("-command-palette")]
        room = width - sum(_width(k, self.compact) for k in palette)
        shown: list[Widget] = []
        used = 0
        help_keys = [k for k in keys if k.action.endswith(HELP_ACTION) and k not in palette]
        reserved = sum(_width(k, self.compact) for k in help_keys)
        for child in children:
            if not isinstance(child, FooterKey) or child in palette:
                continue
            needed = _width(child, self.compact)
            if child in help_keys:
                shown.append(child)
                used += needed
                reserved -= needed
            elif used + needed + reserved <= room:
                shown.append(child)
                used += needed
        self._laid_out_for = width
        yield from shown
        yield from palette

    def on_resize(self, event: events.Resize) -> None:
        if event.size.width != self._laid_out_for:
            self.call_after_refresh(self.recompose)
