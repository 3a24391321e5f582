"""The kiln curator: a Textual app over the headless curator. Entry point: :func:`run_curator`.

The app owns the ``DatasetModel`` (the one door to the curator), the view switcher, the status line and the
global actions (help, palette, undo/redo, theme, rescan, autotag). Each view lives in ``tui/views/``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from functools import partial
from pathlib import Path

from rich.text import Text
from textual import events, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import ContentSwitcher, Footer, Static

from curator.textsafe import safe_text
from tui.config import TuiPrefs, load_prefs, save_prefs
from tui.imaging import detect_protocol
from tui.model import DatasetModel, ModelError
from tui.rows import Row
from tui.themes import DEFAULT_THEME, load_themes, resolve_theme_name
from tui.views.base import KilnView
from tui.views.registry import ViewSpec, all_views

CAPTION_POLL_SECONDS = 1.0
PREWARM_IDLE_SECONDS = 1.5  # build a not-yet-shown view in the background after this long without input
SCAN_REFRESH_SECONDS = 0.5  # a cold scan shows newly indexed images at most this often
FREEZE_EVERY_SECONDS = 5.0  # while rows arrive in batches, freeze the long-lived objects at most this often


def _style(spec: str, fallback: str):
    """A Rich style from theme colours; themes may use names Rich does not know (e.g. ANSI themes)."""
    from rich.errors import StyleSyntaxError
    from rich.style import Style

    try:
        return Style.parse(spec)
    except (StyleSyntaxError, ValueError):
        return Style.parse(fallback)


class ScanStopped(Exception):
    """Raised from the scan's progress callback when the app closes mid-scan."""


class ViewBar(Widget):
    """One line: the app name, the dataset and the views (click one, or press its number)."""

    DEFAULT_CSS = """
    ViewBar { height: 1; background: $panel; }
    """

    def __init__(self, specs: list[ViewSpec], dataset_name: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.specs = specs
        self.dataset_name = dataset_name
        self.active = specs[0].view_id if specs else ""
        self._spans: list[tuple[int, int, str]] = []

    def render(self) -> Text:
        theme = self.app.current_theme
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(" kiln ", style=_style(f"bold {theme.background} on {theme.primary}", "bold reverse"))
        text.append(" ")
        self._spans = []
        for spec in self.specs:
            label = f" {spec.key} {spec.title} "
            start = text.cell_len
            if spec.view_id == self.active:
                text.append(label, style=_style(f"bold reverse {theme.accent or theme.primary}", "bold reverse"))
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
                self.app.show_view(view_id)  # type: ignore[attr-defined]
                return


class StatusBar(Static):
    """Counts, selection, filter and background work (scan, autotag)."""

    DEFAULT_CSS = """
    StatusBar { height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    """


class KilnApp(App):
    """The curator app."""

    TITLE = "kiln"
    ENABLE_COMMAND_PALETTE = True
    CSS = """
    #views { height: 1fr; }
    #statusrow { height: 1; }
    """
    BINDINGS: list[BindingType] = [
        Binding("question_mark", "help", "Help"),
        Binding("slash", "filter", "Filter"),
        Binding("u,ctrl+z", "undo", "Undo"),
        Binding("ctrl+r,ctrl+y", "redo", "Redo"),
        Binding("f5", "rescan", "Rescan", show=False),
        Binding("f2", "toggle_training", "Training", show=False),
        Binding("ctrl+t", "cycle_theme", "Theme", show=False),
        Binding("q", "quit", "Quit"),
        Binding("escape", "leave_input", "Leave field", show=False),
        *[Binding(str(n), f"show_view_key('{n}')", "View", show=False) for n in range(1, 10)],
    ]

    def __init__(self, dataset_path: Path, *, image_protocol: str | None = None, theme: str | None = None,
                 prefs: TuiPrefs | None = None, persist_prefs: bool = True) -> None:
        super().__init__()
        self.dataset_path = Path(dataset_path)
        self.model = DatasetModel(self.dataset_path)
        self.model.start_preload()  # open the dataset and read the index while Textual starts
        self.prefs = prefs or load_prefs()
        self.persist_prefs = persist_prefs
        try:
            self.image_protocol = detect_protocol(override=image_protocol or self.prefs.image_protocol)
        except ValueError:  # a bad remembered value must not stop the app; the CLI checks its own flag
            self.image_protocol = "halfblock"
        _register_optional_views()
        self.specs = all_views()
        self.loaded = False
        self._load_started = False
        self.scanning = False
        self.status_note = ""
        self.filter_text = ""
        self._themes = load_themes()
        for t in self._themes.values():
            self.register_theme(t)
        wanted = resolve_theme_name(theme, set(self.available_themes)) or resolve_theme_name(
            self.prefs.theme, set(self.available_themes)
        )
        self.theme = wanted or DEFAULT_THEME
        self._theme_ready = False
        self._mounting: dict[str, object] = {}  # view id -> AwaitMount of a view being mounted
        self._last_input = time.monotonic()
        self._frozen_at = 0.0

    # ----- layout -----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield ViewBar(self.specs, self.dataset_path.name, id="viewbar")
        with ContentSwitcher(initial=self.specs[0].view_id, id="views"):
            yield self._new_view(self.specs[0])  # the others are mounted when first shown (fast start)
        with Horizontal(id="statusrow", classes="status"):
            yield StatusBar(id="status")
        yield Footer(compact=True, show_command_palette=True)

    def on_mount(self) -> None:
        self._theme_ready = True
        self.update_status()
        self.load_dataset()
        self.set_interval(CAPTION_POLL_SECONDS, self.poll_captions)
        self._prewarm_timer = self.set_interval(PREWARM_IDLE_SECONDS / 3, self._prewarm_next_view)

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key | events.MouseDown | events.MouseScrollDown | events.MouseScrollUp):
            self._last_input = time.monotonic()
        await super().on_event(event)

    # ----- messages ---------------------------------------------------------------------------
    def notify(self, message, *, title: str = "", severity="information", timeout: float | None = None,
               markup: bool = True) -> None:
        """Every toast is literal text: messages carry file names, tags and curator errors (data, not markup)."""
        from curator.textsafe import printable

        text = message.plain if isinstance(message, Text) else str(message)
        super().notify(printable(text), title=printable(title), severity=severity, timeout=timeout, markup=False)

    # ----- threads ----------------------------------------------------------------------------
    def ui(self, callback, *args, **kwargs):
        """Run ``callback`` on the UI thread from a worker thread; a no-op once the app is shutting down."""
        from textual.css.query import NoMatches

        if not self.is_running:
            return None
        try:
            return self.call_from_thread(callback, *args, **kwargs)
        except NoMatches:
            return None
        except RuntimeError:
            if not self.is_running:
                return None
            raise

    # ----- views ------------------------------------------------------------------------------
    # Only the first view is composed at start; each other view is mounted the first time it is shown (or
    # asked for), so a start does not pay for widgets nobody has looked at yet.
    def _new_view(self, spec: ViewSpec) -> KilnView:
        view = spec.factory()
        view.id = spec.view_id
        return view

    def views(self) -> list[KilnView]:
        """The views mounted so far (a view not yet shown catches up when it is mounted)."""
        return list(self.query(KilnView))

    def view(self, view_id: str) -> KilnView:
        """The view ``view_id``, mounting it (hidden) when it was never shown; its widgets are composed on the
        next turn of the event loop."""
        from textual.css.query import NoMatches

        try:
            return self.query_one(f"#{view_id}", KilnView)
        except NoMatches:
            spec = next((s for s in self.specs if s.view_id == view_id), None)
            if spec is None:
                raise
            return self._mount_view(spec)

    def _mount_view(self, spec: ViewSpec) -> KilnView:
        view = self._new_view(spec)
        view.display = False  # the switcher shows it when it becomes current
        mounting = self.query_one("#views", ContentSwitcher).mount(view)
        self._mounting[spec.view_id] = mounting

        async def ready() -> None:
            await mounting
            self._mounting.pop(spec.view_id, None)
            if self.model.rows:
                self._call_hook(view, "dataset_loaded")
            if self.query_one("#views", ContentSwitcher).current == spec.view_id:
                self._call_hook(view, "activated")

        self.call_later(ready)
        return view

    def _prewarm_next_view(self) -> None:
        """While the user is idle (and the dataset loaded), build the next view not shown yet, one per tick, so
        that opening it later costs a switch (~50 ms), not a build (~150–250 ms on 10,000 images)."""
        if not self.loaded or self._mounting or time.monotonic() - self._last_input < PREWARM_IDLE_SECONDS:
            return
        mounted = {view.id for view in self.views()}
        pending = [s for s in self.specs if s.prewarm and s.view_id not in mounted]
        if not pending:
            self._prewarm_timer.stop()
            return
        self.view(pending[0].view_id)

    async def mount_all_views(self) -> None:
        """Mount every view not shown yet (help and the command palette list every view's bindings)."""
        for spec in self.specs:
            self.view(spec.view_id)
        for mounting in list(self._mounting.values()):
            await mounting

    @property
    def active_view(self) -> KilnView:
        return self.view(self.query_one(ContentSwitcher).current or self.specs[0].view_id)

    def show_view(self, view_id: str) -> KilnView:
        view = self.view(view_id)
        switcher = self.query_one(ContentSwitcher)
        if switcher.current != view_id:
            switcher.current = view_id
            self.query_one(ViewBar).set_active(view_id)
        if view_id not in self._mounting:  # a view still mounting is activated when it is ready
            view.activated()
        return view

    def action_leave_input(self) -> None:
        """esc in a text field hands the keys back to the view (so 1…9, u, q work again)."""
        from textual.widgets import Input

        if isinstance(self.focused, Input):
            self.active_view.activated()

    def action_show_view_key(self, key: str) -> None:
        for spec in self.specs:
            if spec.key == key:
                self.show_view(spec.view_id)
                return

    # ----- loading ----------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="load")
    def load_dataset(self) -> None:
        """Show what the index knows at once, scan (adding images as they are indexed), then the health flags."""
        model = self.model
        first, self._load_started = not self._load_started, True
        try:
            model.finish_preload()  # the dataset opened and its indexed rows built while the UI started
        except (ModelError, ImportError) as exc:
            self.ui(self._fatal, str(exc))
            return
        if model.index_note:
            self.ui(self.notify, safe_text(model.index_note), timeout=6)
        from_index = False
        if first:
            if not model.rows:
                quick = model.indexed_records()
                if quick:
                    model.load_rows(quick, captions=False)
            rows = model.rows
            if rows:  # warm index: the list at once, then the captions
                from_index = True
                self.ui(self._rows_loaded, rows, False)
                model.read_captions(rows)
                model.vocabulary()  # counted here, not on the UI thread
                self.ui(self._rows_loaded, rows, False, True)
        self.scanning = True
        self.ui(self.update_status, "scanning…")
        try:
            summary = model.scan(self._scan_progress_reporter())
            if not (from_index and model.rows_match_scan(summary)):
                model.load_rows(model.scanned_records())
                model.vocabulary()
        except ScanStopped:
            self.scanning = False
            return
        except Exception as exc:  # noqa: BLE001 - a failed scan still leaves the indexed rows usable
            self.scanning = False
            self.ui(self._fatal, f"scan failed: {exc}")
            return
        self.scanning = False
        self.ui(self._rows_loaded, model.rows, False)
        self.ui(self.update_status, "checking health…")
        try:
            flags = model.all_flags(refresh=False)
            model.duplicate_clusters()  # the health pass just found them: kept for the Health view
        except Exception as exc:  # noqa: BLE001 - flags are advisory
            self.ui(self.notify, safe_text(f"health checks failed: {exc}"), severity="warning")
            flags = None
        if flags is not None:
            model.set_flags(flags)
        self.ui(self._rows_loaded, model.rows, True)

    def _scan_progress_reporter(self):
        """The scan's ``on_progress``: adds the images just indexed to the rows (with their captions) and
        shows them, at most every ``SCAN_REFRESH_SECONDS`` (the first batch at once)."""
        model = self.model
        shown = {"at": 0.0, "pending": False}

        def report(progress) -> None:
            if not self.is_running:
                raise ScanStopped("the app is closing")  # stops the scan; what was indexed stays
            note = f"scanning… {progress.done}/{progress.total} indexed" if progress.total else "scanning…"
            if progress.records:
                model.add_records(progress.records)
                shown["pending"] = True
            now = time.monotonic()
            if shown["pending"] and now - shown["at"] >= SCAN_REFRESH_SECONDS:
                shown["at"], shown["pending"] = now, False
                model.vocabulary()
                self.ui(self._rows_loaded, model.rows, False, True, note)
            else:
                self.ui(self.update_status, note)

        return report

    def _fatal(self, message: str) -> None:
        self.status_note = message
        self.update_status()
        self.notify(message, severity="error", timeout=30)

    def _each_view(self, hook: str) -> None:
        for view in self.views():
            if view.id not in self._mounting:  # a view still mounting runs its hooks when it is ready
                self._call_hook(view, hook)

    @staticmethod
    def _call_hook(view: KilnView, hook: str) -> None:
        from textual.css.query import NoMatches

        try:
            getattr(view, hook)()
        except NoMatches:  # the view is being torn down (app exiting)
            pass

    def _rows_loaded(self, rows: list[Row], final: bool, partial: bool = False, note: str | None = None) -> None:
        """Rows were (re)loaded: tell the views. ``partial`` (a scan or caption read is still under way): only
        the browser and the view on screen; the others catch up at the next full load."""
        self.loaded = final or self.loaded
        if not partial or time.monotonic() - self._frozen_at >= FREEZE_EVERY_SECONDS:
            self._frozen_at = time.monotonic()  # full loads always; a running scan's batches now and then
            _freeze_long_lived_objects()
        if partial:
            from textual.css.query import NoMatches

            try:
                views = {self.view("browser"), self.active_view}
            except NoMatches:  # not mounted yet, or shutting down
                views = set()
            for view in views:
                if view.id not in self._mounting:
                    self._call_hook(view, "dataset_loaded")
        else:
            self._each_view("dataset_loaded")
        self.update_status("" if final else note)

    def action_rescan(self) -> None:
        self.load_dataset()

    def action_toggle_training(self) -> None:
        """Show or hide the training panel (tui/runs, see docs/RUN_MANAGEMENT.md)."""
        try:
            from tui.runs import toggle_training_panel
        except ImportError:
            self.notify("Training is not available in this installation.", severity="warning")
            return
        toggle_training_panel(self)

    # ----- captions ---------------------------------------------------------------------------
    def poll_captions(self) -> None:
        """Notice captions edited outside kiln (focused and visible images)."""
        if not self.loaded:
            return
        rows: list[Row] = []
        try:
            browser = self.view("browser")
            rows = browser.watched_rows()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - no browser view: nothing to watch
            return
        if rows:
            self._check_captions(rows)

    @work(thread=True, exclusive=True, group="caption-poll")
    def _check_captions(self, rows: list[Row]) -> None:
        changed = self.model.changed_on_disk(rows)
        if changed:
            self.ui(self._external_change, changed)

    def _external_change(self, rows: list[Row]) -> None:
        names = ", ".join(r.name for r in rows[:3]) + (" …" if len(rows) > 3 else "")
        self.notify(safe_text(f"Caption changed outside kiln, reloaded: {names}"), severity="warning")
        self.captions_changed()

    def captions_changed(self) -> None:
        self._each_view("captions_changed")
        self.update_status()

    # ----- journal ----------------------------------------------------------------------------
    def report_apply(self, result, what: str) -> None:
        """Tell the user how an apply went (conflicts are shown, nothing is overwritten)."""
        if result is None:
            self.notify("No change.", timeout=2)
            return
        conflicts = list(getattr(result, "conflicts", []) or [])
        applied = getattr(result, "applied", None)
        count = len(applied) if isinstance(applied, list | tuple | set) else applied
        if conflicts:
            names = ", ".join(Path(str(getattr(c, "caption_path", c))).name for c in conflicts[:3])
            self.notify(
                safe_text(f"{what}: {len(conflicts)} caption(s) changed on disk and were NOT overwritten: {names}. "
                          "They were reloaded; review and retry."),
                severity="warning", timeout=10,
            )
        else:
            self.notify(safe_text(f"{what}: {count} caption(s) written. u undoes."), timeout=3)
        self.captions_changed()

    def action_undo(self) -> None:
        self._journal_step("undo")

    def action_redo(self) -> None:
        self._journal_step("redo")

    @work(thread=True, exclusive=True, group="journal")
    def _journal_step(self, which: str) -> None:
        try:
            result = self.model.undo() if which == "undo" else self.model.redo()
        except Exception as exc:  # noqa: BLE001 - show the journal's message
            self.ui(self.notify, safe_text(f"{which} failed: {exc}"), severity="error")
            return
        self.ui(self._journal_done, which, result)

    def _journal_done(self, which: str, result) -> None:
        if result is None:
            self.notify(f"Nothing to {which}.", timeout=2)
        else:
            desc = getattr(result, "description", "") or ""
            conflicts = list(getattr(result, "conflicts", []) or [])
            msg = f"{which.capitalize()} done: {desc}" if desc else f"{which.capitalize()} done."
            if conflicts:
                msg += f" {len(conflicts)} caption(s) changed on disk were left as they are."
            self.notify(safe_text(msg), severity="warning" if conflicts else "information", timeout=4)
        self.captions_changed()

    # ----- filter -----------------------------------------------------------------------------
    def action_filter(self) -> None:
        browser = self.show_view("browser")
        browser.open_filter()  # type: ignore[attr-defined]

    def set_filter_query(self, text: str) -> None:
        """Filter the browser by a query (used by the Tags view) and show it."""
        browser = self.show_view("browser")
        browser.apply_filter(text)  # type: ignore[attr-defined]

    # ----- status -----------------------------------------------------------------------------
    def update_status(self, note: str | None = None) -> None:
        if note is not None:
            self.status_note = note
        try:
            bar = self.query_one("#status", StatusBar)
        except Exception:  # noqa: BLE001 - not mounted yet
            return
        text = Text(no_wrap=True, overflow="ellipsis")
        rows = self.model.rows
        try:
            lst = self.view("browser").image_list  # type: ignore[attr-defined]
            shown, selected = len(lst.view), len(lst.selected)
        except Exception:  # noqa: BLE001
            shown, selected = len(rows), 0
        text.append(f"{shown}/{len(rows)} images")
        if selected:
            text.append(f"  {selected} selected", style="bold")
        if self.filter_text:
            text.append("  filter: ")
            text.append_text(safe_text(self.filter_text, style="italic"))
        if self.status_note:
            text.append("  ")
            text.append_text(safe_text(self.status_note, style="bold"))
        bar.update(text)

    # ----- theme ------------------------------------------------------------------------------
    def watch_theme(self, theme: str) -> None:
        if not getattr(self, "_theme_ready", False):
            return
        self.prefs.theme = theme
        if self.persist_prefs:
            save_prefs(self.prefs)
        try:
            self.query_one(ViewBar).refresh()
        except Exception:  # noqa: BLE001
            pass

    def action_cycle_theme(self) -> None:
        names = sorted(self._themes) or [DEFAULT_THEME]
        current = names.index(self.theme) if self.theme in names else -1
        self.theme = names[(current + 1) % len(names)]
        self.notify(f"Theme: {self.theme}", timeout=1.5)

    # ----- help and palette -------------------------------------------------------------------
    def binding_sources(self) -> list[tuple[str, Widget, list[Binding]]]:
        """(section, widget, bindings) for the app and every widget class in every view (deduplicated)."""
        sources: list[tuple[str, Widget, list[Binding]]] = [("Everywhere", self, _bindings(self.BINDINGS))]
        for spec in self.specs:
            seen: set[type] = set()
            try:
                view = self.view(spec.view_id)
            except Exception:  # noqa: BLE001
                continue
            for widget in [view, *view.walk_children(with_self=False)]:
                cls = type(widget)
                if cls in seen or not isinstance(widget, Widget):
                    continue
                seen.add(cls)
                own = [b for b in _bindings(getattr(cls, "BINDINGS", [])) if b.action]
                if own and cls.__module__.startswith("tui."):
                    sources.append((f"{spec.title} view", widget, own))
        return sources

    async def action_command_palette(self) -> None:
        await self.mount_all_views()  # the palette lists the actions of every view
        super().action_command_palette()

    async def action_help(self) -> None:
        from tui.widgets.dialogs import HelpScreen

        await self.mount_all_views()

        sections: list[tuple[str, list[tuple[str, str]]]] = []
        for section, widget, bindings in self.binding_sources():
            rows = []
            for b in bindings:
                if b.action.startswith("show_view_key"):
                    continue
                rows.append((_key_label(b.key), b.description or b.action))
            title = section if widget is self else f"{section} · {_help_name(widget)}"
            sections.append((title, rows))
        sections[0][1].append(("1…9", "Views: " + ", ".join(f"{s.key} {s.title}" for s in self.specs)))
        sections[0][1].append(("ctrl+p", "Command palette (every action)"))
        sections[0][1].append(("tab / shift+tab", "Move focus between panes"))
        self.push_screen(HelpScreen(sections))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for spec in self.specs:
            yield SystemCommand(f"View: {spec.title}", f"key {spec.key}", partial(self.show_view, spec.view_id))
        for section, widget, bindings in self.binding_sources():
            for b in bindings:
                if b.action.startswith("show_view_key"):
                    continue
                yield SystemCommand(
                    f"{b.description or b.action}",
                    f"{section} · key {_key_label(b.key)}",
                    partial(self._run_from_palette, widget, b.action),
                )

    def _run_from_palette(self, widget: Widget, action: str) -> None:
        view = next((a for a in widget.ancestors_with_self if isinstance(a, KilnView)), None)
        if view is not None and view.id:
            self.show_view(view.id)
        if widget.focusable:
            widget.focus()
        self.call_later(self.run_action, action, widget)


HELP_NAMES = {
    "ImageList": "image list", "ImageGrid": "image grid", "TagList": "tag editor", "TagInput": "tag input",
    "FilterInput": "filter box", "TagTable": "tag table", "HealthTree": "findings", "ClusterPane": "duplicate cluster",
}


def _help_name(widget: Widget) -> str:
    name = type(widget).__name__
    if isinstance(widget, KilnView):
        return "view"
    return HELP_NAMES.get(name, name)


def _freeze_long_lived_objects() -> None:
    """Move every object alive now (the rows, records, tags of 10,000+ images) out of the cyclic garbage
    collector's reach. They live as long as the dataset is open; left in, each full collection walks all of them
    and stalls the UI for 0.1–0.25 s at random key presses (measured on view switches). Reference counting still
    frees them when they are replaced (rows and records hold no reference cycles); only cyclic garbage among
    them (a widget alive at this moment and later discarded) is never collected, which is why this runs after
    full loads and at most every ``FREEZE_EVERY_SECONDS`` while a scan adds rows."""
    import gc

    gc.freeze()


def _register_optional_views() -> None:
    """Views from other packages (the Runs view of tui/runs) register themselves here."""
    try:
        from tui.runs import register as register_runs
    except ImportError:
        return
    register_runs()


def _bindings(items: Iterable[BindingType]) -> list[Binding]:
    out = []
    for item in items:
        if isinstance(item, Binding):
            out.append(item)
        elif isinstance(item, tuple):
            out.append(Binding(*item))
    return out


def _key_label(keys: str) -> str:
    names = {"question_mark": "?", "slash": "/", "space": "space", "escape": "esc"}
    return " / ".join(names.get(k.strip(), k.strip()) for k in keys.split(","))


def run_curator(path: Path, *, image_protocol: str | None = None, theme: str | None = None) -> int:
    """Run the curator on ``path`` (the entry point ``kiln DATASET`` calls). Returns the exit code."""
    import sys

    path = Path(path)
    if not path.exists():
        print(f"kiln: {path} does not exist (give the dataset folder or its kohya TOML)", file=sys.stderr)
        return 1
    try:
        protocol = detect_protocol(override=image_protocol)
    except ValueError as exc:
        print(f"kiln: {exc}", file=sys.stderr)
        return 1
    if protocol in ("sixel", "kitty"):
        try:  # textual-image must query the terminal before Textual takes it over
            import textual_image.widget  # noqa: F401
        except Exception:  # noqa: BLE001
            protocol = "halfblock"
    app = KilnApp(path, image_protocol=protocol, theme=theme)
    app.run()
    return app.return_code or 0
