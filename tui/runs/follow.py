"""What the training panel and the runs view share: polling the app's ``RunsWatcher`` in a worker thread and
showing each snapshot they have not shown yet on the UI thread (``show_snapshot``, which each widget extends
with its own parts)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import work

from tui.runs.watcher import RunsSnapshot, runs_watcher
from tui.runs.widgets import EventLog, LossChart, RunHeader

if TYPE_CHECKING:
    from textual.widget import Widget

    _Base = Widget
else:
    _Base = object


class FollowsRuns(_Base):
    """A mixin for a widget with a ``RunHeader``, a ``LossChart`` and an ``EventLog``: ``POLL_S`` between polls
    while it is displayed; ``poll(force=True)`` asks for the current snapshot at once."""

    POLL_S = 1.0
    COMPACT_HEADER = False  # the header's one-column form (the narrow panel)

    def init_follow(self) -> None:
        self.snapshot = RunsSnapshot()
        self.shown_version = -1
        self.shows = 0  # snapshots shown (tests wait on it)

    def on_mount(self) -> None:
        self.set_interval(self.POLL_S, self.poll)
        self.poll(force=True)

    @work(thread=True, exclusive=True, group="runs-poll")
    def poll(self, force: bool = False) -> None:
        if not force and not self.display:
            return
        snap = runs_watcher(self.app).news_since(self.shown_version, force)
        if snap is not None:
            self.app.call_from_thread(self.show_snapshot, snap)

    def show_snapshot(self, snap: RunsSnapshot) -> None:
        self.snapshot = snap
        self.shown_version = snap.version
        self.shows += 1
        self.query_one(RunHeader).show(snap.tracker, snap.info, compact=self.COMPACT_HEADER)
        self.query_one(LossChart).show(snap.tracker)
        self.query_one(EventLog).show(snap.tracker, snap.info)
