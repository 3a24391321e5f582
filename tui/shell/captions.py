"""Captions edited outside kiln: every ``CAPTION_POLL_SECONDS`` a worker looks at the journal (what another
kiln process, a ``kiln tags`` in another shell, changed: every row it touched, visible or not) and at the
captions the views show (the focused image's and the visible ones, for other editors and scripts); a changed
one is re-read (the model announces it, every view follows) and the user is told."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from textual.app import App

from tui.model import DatasetModel
from tui.rows import Row
from tui.shell.threads import call_ui
from tui.views.base import KilnView

CAPTION_POLL_SECONDS = 1.0


class CaptionWatcher:
    """Polls the rows ``views()`` watch once ``loaded()``; ``warn`` tells the user what changed."""

    def __init__(self, app: App[None], model: DatasetModel, views: Callable[[], Iterable[KilnView]],
                 loaded: Callable[[], bool], warn: Callable[[str], None]) -> None:
        self.app = app
        self.model = model
        self.views = views
        self.loaded = loaded
        self.warn = warn

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
        self.app.run_worker(lambda: self._check(rows), thread=True, exclusive=True, group="caption-poll")

    def _check(self, rows: list[Row]) -> None:
        changed = self.model.journal_changes()  # what other kiln processes wrote; announces CaptionsChanged
        seen = {row.path for row in changed}
        changed += [row for row in self.model.changed_on_disk(rows) if row.path not in seen]
        if changed:
            names = ", ".join(r.name for r in changed[:3]) + (" …" if len(changed) > 3 else "")
            call_ui(self.app, self.warn, f"Caption changed outside kiln, reloaded: {names}")
