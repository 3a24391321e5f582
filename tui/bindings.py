"""Every key binding of the curator in one registry: its id, default keys, action, description and where it
applies.

A binding's id is ``<context>.<name>`` (``browser.edit-tags``); the user keymap (tui/keymap.py) points ids at
other keys. Views and widgets take their ``BINDINGS`` from here (``bindings("browser")``), the app applies the
keymap to them, and help (``?``) and the command palette are generated from the same table: the three cannot
disagree. A view from another package registers its own context with ``register_context``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from textual.binding import BindingType


@dataclass(frozen=True)
class Key:
    """One binding: ``name`` (unique in its context), default ``keys`` (Textual key names, comma-separated),
    the ``action`` it runs on its widget, the ``description`` shown in the footer, help and palette."""

    name: str
    keys: str
    action: str
    description: str
    show: bool = True  # in the footer
    priority: bool = False
    long: str = ""  # a fuller description for help and the palette, when the footer's is terse

    @property
    def title(self) -> str:
        return self.long or self.description


@dataclass(frozen=True)
class Context:
    """Where bindings apply: ``title`` (help section), the ``view`` they live in (None: the app or the screen),
    ``target`` (CSS selector of the widget that holds them, '' for the app itself), ``palette`` (whether the
    command palette offers them; dialogs' keys are listed in help only). ``shares``: contexts bound on the same
    widget, whose keys must not clash with these."""

    id: str
    title: str
    view: str | None
    target: str
    keys: tuple[Key, ...]
    palette: bool = True
    shares: tuple[str, ...] = ()

    def binding_id(self, key: Key) -> str:
        return f"{self.id}.{key.name}"


def _view_keys() -> tuple[Key, ...]:
    return tuple(Key(f"view-{n}", str(n), f"show_view_key('{n}')", f"View {n}", show=False) for n in range(1, 10))


_BUILTIN: tuple[Context, ...] = (
    Context("app", "Everywhere", None, "", (
        Key("help", "question_mark", "help", "Help"),
        Key("filter", "slash", "filter", "Filter"),
        Key("undo", "u,ctrl+z", "undo", "Undo"),
        Key("redo", "ctrl+r,ctrl+y", "redo", "Redo"),
        Key("rescan", "f5", "rescan", "Rescan", show=False),
        Key("training", "f2", "toggle_training", "Training panel", show=False),
        Key("theme", "ctrl+t", "cycle_theme", "Next theme", show=False),
        Key("palette", "ctrl+p", "command_palette", "palette", show=False, priority=True,
            long="Command palette (every action)"),
        Key("quit", "q", "quit", "Quit"),
        Key("leave-field", "escape", "leave_input", "Leave the text field", show=False),
        *_view_keys(),
    )),
    Context("browser", "Browse view", "browser", "BrowserView", (
        Key("edit-tags", "e", "edit_tags", "Edit tags"),
        Key("side-pane", "p", "toggle_side", "Preview pane", show=False),
        Key("bulk", "b", "bulk", "Bulk"),
        Key("layout", "m", "toggle_layout", "Grid/List"),
    )),
    Context("images", "Browse view · image list and grid", "browser", "ImageList, ImageGrid", (
        Key("up", "up,k", "cursor_up", "Up", show=False),
        Key("down", "down,j", "cursor_down", "Down", show=False),
        Key("page-up", "pageup,ctrl+b", "page_up", "Page up", show=False),
        Key("page-down", "pagedown,ctrl+f", "page_down", "Page down", show=False),
        Key("half-page-up", "ctrl+u", "half_page(-1)", "Half page up", show=False),
        Key("half-page-down", "ctrl+d", "half_page(1)", "Half page down", show=False),
        Key("first", "home,g", "first", "First", show=False),
        Key("last", "end,G", "last", "Last", show=False),
        Key("select", "space", "toggle_select", "Select"),
        Key("range", "v", "visual", "Range"),
        Key("select-all", "ctrl+a", "select_all", "Select all", show=False),
        Key("clear-selection", "escape", "clear_selection", "Clear selection", show=False),
        Key("next-flagged", "n", "next_flagged(1)", "Next flag"),
        Key("previous-flagged", "N", "next_flagged(-1)", "Prev flagged", show=False),
        Key("sort", "s", "cycle_sort", "Sort", show=False),
        Key("reverse-sort", "S", "reverse_sort", "Reverse sort", show=False),
    )),
    Context("grid", "Browse view · image grid", "browser", "ImageGrid", (
        Key("left", "left,h", "cursor_left", "Left", show=False),
        Key("right", "right,l", "cursor_right", "Right", show=False),
        Key("open", "enter", "open", "Edit tags", show=False),
    ), shares=("images",)),
    Context("filter", "Browse view · filter box", "browser", "FilterInput", (
        Key("close", "escape", "close", "Close filter", show=False),
    )),
    Context("tag-list", "Browse view · tag editor", "browser", "TagList", (
        Key("delete", "d,delete", "delete_tag", "Delete tag"),
        Key("move-up", "K,shift+up", "move(-1)", "Move up"),
        Key("move-down", "J,shift+down", "move(1)", "Move down"),
        Key("to-front", "t", "to_front", "To front"),
        Key("add", "a,i", "add", "Add tag"),
        Key("up", "k", "cursor_up", "Up", show=False),
        Key("down", "j", "cursor_down", "Down", show=False),
    )),
    Context("tag-input", "Browse view · tag input", "browser", "TagInput", (
        Key("next-suggestion", "down", "suggest(1)", "Next suggestion", show=False),
        Key("previous-suggestion", "up", "suggest(-1)", "Previous suggestion", show=False),
        Key("complete", "tab", "accept_suggestion", "Complete"),
        Key("leave", "escape", "leave", "Back to tags", show=False),
    )),
    Context("tags", "Tags view", "tags", "TagTable", (
        Key("show-images", "enter", "show_images", "Show images"),
        Key("rename", "r", "rename", "Rename everywhere"),
        Key("delete", "d,delete", "delete", "Delete everywhere"),
        Key("sort", "s", "toggle_sort", "Sort count/name"),
        Key("suggestions", "S", "suggestions", "Suggestions", long="Tag suggestions: consolidations and implications"),
        Key("suspects", "x", "suspects", "Suspects",
            long="Suspect tags: low autotag confidence, contradictions, rare tags"),
        Key("search", "slash", "search", "Search tags"),
    )),
    Context("tag-table", "Tags view · moving in the table", "tags", "TagTable", (
        Key("up", "k", "cursor_up", "Up", show=False),
        Key("down", "j", "cursor_down", "Down", show=False),
        Key("first", "g", "scroll_top", "First", show=False),
        Key("last", "G", "scroll_bottom", "Last", show=False),
    ), palette=False, shares=("tags",)),
    # priority: they work inside the view's text fields too (an Input's own ctrl+e moves to the end of the line,
    # ctrl+x cuts: cancel-autotag gives the key back to the field while no autotag runs)
    Context("bulk", "Bulk view", "bulk", "BulkView", (
        Key("preview", "ctrl+e", "preview", "Preview diff", priority=True),
        Key("apply", "ctrl+s", "apply", "Apply", priority=True),
        Key("autotag", "ctrl+g", "autotag", "Autotag", priority=True),
        Key("caption", "ctrl+k", "caption", "Caption", long="Caption with a local BLIP, Florence-2 or VLM model"),
        Key("cancel-autotag", "ctrl+x", "cancel_autotag", "Cancel autotag", show=False, priority=True,
            long="Cancel the autotag or caption run"),
    )),
    Context("health", "Health view", "health", "HealthView", (
        Key("show-in-browser", "o", "show_in_browser", "Show in browser"),
        Key("keep", "K", "keep", "Keep, trash others", long="Keep the chosen image of the highlighted cluster, "
            "move the others to the trash"),
        Key("restore-trash", "R", "restore_trash", "Restore trash"),
    )),
    Context("health-tree", "Health view · findings", "health", "HealthTree", (
        Key("open", "enter", "open", "Open", show=False),
        Key("up", "k", "cursor_up", "Up", show=False),
        Key("down", "j", "cursor_down", "Down", show=False),
    ), palette=False),
    Context("cluster", "Health view · duplicate cluster", "health", "ClusterPane", (
        Key("previous", "left,h", "move(-1)", "Previous image", show=False),
        Key("next", "right,l", "move(1)", "Next image", show=False),
        Key("keep", "K", "keep", "Keep this, trash others"),
        Key("back", "escape", "back", "Back to list", show=False),
    )),
    Context("confirm", "Dialogs · confirm", None, "ConfirmScreen", (
        Key("yes", "y", "answer(True)", "Yes"),
        Key("no", "n,escape", "answer(False)", "No"),
    ), palette=False),
    Context("prompt", "Dialogs · prompt", None, "PromptScreen", (
        Key("cancel", "escape", "cancel", "Cancel"),
    ), palette=False),
    Context("help", "Dialogs · help", None, "HelpScreen", (
        Key("close", "escape,q,question_mark", "close", "Close"),
    ), palette=False),
    Context("suggestions", "Dialogs · tag suggestions", None, "SuggestionsScreen", (
        Key("apply", "ctrl+s", "apply", "Apply ticked"),
        Key("toggle-all", "a", "toggle_all", "Tick all/none"),
        Key("close", "escape", "close", "Close"),
    ), palette=False),
    Context("caption", "Dialogs · caption", None, "CaptionScreen", (
        Key("cancel", "escape", "cancel", "Cancel"),
        Key("run", "ctrl+s", "run", "Run captioning"),
    ), palette=False),
    Context("suspects", "Dialogs · suspect tags", None, "SuspectsScreen", (
        Key("apply", "ctrl+s", "apply", "Remove ticked"),
        Key("toggle-all", "a", "toggle_all", "Tick all/none"),
        Key("close", "escape", "close", "Close"),
    ), palette=False),
    Context("autotag", "Dialogs · autotag", None, "AutotagScreen", (
        Key("cancel", "escape", "cancel", "Cancel"),
        Key("run", "ctrl+s", "run", "Run autotag"),
    ), palette=False),
)

_CONTEXTS: dict[str, Context] = {c.id: c for c in _BUILTIN}


def register_context(context: Context) -> None:
    """Add (or replace) a context: a view from another package declares its keys here before the app starts."""
    _CONTEXTS[context.id] = context


def contexts() -> list[Context]:
    """Every context, the app's first."""
    return list(_CONTEXTS.values())


def context(context_id: str) -> Context:
    return _CONTEXTS[context_id]


def all_keys() -> dict[str, tuple[Context, Key]]:
    """Every binding by id."""
    return {c.binding_id(k): (c, k) for c in _CONTEXTS.values() for k in c.keys}


def bindings(*holds: str | Context) -> list[BindingType]:
    """The Textual ``BINDINGS`` of a widget that holds these contexts' keys (by id, or a ``Context`` that a
    package registers itself), each binding with its id."""
    from textual.binding import Binding

    out: list[BindingType] = []
    for held in holds:
        ctx = _CONTEXTS[held] if isinstance(held, str) else held
        for key in ctx.keys:
            out.append(Binding(key.keys, key.action, key.description, show=key.show, priority=key.priority,
                               id=ctx.binding_id(key)))
    return out
