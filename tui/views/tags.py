"""Tags view: every tag with its count; pick one to filter the images by it; rename or delete it everywhere;
review the dataset's tag suggestions (S) and suspect tags (x) and apply the ones chosen."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.message import Message
from textual.widgets import DataTable, Input

from curator.textsafe import printable, safe_text
from tui.bindings import bindings
from tui.messages import CaptionsWritten, ShowImages
from tui.model import PlanParams, error_message
from tui.views.base import KilnView
from tui.widgets.dialogs import ConfirmScreen, PromptScreen

if TYPE_CHECKING:
    from curator.tags.journal import CaptionChange
    from curator.tags.suggest import Suggestion
    from curator.tags.suspects import Suspect


def quote_tag(tag: str) -> str:
    """``tag:"…"`` for the query language (quotes and backslashes escaped)."""
    return 'tag:"' + tag.replace("\\", "\\\\").replace('"', '\\"') + '"'


class TagTable(DataTable[Text]):
    """Every tag with its count; vim keys. Its keys on the highlighted tag (show its images, rename, delete…)
    are the view's to carry out: the table asks with ``Command``."""

    BINDINGS = bindings("tags", "tag-table")

    class Command(Message):
        def __init__(self, action: str) -> None:
            super().__init__()
            self.action = action

    def action_show_images(self) -> None:
        self.post_message(self.Command("show_images"))

    def action_rename(self) -> None:
        self.post_message(self.Command("rename"))

    def action_delete(self) -> None:
        self.post_message(self.Command("delete"))

    def action_toggle_sort(self) -> None:
        self.post_message(self.Command("toggle_sort"))

    def action_search(self) -> None:
        self.post_message(self.Command("search"))

    def action_suggestions(self) -> None:
        self.post_message(self.Command("suggestions"))

    def action_suspects(self) -> None:
        self.post_message(self.Command("suspects"))


class TagsView(KilnView):
    VIEW_ID = "tags"
    TITLE = "Tags"

    DEFAULT_CSS = """
    TagsView #tag-search { height: 1; border: none; padding: 0 1; background: $boost; }
    TagsView TagTable { height: 1fr; }
    """

    def compose(self) -> ComposeResult:
        yield Input(placeholder="narrow tags… (type, then ↓ to the list)", id="tag-search", compact=True)
        table = TagTable(id="tag-table", cursor_type="row", zebra_stripes=True)
        table.add_column("count", key="count", width=7)
        table.add_column("tag", key="tag")
        yield table

    sort_by_count = True
    _tags: list[tuple[str, int]] = []

    def dataset_loaded(self) -> None:
        self._reload()

    def captions_changed(self) -> None:
        self._reload()

    def activated(self) -> None:
        self.query_one(TagTable).focus()

    def _reload(self) -> None:
        vocab = self.model.vocabulary()
        if self.sort_by_count:
            self._tags = sorted(vocab.items(), key=lambda kv: (-kv[1], kv[0].lower()))
        else:
            self._tags = sorted(vocab.items(), key=lambda kv: kv[0].lower())
        self._fill()

    def _fill(self) -> None:
        table = self.query_one(TagTable)
        needle = self.query_one("#tag-search", Input).value.strip().lower().replace("_", " ")
        keep = self.current_tag()
        table.clear()
        for tag, count in self._tags:
            if needle and needle not in tag.lower().replace("_", " "):
                continue
            table.add_row(Text(str(count), justify="right"), safe_text(tag), key=tag)
        if keep is not None and keep in table.rows:
            table.move_cursor(row=table.get_row_index(keep))

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._fill()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.query_one(TagTable).focus()

    def current_tag(self) -> str | None:
        table = self.query_one(TagTable)
        if not table.row_count:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:  # noqa: BLE001 - empty table
            return None
        return key.value

    def on_tag_table_command(self, event: TagTable.Command) -> None:
        event.stop()
        commands: dict[str, Callable[[], object]] = {
            "show_images": self.show_images, "rename": self.rename, "delete": self.delete,
            "toggle_sort": self.toggle_sort, "suggestions": self.suggestions, "suspects": self.suspects,
            "search": self.query_one("#tag-search", Input).focus,
        }  # fmt: skip
        commands[event.action]()

    def toggle_sort(self) -> None:
        self.sort_by_count = not self.sort_by_count
        self._reload()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.show_images()

    def show_images(self) -> None:
        tag = self.current_tag()
        if tag is not None:
            self.post_message(ShowImages(quote_tag(tag)))

    def rename(self) -> None:
        tag = self.current_tag()
        if tag is None:
            return

        def done(new: str | None) -> None:
            if new and new.strip() and new.strip() != tag:
                self._plan_and_confirm("rename", {"old": tag, "new": new.strip()},
                                       f"rename tag '{printable(tag)}' to '{printable(new.strip())}'")

        self.app.push_screen(PromptScreen(f"Rename tag '{printable(tag)}' in every caption to:", tag), done)

    @work(thread=True, exclusive=True, group="tags-plan")
    def suggestions(self) -> None:
        """Find the dataset's tag suggestions, let the user tick some, then preview and apply them."""
        model = self.model
        try:
            found = model.suggestions(model.rows)
        except Exception as exc:  # noqa: BLE001
            self.kiln.ui(self.app.notify, printable(f"Suggestions failed: {exc}"), severity="error")
            return
        self.kiln.ui(self._review, found)

    def _review(self, found: list[Suggestion]) -> None:
        from tui.widgets.suggestions import SuggestionsScreen

        def chosen(picked: list[Suggestion] | None) -> None:
            if picked:
                names = ", ".join(s.id for s in picked[:3]) + (f" +{len(picked) - 3}" if len(picked) > 3 else "")
                self._plan_and_confirm("suggest", {"suggestions": picked}, f"apply suggestions: {printable(names)}")

        self.app.push_screen(SuggestionsScreen(found), chosen)

    @work(thread=True, exclusive=True, group="tags-plan")
    def suspects(self) -> None:
        """Find the suspect tags, let the user tick some, then preview and remove them where suspected."""
        model = self.model
        try:
            found = model.suspects(model.rows)
        except Exception as exc:  # noqa: BLE001
            self.kiln.ui(self.app.notify, printable(f"Suspects failed: {exc}"), severity="error")
            return
        self.kiln.ui(self._review_suspects, found)

    def _review_suspects(self, found: list[Suspect]) -> None:
        from tui.widgets.suspects import SuspectsScreen

        def chosen(picked: list[Suspect] | None) -> None:
            if picked:
                names = ", ".join(s.tag for s in picked[:3]) + (f" +{len(picked) - 3}" if len(picked) > 3 else "")
                self._plan_and_confirm("suspects", {"suspects": picked}, f"remove suspect tags: {printable(names)}")

        self.app.push_screen(SuspectsScreen(found), chosen)

    def delete(self) -> None:
        tag = self.current_tag()
        if tag is not None:
            self._plan_and_confirm("delete", {"tags": [tag]}, f"delete tag '{printable(tag)}'")

    @work(thread=True, exclusive=True, group="tags-plan")
    def _plan_and_confirm(self, op: str, params: PlanParams, description: str) -> None:
        model = self.model
        try:
            changes = model.plan(op, model.rows, params)
        except Exception as exc:  # noqa: BLE001 - told as error_message puts it
            self.kiln.ui(self.app.notify, error_message(exc, description), severity="error", markup=False)
            return
        if not changes:
            self.kiln.ui(self.app.notify, "No caption would change.", timeout=2)
            return
        diff = model.diff_text(changes)
        self.kiln.ui(self._confirm, op, changes, description, diff)

    def _confirm(self, op: str, changes: list[CaptionChange], description: str, diff: Text) -> None:
        body = Text(f"{len(changes)} caption file(s) will change (u undoes):\n\n")
        body.append_text(diff)

        def answer(ok: bool | None) -> None:
            if ok:
                self._apply(op, changes, description)

        self.app.push_screen(ConfirmScreen(description.capitalize() + "?", body, "Apply"), answer)

    @work(thread=True, exclusive=True, group="tags-apply")
    def _apply(self, op: str, changes: list[CaptionChange], description: str) -> None:
        try:
            result = self.model.apply(changes, op, description)
        except Exception as exc:  # noqa: BLE001
            self.kiln.ui(self.app.notify, printable(f"{description} failed: {exc}"), severity="error")
            return
        self.post_message(CaptionsWritten(result, description.capitalize()))
