"""The kiln curator: a Textual app over the headless curator. Entry point: :func:`run_curator`.

The app puts the pieces together: the ``DatasetModel`` (the one door to the curator, which also holds the
filter, the selection and the current image), the views (tui/views/, built by ``shell.views``), the pieces of
its frame (tui/shell/: loader, caption watcher, journal actions, view bar, status line, help and palette),
the keys (tui/bindings.py with the user's keymap, tui/keymap.py) and the themes (tui/themes.py). It answers
the views' requests (tui/messages.py); it holds no state of its own beyond the preferences.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import events
from textual.app import App, ComposeResult, SystemCommand
from textual.containers import Horizontal
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widgets import ContentSwitcher

from curator.textsafe import printable
from tui.bindings import bindings, context
from tui.config import TuiPrefs, load_prefs, save_prefs
from tui.imaging import detect_protocol
from tui.keymap import load_keymap
from tui.messages import (
    ApplyFilter,
    CaptionsWritten,
    OpenFilter,
    Rescan,
    RevealImage,
    ShowImages,
    ShowView,
    StatusNote,
)
from tui.model import DatasetModel
from tui.shell.captions import CaptionWatcher
from tui.shell.commands import help_sections, palette_commands
from tui.shell.footer import KilnFooter
from tui.shell.journal import JournalActions
from tui.shell.loader import DatasetLoader
from tui.shell.status import StatusBar
from tui.shell.threads import call_ui
from tui.shell.view_bar import ViewBar
from tui.shell.views import ViewManager
from tui.themes import DEFAULT_THEME, load_themes, resolve_theme_name
from tui.views.base import KilnView
from tui.views.registry import all_views

if TYPE_CHECKING:
    from curator.scan.config import QualityThresholds


class KilnApp(App[None]):
    """The curator app."""

    TITLE = "kiln"
    ENABLE_COMMAND_PALETTE = True
    CSS = """
    #views { height: 1fr; }
    #statusrow { height: 1; }
    """
    BINDINGS = bindings("app")

    def __init__(self, dataset_path: Path, *, image_protocol: str | None = None, theme: str | None = None,
                 prefs: TuiPrefs | None = None, persist_prefs: bool = True,
                 quality: QualityThresholds | None = None, train_config: Path | None = None,
                 model: DatasetModel | None = None) -> None:
        """``model``: the dataset's model, its preload already started (``kiln DATASET`` starts it before it
        imports Textual); else one is made here."""
        super().__init__()
        self.dataset_path = Path(dataset_path)
        self.model = model or DatasetModel(self.dataset_path, quality=quality, train_config=train_config)
        self.model.start_preload()  # open the dataset and read the index while Textual starts (no-op if started)
        self.prefs = prefs or load_prefs()
        self.persist_prefs = persist_prefs
        try:
            self.image_protocol = detect_protocol(override=image_protocol or self.prefs.image_protocol)
        except ValueError:  # a bad remembered value must not stop the app; the CLI checks its own flag
            self.image_protocol = "halfblock"
        _register_optional_views()
        self.specs = all_views()
        self.keymap = load_keymap()  # after the optional views registered their keys
        self.set_keymap(self.keymap.overrides)
        self.view_manager = ViewManager(self, self.specs)
        self.loader = DatasetLoader(self, self.model, note=self._note, warn=self._warn, fatal=self._fatal,
                                    last_input=lambda: self.view_manager.last_input)
        self.captions = CaptionWatcher(self, self.model, self.view_manager.mounted, lambda: self.loader.loaded,
                                       warn=self._warn)
        self.journal = JournalActions(self, self.model, self.notify)
        found = load_themes()
        for t in found.themes.values():
            self.register_theme(t)
        self._themes = found.themes
        self._problems = [*self.keymap.problems, *found.problems]
        available = set(self.available_themes)
        self.theme = resolve_theme_name(theme, available) or resolve_theme_name(self.prefs.theme, available) \
            or DEFAULT_THEME
        self._theme_ready = False

    # ----- what views may use (tui.views.base.ViewHost) --------------------------------------
    @property
    def loaded(self) -> bool:
        return self.loader.loaded

    @property
    def scanning(self) -> bool:
        return self.loader.scanning

    def ui(self, callback: Callable[..., object], *args: object, **kwargs: object) -> object:
        """Run ``callback`` on the UI thread from a worker thread; a no-op once the app is shutting down."""
        return call_ui(self, callback, *args, **kwargs)

    def save_prefs(self) -> None:
        if self.persist_prefs:
            save_prefs(self.prefs)

    def key_label(self, binding_id: str) -> str:
        from tui.bindings import all_keys

        ctx, key = all_keys()[binding_id]
        return self.keymap.label(ctx, key)

    # ----- layout -----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        app_keys = context("app")
        labels = {s.view_id: self.keymap.label(app_keys, k) for s in self.specs for k in app_keys.keys
                  if k.name == f"view-{s.key}"}
        yield ViewBar(self.specs, labels, self.dataset_path.name, id="viewbar")
        with ContentSwitcher(initial=self.specs[0].view_id, id="views"):
            yield self.view_manager.new_view(self.specs[0])  # the others are built when first needed
        with Horizontal(id="statusrow", classes="status"):
            yield StatusBar(self.model, id="status")
        yield KilnFooter(compact=True, show_command_palette=True)

    def on_mount(self) -> None:
        self._theme_ready = True
        self.loader.start()
        self.captions.start()
        self.view_manager.start_prewarm(lambda: self.loader.loaded)
        if self._problems:
            shown = "\n".join(self._problems[:4]) + (f"\n… {len(self._problems) - 4} more in ? (help)"
                                                     if len(self._problems) > 4 else "")
            self.notify(shown, title="Settings ignored", severity="warning", timeout=20)

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key | events.MouseDown | events.MouseScrollDown | events.MouseScrollUp):
            self.view_manager.last_input = time.monotonic()
        await super().on_event(event)

    def notify(self, message: str | Text, *, title: str = "", severity: SeverityLevel = "information",
               timeout: float | None = None, markup: bool = True) -> None:
        """Every toast is literal text: messages carry file names, tags and curator errors (data, not markup)."""
        text = message.plain if isinstance(message, Text) else str(message)
        super().notify(printable(text, keep_newlines=True), title=printable(title), severity=severity,
                       timeout=timeout, markup=False)

    # ----- the pieces' messages ---------------------------------------------------------------
    def _note(self, text: str) -> None:
        self.query_one(StatusBar).show_note(text)

    def _warn(self, text: str) -> None:
        self.notify(text, severity="warning", timeout=6)

    def _fatal(self, message: str) -> None:
        self._note(message)
        self.notify(message, severity="error", timeout=30)

    @property
    def status_note(self) -> str:
        return self.query_one(StatusBar).note

    # ----- views ------------------------------------------------------------------------------
    def views(self) -> list[KilnView]:
        """The views built so far."""
        return self.view_manager.mounted()

    def view(self, view_id: str) -> KilnView:
        """The view ``view_id`` (built, hidden, when it was never shown)."""
        return self.view_manager.get(view_id)

    @property
    def active_view(self) -> KilnView:
        return self.view_manager.active

    def show_view(self, view_id: str) -> KilnView:
        return self.view_manager.show(view_id)

    def action_show_view_key(self, key: str) -> None:
        spec = next((s for s in self.specs if s.key == key), None)
        if spec is not None:
            self.show_view(spec.view_id)

    def action_leave_input(self) -> None:
        """esc in a text field hands the keys back to the view (so 1…9, u, q work again)."""
        from textual.widgets import Input

        if isinstance(self.focused, Input):
            self.active_view.activated()

    # ----- requests from the views (tui/messages.py) ------------------------------------------
    def on_show_view(self, message: ShowView) -> None:
        self.show_view(message.view_id)

    def on_show_images(self, message: ShowImages) -> None:
        self.show_view("browser").post_message(ApplyFilter(message.query))

    def on_reveal_image(self, message: RevealImage) -> None:
        if self.model.reveal(message.path):
            self.show_view("browser")

    def on_rescan(self, message: Rescan) -> None:
        self.loader.start()

    def on_captions_written(self, message: CaptionsWritten) -> None:
        self.journal.report(message.result, message.what)

    def on_status_note(self, message: StatusNote) -> None:
        self._note(message.text)

    # ----- global actions ---------------------------------------------------------------------
    def action_filter(self) -> None:
        self.show_view("browser").post_message(OpenFilter())

    def action_undo(self) -> None:
        self.journal.undo()

    def action_redo(self) -> None:
        self.journal.redo()

    def action_rescan(self) -> None:
        self.loader.start()

    def action_toggle_training(self) -> None:
        """Show or hide the training panel (tui/runs, see docs/RUN_MANAGEMENT.md)."""
        from tui.runs import toggle_training_panel

        toggle_training_panel(self)

    # ----- theme ------------------------------------------------------------------------------
    def watch_theme(self, theme: str) -> None:
        if not getattr(self, "_theme_ready", False):
            return
        self.prefs.theme = theme
        self.save_prefs()
        self.query_one(ViewBar).refresh()

    def action_cycle_theme(self) -> None:
        names = sorted(self._themes) or [DEFAULT_THEME]
        current = names.index(self.theme) if self.theme in names else -1
        self.theme = names[(current + 1) % len(names)]
        self.notify(f"Theme: {self.theme}", timeout=1.5)

    # ----- help and palette (tui/shell/commands.py) -------------------------------------------
    def action_help(self) -> None:
        from tui.widgets.dialogs import HelpScreen

        notes = [f"Keymap: {self.keymap.path}", *self._problems]
        self.push_screen(HelpScreen(help_sections(self.keymap, self.specs), notes))

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from palette_commands(self, self.view_manager, self.keymap)


def _register_optional_views() -> None:
    """Views from other packages (the Runs view of tui/runs) register themselves here."""
    from tui.runs import register as register_runs

    register_runs()


def run_curator(path: Path, *, image_protocol: str | None = None, theme: str | None = None,
                quality: QualityThresholds | None = None, train_config: Path | None = None,
                model: DatasetModel | None = None) -> int:
    """Run the curator on ``path`` (the entry point ``kiln DATASET`` calls); ``quality``: the image-quality
    thresholds of the health view (None: the defaults); ``train_config``: a kiln train config whose bucket
    options to use; ``model``: its model with the preload started (:func:`tui.model.preload`). Returns the
    exit code."""
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
    app = KilnApp(path, image_protocol=protocol, theme=theme, quality=quality, train_config=train_config, model=model)
    app.run()
    return app.return_code or 0

