"""The focused image's tags: in order; add with completion (dataset vocabulary with counts), delete,
reorder, move to front. The editor only proposes the new tag list; the owner writes it via the journal."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from curator.textsafe import printable, safe_text
from tui.bindings import bindings

MAX_SUGGESTIONS = 8


def complete(
    prefix: str,
    vocabulary: Counter[str],
    exclude: set[str],
    limit: int = MAX_SUGGESTIONS,
    known: tuple[str, ...] = (),
) -> list[str]:
    """Tags containing ``prefix``, minus ``exclude``: the dataset's (prefix matches first, then by count), then
    ``known`` ones it does not use yet (the shipped Danbooru table), prefix matches first."""
    needle = prefix.strip().lower().replace("_", " ")
    if not needle:
        return []
    starts, contains = [], []
    for tag, count in vocabulary.items():
        if tag in exclude:
            continue
        norm = tag.lower().replace("_", " ")
        if norm.startswith(needle):
            starts.append((-count, tag))
        elif needle in norm:
            contains.append((-count, tag))
    found = [t for _, t in sorted(starts)[:limit] + sorted(contains)[: max(0, limit - len(starts))]][:limit]
    if len(found) < limit and known:
        have = set(found) | exclude | set(vocabulary)
        extra = [t for t in known if t not in have and needle in t]
        extra.sort(key=lambda t: (not t.startswith(needle), t))
        found += extra[: limit - len(found)]
    return found


class TagList(OptionList):
    """The tags of one caption, in file order."""

    BINDINGS = bindings("tag-list")

    class AddRequested(Message):
        """``a``: the user wants to type a new tag (the editor focuses its input)."""

    class Changed(Message):
        """The user asked for a new tag order/content."""

        def __init__(self, tags: list[str], description: str) -> None:
            super().__init__()
            self.tags = tags
            self.description = description

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tags: list[str] = []
        self.keep_tokens = 0  # the subset's kohya keep_tokens: the leading tags marked "keep"

    def set_tags(self, tags: list[str], keep: int | None = None) -> None:
        self.tags = list(tags)
        highlighted = self.highlighted if keep is None else keep
        options = []
        for i, tag in enumerate(self.tags):
            label = safe_text(tag)
            if i < self.keep_tokens:  # kohya keeps these in place when it shuffles the caption
                label.stylize("bold")
                label.append("  keep", style="dim")
            options.append(Option(label))
        self.set_options(options)  # one update of the list's lines (clear + add would lay it out twice)
        if self.tags:
            self.highlighted = min(highlighted or 0, len(self.tags) - 1)

    def _propose(self, tags: list[str], description: str, highlight: int | None) -> None:
        self.post_message(self.Changed(tags, description))
        self.set_tags(tags, keep=highlight)

    def action_delete_tag(self) -> None:
        i = self.highlighted
        if i is None or not self.tags:
            return
        tags = self.tags[:i] + self.tags[i + 1 :]
        self._propose(tags, f"delete tag '{printable(self.tags[i])}'", min(i, len(tags) - 1))

    def action_move(self, delta: int) -> None:
        i = self.highlighted
        if i is None:
            return
        j = i + delta
        if not 0 <= j < len(self.tags):
            return
        tags = list(self.tags)
        tags[i], tags[j] = tags[j], tags[i]
        self._propose(tags, f"move tag '{printable(tags[j])}'", j)

    def action_to_front(self) -> None:
        i = self.highlighted
        if not i:
            return
        tags = [self.tags[i], *self.tags[:i], *self.tags[i + 1 :]]
        self._propose(tags, f"move tag '{printable(self.tags[i])}' to front", 0)

    def action_add(self) -> None:
        self.post_message(self.AddRequested())


class TagInput(Input):
    """Type a tag; suggestions from the dataset vocabulary appear in ``dropdown`` (tab/↓ to pick, enter to
    add)."""

    BINDINGS = bindings("tag-input")

    class Add(Message):
        def __init__(self, tag: str) -> None:
            super().__init__()
            self.tag = tag

    class Left(Message):
        """``esc``: back to the tag list."""

    def __init__(self, dropdown: OptionList, *, id: str | None = None) -> None:
        super().__init__(placeholder="add tag… (tab completes)", id=id)
        self.dropdown = dropdown
        self.vocabulary_source: Callable[[], Counter[str]] = Counter  # asked only when the user types
        self.exclude: set[str] = set()
        self.suggestions: list[str] = []
        self.known: tuple[str, ...] = ()  # the shipped Danbooru table's tags (curator.tags.consolidate.known_tags)

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        if not self.known:
            from curator.tags.consolidate import known_tags

            self.known = known_tags()
        vocabulary = self.vocabulary_source()
        matches = complete(event.value, vocabulary, self.exclude, known=self.known)
        dropdown = self.dropdown
        dropdown.clear_options()
        for tag in matches:
            label = safe_text(tag)
            count = vocabulary.get(tag, 0)
            label.append(f"  {count}" if count else "  table", style="dim")
            dropdown.add_option(Option(label, id=None))
        self.suggestions = matches
        dropdown.display = bool(matches)
        dropdown.highlighted = None

    def action_suggest(self, delta: int) -> None:
        dropdown = self.dropdown
        if not dropdown.display or not dropdown.option_count:
            return
        current = dropdown.highlighted
        dropdown.highlighted = 0 if current is None else max(0, min(dropdown.option_count - 1, current + delta))

    def _pick_suggestion(self, default_first: bool) -> str | None:
        dropdown = self.dropdown
        values = self.suggestions
        if not dropdown.display or not values:
            return None
        idx = dropdown.highlighted
        if idx is None:
            idx = 0 if default_first else None
        return values[idx] if idx is not None else None

    def action_accept_suggestion(self) -> None:
        choice = self._pick_suggestion(default_first=True)
        if choice is not None:
            self.value = choice
            self.cursor_position = len(choice)

    async def action_submit(self) -> None:
        choice = self._pick_suggestion(default_first=False)
        tag = (choice or self.value).strip()
        if tag:
            self.post_message(self.Add(tag))
        self.value = ""

    def action_leave(self) -> None:
        self.value = ""
        self.post_message(self.Left())

    def on_blur(self, event: events.Blur) -> None:
        self.dropdown.display = False


class TagEditor(Vertical):
    """Tags of the focused image plus the add box."""

    DEFAULT_CSS = """
    TagEditor { height: 1fr; min-height: 5; }
    TagEditor > #tag-title { height: 1; width: 1fr; color: $text-muted; }
    TagEditor > TagList { height: 1fr; border: none; padding: 0; background: $surface; }
    TagEditor > TagInput { height: 1; border: none; padding: 0 1; background: $boost; }
    TagEditor > TagInput:focus { border: none; background: $primary 20%; }
    TagEditor > #tag-suggestions {
        display: none; height: auto; max-height: 8; border: none; padding: 0; background: $panel;
    }
    """

    class Edit(Message):
        """Write these tags for the current image (through the journal)."""

        def __init__(self, tags: list[str], description: str) -> None:
            super().__init__()
            self.tags = tags
            self.description = description

    def compose(self) -> ComposeResult:
        suggestions = OptionList(id="tag-suggestions")
        yield Label("tags", id="tag-title")
        yield TagList(id="tag-list")
        yield TagInput(suggestions, id="tag-input")
        yield suggestions

    def on_tag_list_add_requested(self, event: TagList.AddRequested) -> None:
        event.stop()
        self.query_one(TagInput).focus()

    def on_tag_input_left(self, event: TagInput.Left) -> None:
        event.stop()
        self.query_one(TagList).focus()

    def show(self, tags: list[str], vocabulary: Callable[[], Counter[str]], title: Text | None = None,
             keep_highlight: bool = False, keep_tokens: int = 0) -> None:
        """Show ``tags``; ``vocabulary`` gives the dataset's tag counts for completion, called only when the
        user types (counting a large dataset's captions is not done on every cursor move)."""
        lst = self.query_one(TagList)
        lst.keep_tokens = keep_tokens
        lst.set_tags(tags, keep=lst.highlighted if keep_highlight else 0)
        tag_input = self.query_one(TagInput)
        tag_input.vocabulary_source = vocabulary
        tag_input.exclude = set(tags)
        label = Text(f"tags ({len(tags)})  ", style="bold")
        if title is not None:
            label.append_text(title)
        self.query_one("#tag-title", Label).update(label, layout=False)  # one line, full width: no re-layout

    def on_tag_list_changed(self, event: TagList.Changed) -> None:
        event.stop()
        self.post_message(self.Edit(event.tags, event.description))

    def on_tag_input_add(self, event: TagInput.Add) -> None:
        event.stop()
        lst = self.query_one(TagList)
        if event.tag in lst.tags:
            self.notify(printable(f"'{event.tag}' is already there"), markup=False, timeout=2)
            return
        tags = [*lst.tags, event.tag]
        self.post_message(self.Edit(tags, f"add tag '{printable(event.tag)}'"))
        lst.set_tags(tags, keep=len(tags) - 1)
        self.query_one(TagInput).exclude = set(tags)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option_list.id == "tag-suggestions":
            event.stop()
            values = self.query_one(TagInput).suggestions
            if 0 <= event.option_index < len(values):
                tag_input = self.query_one(TagInput)
                tag_input.value = ""
                self.on_tag_input_add(TagInput.Add(values[event.option_index]))
                tag_input.focus()
