"""Bulk panel: every tag-engine operation on the selection, the filter or everything, with the diff shown
before applying; undo/redo with the journal's history list; autotagging and captioning in the background."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import (
    Button,
    Checkbox,
    Input,
    Label,
    OptionList,
    ProgressBar,
    RadioButton,
    RadioSet,
    Static,
)
from textual.widgets.option_list import Option

from curator.textsafe import printable, safe_text
from tui.bindings import bindings
from tui.messages import CaptionsWritten
from tui.model import error_message
from tui.rows import Row
from tui.views.base import KilnView
from tui.widgets.dialogs import ConfirmScreen

if TYPE_CHECKING:
    from curator.autotag.config import AutotagConfig
    from curator.caption.config import CaptionConfig
    from curator.caption.runner import CaptionPlan
    from curator.tags.journal import CaptionChange, JournalEntry
    from curator.tags.ops import AbsorbCandidate


@dataclass(frozen=True)
class OpSpec:
    """An operation in the bulk panel: its id (``DatasetModel.plan``), label and which inputs it uses."""

    op: str
    label: str
    fields: tuple[str, ...]
    help: str


OPERATIONS: tuple[OpSpec, ...] = (
    OpSpec("add", "Add tags", ("tags", "front"), "Add tags (comma list) where missing; 'at front' puts them first."),
    OpSpec("remove", "Remove tags", ("tags",), "Remove tags; globs allowed (e.g. *_background)."),
    OpSpec("replace", "Replace / rename", ("old", "new", "regex"),
           "Replace a tag everywhere (empty 'new' removes it; regex: re.sub on each tag)."),
    OpSpec("trigger", "Trigger word first", ("word",),
           "Put the trigger word first (empty: each folder's class tokens); train with keep_tokens."),
    OpSpec("sort", "Sort tags", ("freq", "keep"), "Sort tags alphabetically or by frequency, keeping the first N."),
    OpSpec("dedupe", "Remove duplicate tags", (), "Drop repeated tags inside each caption."),
    OpSpec("normalize", "Normalise", ("spaces", "lower", "escape", "unescape"),
           "Underscores→spaces, lower case, escape/unescape parentheses."),
    OpSpec("consolidate", "Consolidate synonyms", ("suffix",),
           "Merge aliases into one tag and drop tags a more specific one implies (very long hair drops long "
           "hair); suffix: also kohya's last-word rule (white shirt drops shirt)."),
    OpSpec("absorb", "Absorb into trigger", ("tags",),
           "Remove constant traits the trigger should absorb (leave tags empty and preview for suggestions)."),
)
FIELD_IDS = ("tags", "front", "old", "new", "regex", "word", "freq", "keep", "spaces", "lower", "escape", "unescape",
             "suffix")


class BulkView(KilnView):
    VIEW_ID = "bulk"
    TITLE = "Bulk"

    BINDINGS = bindings("bulk")

    DEFAULT_CSS = """
    BulkView > Horizontal { height: 1fr; }
    BulkView #bulk-left { width: 40%; min-width: 32; max-width: 56; }
    BulkView #bulk-right { width: 1fr; border-left: tall $panel; }
    BulkView #op-list { height: auto; max-height: 10; border: none; padding: 0; }
    BulkView #op-help { height: auto; color: $text-muted; padding: 0 1; }
    BulkView #params { height: auto; padding: 0 0; }
    BulkView #params Input { height: 1; border: none; padding: 0 1; margin-bottom: 0; background: $boost; }
    BulkView #params Checkbox { height: 1; border: none; padding: 0 1; background: $surface; }
    BulkView #scope { height: auto; width: 1fr; border: none; padding: 0; background: $surface; }
    BulkView .buttons { height: 1; }
    BulkView .buttons Button { margin-right: 2; }
    BulkView #diff-scroll { height: 2fr; }
    BulkView #history-title, BulkView #diff-title { height: auto; text-style: bold; background: $panel; padding: 0 1; }
    BulkView #history { height: 1fr; border: none; padding: 0; }
    BulkView #autotag-row { height: 1; display: none; }
    BulkView #autotag-row ProgressBar { width: 1fr; }
    """

    def compose(self) -> ComposeResult:
        with Horizontal():
            with VerticalScroll(id="bulk-left"):
                yield OptionList(*[Option(Text(s.label), id=s.op) for s in OPERATIONS], id="op-list")
                yield Static(id="op-help")
                with Vertical(id="params"):
                    yield Input(placeholder="tags, comma separated", id="f-tags", compact=True)
                    yield Checkbox("at front", id="f-front")
                    yield Input(placeholder="old tag (or regex)", id="f-old", compact=True)
                    yield Input(placeholder="new tag(s); empty removes", id="f-new", compact=True)
                    yield Checkbox("regex", id="f-regex")
                    yield Input(placeholder="trigger word (empty: folder class tokens)", id="f-word", compact=True)
                    yield Checkbox("by frequency", id="f-freq")
                    yield Input(placeholder="keep first N tags in place", id="f-keep", type="integer", compact=True)
                    yield Checkbox("underscores → spaces", id="f-spaces")
                    yield Checkbox("lower case", id="f-lower")
                    yield Checkbox("escape ( )", id="f-escape")
                    yield Checkbox("unescape \\( \\)", id="f-unescape")
                    yield Checkbox("suffix heuristic", id="f-suffix")
                yield Label("scope", classes="dim")
                with RadioSet(id="scope"):
                    yield RadioButton("selection", id="scope-selection", value=True)
                    yield RadioButton("filter", id="scope-filter")
                    yield RadioButton("all", id="scope-all")
                with Horizontal(classes="buttons"):
                    yield Button("Preview", id="preview-btn", compact=True)
                    yield Button("Apply", id="apply-btn", variant="warning", compact=True)
                with Horizontal(id="autotag-row"):
                    yield ProgressBar(id="autotag-progress", show_eta=False)
            with Vertical(id="bulk-right"):
                yield Static(id="diff-title")
                with VerticalScroll(id="diff-scroll"):
                    yield Static(id="diff")
                yield Static(id="history-title")
                yield OptionList(id="history")

    planned: list[CaptionChange] | None = None

    def on_mount(self) -> None:
        self._cancel = threading.Event()
        label = self.kiln.key_label
        self.query_one("#diff-title", Static).update(Text(f"preview ({label('bulk.preview')})"))
        self.query_one("#history-title", Static).update(
            Text(f"history ({label('app.undo')} undo · {label('app.redo')} redo)"))
        self.query_one("#op-list", OptionList).highlighted = 0
        self._show_fields(OPERATIONS[0])
        self._invalidate()

    # ----- hooks ------------------------------------------------------------------------------
    def activated(self) -> None:
        self.query_one("#op-list", OptionList).focus()
        self._default_scope()
        self.refresh_history()

    def dataset_loaded(self) -> None:
        self._label_scopes()
        self.refresh_history()

    def captions_changed(self) -> None:
        """Captions were written (this view's apply, an undo, an edit elsewhere): a shown diff is out of date."""
        self._invalidate()
        self._label_scopes()
        self.refresh_history()

    def filter_changed(self, text: str) -> None:
        self._label_scopes()
        if self._scope() == "filter":
            self._invalidate()

    def selection_changed(self, count: int) -> None:
        self._label_scopes()
        if self._scope() == "selection":
            self._invalidate()

    def _default_scope(self) -> None:
        state = self.model.state
        target = "scope-selection" if state.selected else ("scope-filter" if state.filter_text else "scope-all")
        self.query_one(f"#{target}", RadioButton).value = True
        self._label_scopes()

    def _label_scopes(self) -> None:
        model = self.model
        self.query_one("#scope-selection", RadioButton).label = f"selection ({len(model.state.selected)})"
        self.query_one("#scope-filter", RadioButton).label = f"filter ({len(model.state.matching(model.rows))})"
        self.query_one("#scope-all", RadioButton).label = f"all ({len(model.rows)})"

    # ----- form -------------------------------------------------------------------------------
    @property
    def spec(self) -> OpSpec:
        idx = self.query_one("#op-list", OptionList).highlighted or 0
        return OPERATIONS[idx]

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_list.id == "op-list":
            event.stop()
            self._show_fields(OPERATIONS[event.option_index])
            self._invalidate()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option_list.id == "op-list":
            event.stop()
            first = next((f for f in self.spec.fields), None)
            if first:
                self.query_one(f"#f-{first}").focus()
            else:
                self.action_preview()

    def _show_fields(self, spec: OpSpec) -> None:
        for fid in FIELD_IDS:
            self.query_one(f"#f-{fid}").display = fid in spec.fields
        self.query_one("#op-help", Static).update(Text(spec.help))

    def on_input_changed(self, event: Input.Changed) -> None:
        self._invalidate()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_preview()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        self._invalidate()

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        self._invalidate()

    def _invalidate(self) -> None:
        """What the preview showed no longer holds (another operation, input, scope, or the captions changed):
        forget it and say how to get a new one."""
        self.planned = None
        self._show_diff(Text(f"{self.kiln.key_label('bulk.preview')} previews the diff of the operation on the "
                             "chosen scope; nothing is written before you apply and confirm.", style="dim"))

    def params(self) -> dict[str, object]:
        spec = self.spec
        p: dict[str, object] = {}
        for fid in spec.fields:
            widget = self.query_one(f"#f-{fid}")
            if isinstance(widget, Input | Checkbox):
                p[fid] = widget.value
        if spec.op == "add":
            p["position"] = "front" if p.pop("front", False) else "end"
        if spec.op == "sort":
            p["by"] = "freq" if p.pop("freq", False) else "alpha"
        return p

    def _scope(self) -> str:
        pressed = self.query_one("#scope", RadioSet).pressed_button
        return (pressed.id or "scope-all").removeprefix("scope-") if pressed else "all"

    def scope_rows(self) -> tuple[str, list[Row]]:
        """The scope chosen and its rows: the selection, the images the filter shows, or every image."""
        scope = self._scope()
        if scope == "selection":
            return scope, self.model.selected_rows()
        if scope == "filter":
            return scope, self.model.matching_rows()
        return scope, list(self.model.rows)

    # ----- preview and apply ------------------------------------------------------------------
    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "preview-btn":
            self.action_preview()
        elif event.button.id == "apply-btn":
            self.action_apply()

    def action_preview(self) -> None:
        self._label_scopes()
        scope, rows = self.scope_rows()
        if not rows:
            self._show_diff(Text(f"The {scope} scope is empty: select images (space, v) in the browser, "
                                 "filter them (/), or choose 'all'.", style="yellow"))
            return
        self._plan(self.spec, self.params(), scope, rows, confirm=False)

    def action_apply(self) -> None:
        scope, rows = self.scope_rows()
        if not rows:
            self.action_preview()
            return
        self._plan(self.spec, self.params(), scope, rows, confirm=True)

    @work(thread=True, exclusive=True, group="bulk-plan")
    def _plan(self, spec: OpSpec, params: dict[str, object], scope: str, rows: list[Row], confirm: bool) -> None:
        model = self.model
        try:
            if spec.op == "absorb" and not str(params.get("tags", "")).strip():
                self.kiln.ui(self._show_diff, self._absorb_text(model.absorb_suggestions(rows)))
                return
            changes = model.plan(spec.op, rows, params)
        except Exception as exc:  # noqa: BLE001 - every failure is told in the preview (error_message says how)
            self.kiln.ui(self._show_diff, Text(error_message(exc, "preview"), style="red"))
            return
        description = f"{model.describe(spec.op, params)} on {scope} ({len(rows)} images)"
        summary = Text(f"{len(changes)} of {len(rows)} caption(s) would change — {description}\n\n", style="bold")
        summary.append_text(model.diff_text(changes))
        self.kiln.ui(self._planned, changes, spec.op, description, summary, confirm)

    @staticmethod
    def _absorb_text(candidates: list[AbsorbCandidate]) -> Text:
        text = Text("Constant traits per folder (put the ones the trigger should absorb in 'tags'):\n\n",
                    style="bold")
        for c in candidates:
            text.append_text(safe_text(c.folder, style="dim"))
            text.append("  ")
            text.append_text(safe_text(c.tag, style="bold"))
            text.append(f"  {c.count}/{c.total} ({c.share:.0%})\n")
        if not candidates:
            text.append("none found (no tag is in ≥80% of a folder's captions)", style="dim")
        return text

    def _planned(self, changes: list[CaptionChange], op: str, description: str, summary: Text, confirm: bool) -> None:
        self.planned = changes
        self._show_diff(summary)
        if not confirm:
            return
        if not changes:
            self.notify("Nothing would change.", timeout=2)
            return
        body = Text(f"Write {len(changes)} caption file(s)? Every change is journaled: u undoes it.\n\n")
        body.append_text(summary)

        def answer(ok: bool | None) -> None:
            if ok:
                self._apply(changes, op, description)

        self.app.push_screen(ConfirmScreen(f"Apply: {description}?", body, "Apply"), answer)

    def _show_diff(self, text: Text) -> None:
        self.query_one("#diff", Static).update(text)
        self.query_one("#diff-scroll", VerticalScroll).scroll_home(animate=False)

    @work(thread=True, exclusive=True, group="bulk-apply")
    def _apply(self, changes: list[CaptionChange], op: str, description: str) -> None:
        try:
            result = self.model.apply(changes, op, description)
        except Exception as exc:  # noqa: BLE001
            self.kiln.ui(self.app.notify, printable(f"Apply failed: {exc}"), severity="error")
            return
        self.post_message(CaptionsWritten(result, description.capitalize()))

    # ----- history ----------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="history")
    def refresh_history(self) -> None:
        if not self.model.is_open:
            return
        try:
            entries = self.model.history()
        except Exception as exc:  # noqa: BLE001
            entries = []
            self.kiln.ui(self.app.notify, printable(f"history: {exc}"), severity="warning")
        self.kiln.ui(self._fill_history, entries)

    def _fill_history(self, entries: list[JournalEntry]) -> None:
        history = self.query_one("#history", OptionList)
        history.clear_options()
        for e in entries:
            state = getattr(e, "state", "")
            label = Text(f"#{e.id} ", style="dim")
            label.append(f"[{state}] ", style="yellow" if state != "applied" else "green")
            label.append_text(safe_text(e.description or e.op))
            label.append(f"  {e.n_changes} file(s)", style="dim")
            history.add_option(Option(label))
        if not entries:
            history.add_option(Option(Text("no changes yet", style="dim"), disabled=True))

    # ----- autotag ----------------------------------------------------------------------------
    def action_autotag(self) -> None:
        """Ask for the tagger settings (autotag dialog), then tag the scope in the background."""
        from tui.autotag import initial_settings
        from tui.widgets.autotag_dialog import AutotagScreen

        scope, rows = self.scope_rows()
        if not rows:
            self.notify("Nothing in scope to autotag.", severity="warning")
            return

        def start(config: AutotagConfig | None) -> None:  # None: cancelled
            if config is None:
                return
            self._remember_autotag(config)
            self._cancel.clear()
            self.query_one("#autotag-row").display = True
            self.query_one("#autotag-progress", ProgressBar).update(total=len(rows), progress=0)
            self._run_autotag(config, rows, scope)

        label = f"{scope} ({len(rows)} image{'s' if len(rows) != 1 else ''})"
        self.app.push_screen(AutotagScreen(initial_settings(self.kiln.prefs), label), start)

    def _remember_autotag(self, config: AutotagConfig) -> None:
        from tui.autotag import remember

        remember(self.kiln.prefs, config)
        self.kiln.save_prefs()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """ctrl+x cancels an autotag only while one runs; otherwise the key is the text field's (cut)."""
        if action == "cancel_autotag":
            return self.query_one("#autotag-row").display
        return True

    def action_cancel_autotag(self) -> None:
        self._cancel.set()
        self.notify("Cancelling autotag…", timeout=2)

    @work(thread=True, exclusive=True, group="autotag")
    def _run_autotag(self, config: AutotagConfig, rows: list[Row], scope: str) -> None:
        from tui.autotag import run_autotag

        def progress(done: int, total: int) -> None:
            self.kiln.ui(self.query_one("#autotag-progress", ProgressBar).update,
                                      total=total, progress=done)

        try:
            changes = run_autotag(config, rows, progress, self._cancel)
        except Exception as exc:  # noqa: BLE001
            self.kiln.ui(self.app.notify, printable(f"Autotag failed: {exc}"), severity="error")
            changes = None
        self.kiln.ui(self._autotag_done, changes, scope, len(rows))

    def _autotag_done(self, changes: list[CaptionChange] | None, scope: str, n: int) -> None:
        self.query_one("#autotag-row").display = False
        if changes is None:
            return
        if self._cancel.is_set():
            self.notify("Autotag cancelled; nothing written.", timeout=3)
            return
        description = f"autotag on {scope} ({n} images)"
        summary = Text(f"{len(changes)} caption(s) would change — {description}\n\n", style="bold")
        summary.append_text(self.model.diff_text(changes))
        self._planned(changes, "autotag", description, summary, confirm=True)

    # ----- caption ----------------------------------------------------------------------------
    def action_caption(self) -> None:
        """Ask for the captioning model and settings (caption dialog), then caption the scope in the background."""
        from tui.captioning import initial_settings
        from tui.widgets.caption_dialog import CaptionScreen

        scope, rows = self.scope_rows()
        if not rows:
            self.notify("Nothing in scope to caption.", severity="warning")
            return

        def start(config: CaptionConfig | None) -> None:  # None: cancelled
            if config is None:
                return
            from tui.captioning import remember

            remember(self.kiln.prefs, config)
            self.kiln.save_prefs()
            self._cancel.clear()
            self.query_one("#autotag-row").display = True
            self.query_one("#autotag-progress", ProgressBar).update(total=len(rows), progress=0)
            self._run_caption(config, rows, scope)

        label = f"{scope} ({len(rows)} image{'s' if len(rows) != 1 else ''})"
        self.app.push_screen(CaptionScreen(initial_settings(self.kiln.prefs), label), start)

    @work(thread=True, exclusive=True, group="autotag")
    def _run_caption(self, config: CaptionConfig, rows: list[Row], scope: str) -> None:
        from tui.captioning import run_caption

        def progress(done: int, total: int) -> None:
            self.kiln.ui(self.query_one("#autotag-progress", ProgressBar).update, total=total, progress=done)

        model = self.model
        try:
            plan = run_caption(config, model.caption_items(rows), Path(model.dataset.root), progress, self._cancel)
        except Exception as exc:  # noqa: BLE001 - model errors and friends: show the message
            self.kiln.ui(self.app.notify, printable(f"Caption failed: {exc}"), severity="error")
            self.kiln.ui(self._caption_done, None, config, scope)
            return
        self.kiln.ui(self._caption_done, plan, config, scope)

    def _caption_done(self, plan: CaptionPlan | None, config: CaptionConfig, scope: str) -> None:
        self.query_one("#autotag-row").display = False
        if plan is None:
            return
        report = plan.report
        if report.reason and not plan.changes:
            self.notify(printable(f"Caption: {report.reason}"), severity="warning", timeout=5)
            return
        where = f"{config.extension} files" if config.mode == "write" else f"{config.mode} to the tag captions"
        name = Path(config.model).name or config.model
        description = printable(f"caption with {name} on {scope} ({report.considered} images, {where})")
        summary = Text(f"{len(plan.changes)} caption file(s) would change — {description}", style="bold")
        if report.interrupted:
            done = report.count("captioned") + report.count("unchanged")
            summary.append(f"\nstopped early: {done} of {report.considered} images captioned",
                           style="yellow")
        skipped = report.count("exists")
        if skipped:
            summary.append(f"\n{skipped} image(s) already have their caption file (tick 'replace' to redo them)",
                           style="yellow")
        for outcome in report.outcomes:
            if outcome.status == "bad":
                summary.append("\n")
                summary.append_text(safe_text(f"{outcome.path}: {outcome.error}", style="red"))
        summary.append("\n\n")
        summary.append_text(self.model.diff_text(plan.changes))
        self._planned(plan.changes, "caption", description, summary, confirm=True)
