"""Captions edited outside this TUI: every ``CAPTION_POLL_SECONDS`` a worker looks at (1) the journal, for what
another kiln process (``kiln tags …`` or ``kiln tags undo`` in another shell, a second TUI) changed: every row
it touched, visible or not; (2) the captions the views show (the focused image's and the visible ones), for
edits made with another editor or a script; and every ``SWEEP_SECONDS`` (longer on big datasets) (3) every
caption file's modification time, for such edits to images that are not on screen. A changed caption is
re-read (the model announces it, every view follows) and the user is told."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from textual.app import App

from tui.model import DatasetModel
from tui.rows import Row
from tui.shell.threads import call_ui
from tui.views.base import KilnView

CAPTION_POLL_SECONDS = 1.0
SWEEP_SECONDS = 10.0  # every caption file is looked at this often (plus a second per 2,000 images)


class CaptionWatcher:
    """Polls the rows ``views()`` watch once ``loaded()``; ``warn`` tells the user what changed."""

    def __init__(self, app: App[None], model: DatasetModel, views: Callable[[], Iterable[KilnView]],
                 loaded: Callable[[], bool], warn: Callable[[str], None]) -> None:
        self.app = app
        self.model = model
        self.views = views
        self.loaded = loaded
        self.warn = warn
        self._last_sweep = time.monotonic()

    def start(self) -> None:
        self.app.set_interval(CAPTION_POLL_SECONDS, self.poll)

    def watched(self) -> list[Row]:
        rows: dict[str, Row] = {}
        for view in self.views():
            for row in view.watched_rows():
                rows.setdefault(row.path, row)
        return list(rows.values())

    def poll(self) -> None:
        if not self.loaded():
            return
        rows = self.watched()
        now = time.monotonic()
        if now - self._last_sweep >= SWEEP_SECONDS + len(self.model.rows) / 2000:
            self._last_sweep = now
            rows = list(self.model.rows)
        self.app.run_worker(lambda: self._check(rows), thread=True, exclusive=True, group="caption-poll")

    def _check(self, rows: list[Row]) -> None:
        changed = self.model.journal_changes()  # what other kiln processes wrote; announces CaptionsChanged
        seen = {row.path for row in changed}
        changed += [row for row in self.model.changed_on_disk(rows) if row.path not in seen]
        if changed:
            names = ", ".join(r.name for r in changed[:3]) + (" …" if len(changed) > 3 else "")
            call_ui(self.app, self.warn, f"Caption changed outside kiln, reloaded: {names}")
