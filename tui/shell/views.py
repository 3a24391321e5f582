"""Which views exist and which one is shown: each view is built the first time it is needed (or while the user
is idle), so a start pays only for the first one."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from textual.app import App
from textual.css.query import NoMatches
from textual.timer import Timer
from textual.widgets import ContentSwitcher

from tui.shell.view_bar import ViewBar
from tui.views.base import KilnView
from tui.views.registry import ViewSpec

PREWARM_IDLE_SECONDS = 1.5  # build a not-yet-shown view in the background after this long without input


class ViewManager:
    """Builds, finds and shows the views of ``specs`` inside the app's ``#views`` switcher."""

    def __init__(self, app: App[None], specs: list[ViewSpec]) -> None:
        self.app = app
        self.specs = specs
        self.last_input = time.monotonic()
        self.prewarm_enabled = True  # False: views are built only when shown (tests that count built views)
        self._mounting: dict[str, Awaitable[None]] = {}  # view id -> mount of a view being built
        self._prewarm: Timer | None = None

    @property
    def switcher(self) -> ContentSwitcher:
        return self.app.query_one("#views", ContentSwitcher)

    def new_view(self, spec: ViewSpec) -> KilnView:
        view = spec.factory()
        view.id = spec.view_id
        return view

    def spec(self, view_id: str) -> ViewSpec | None:
        return next((s for s in self.specs if s.view_id == view_id), None)

    def mounted(self) -> list[KilnView]:
        """The views built so far (a view built later catches up with the model when it mounts)."""
        return list(self.app.query(KilnView))

    def is_mounting(self, view_id: str) -> bool:
        return view_id in self._mounting

    def get(self, view_id: str) -> KilnView:
        """The view ``view_id``, built (hidden) when it was never shown; its widgets are composed on the next
        turn of the event loop. Raises ``NoMatches`` for an unknown view."""
        try:
            return self.app.query_one(f"#{view_id}", KilnView)
        except NoMatches:
            spec = self.spec(view_id)
            if spec is None:
                raise
            return self._mount(spec)

    def _mount(self, spec: ViewSpec) -> KilnView:
        view = self.new_view(spec)
        view.display = False  # the switcher shows it when it becomes current
        mounting = self.switcher.mount(view)
        self._mounting[spec.view_id] = mounting

        async def ready() -> None:
            await mounting
            self._mounting.pop(spec.view_id, None)
            if self.switcher.current == spec.view_id:
                view.shown()

        self.app.call_later(ready)
        return view

    async def ready(self, view_id: str) -> None:
        """Until the view ``view_id`` (if being built) is mounted."""
        mounting = self._mounting.get(view_id)
        if mounting is not None:
            await mounting

    @property
    def active(self) -> KilnView:
        return self.get(self.switcher.current or self.specs[0].view_id)

    def show(self, view_id: str) -> KilnView:
        view = self.get(view_id)
        switcher = self.switcher
        if switcher.current != view_id:
            switcher.current = view_id
            self.app.query_one(ViewBar).set_active(view_id)
        if view_id not in self._mounting:  # a view still being built is told once it is ready
            view.shown()
        return view

    def start_prewarm(self, loaded: Callable[[], bool]) -> None:
        """While the user is idle (and ``loaded()``), build the views not shown yet, one per tick, so that
        opening one later costs a switch (~50 ms), not a build (~150–250 ms on 10,000 images)."""

        def tick() -> None:
            if not self.prewarm_enabled or not loaded() or self._mounting or time.monotonic() - self.last_input < PREWARM_IDLE_SECONDS:
                return
            stack = self.app.screen_stack
            if not stack or not stack[-1].is_attached:  # the app is quitting: a view built now would mount half-way
                self._prewarm_stop()
                return
            built = {view.id for view in self.mounted()}
            pending = [s for s in self.specs if s.prewarm and s.view_id not in built]
            if pending:
                self.get(pending[0].view_id)
            else:
                self._prewarm_stop()

        self._prewarm = self.app.set_interval(PREWARM_IDLE_SECONDS / 3, tick)

    def _prewarm_stop(self) -> None:
        if self._prewarm is not None:
            self._prewarm.stop()

    async def mount_all(self) -> None:
        """Build every view not built yet."""
        for spec in self.specs:
            self.get(spec.view_id)
        for mounting in list(self._mounting.values()):
            await mounting
