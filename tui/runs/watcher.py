"""The TUI's one door to the runs: the list of known runs and the one watched run (its events, tailed).

One ``RunsWatcher`` per app (``runs_watcher(app)``), shared by the training panel and the runs view, so both
show the same watched run. ``poll()`` runs in a worker thread; readers take ``snapshot()`` on the UI thread.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from train.runs.discover import find_runs
from train.runs.state import RunInfo, read_run
from train.runs.tail import EventTail
from train.runs.track import RunTracker

LIST_EVERY_S = 2.0


@dataclass
class RunsSnapshot:
    runs: list[RunInfo] = field(default_factory=list)
    watched: Path | None = None
    info: RunInfo | None = None  # the watched run's state (incl. dead)
    tracker: RunTracker | None = None  # a copy: safe to read on the UI thread
    version: int = 0


class RunsWatcher:
    def __init__(self, folders: list[Path] | None = None):
        self.folders = folders
        self._lock = threading.Lock()
        self._runs: list[RunInfo] = []
        self._watched: Path | None = None
        self._tail: EventTail | None = None
        self._tracker = RunTracker()
        self._info: RunInfo | None = None
        self._listed_at = 0.0
        self._auto_pick = True
        self.version = 0

    def watch(self, run_dir: Path | None) -> None:
        """Watch ``run_dir`` (one at a time); the next poll reads its events from the top."""
        with self._lock:
            run_dir = Path(run_dir).resolve() if run_dir else None
            if run_dir == self._watched:
                return
            self._watched = run_dir
            self._tail = EventTail(run_dir / "events.jsonl") if run_dir else None
            self._tracker = RunTracker()
            self._info = None
            self._auto_pick = False
            self.version += 1

    def poll(self, force_list: bool = False) -> bool:
        """Refresh the list (every few seconds) and the watched run's events; True if anything changed."""
        changed = False
        now = time.monotonic()
        if force_list or now - self._listed_at >= LIST_EVERY_S:
            runs = find_runs(self.folders, include_registry=True)
            with self._lock:
                self._listed_at = now
                if _summary(runs) != _summary(self._runs):
                    changed = True
                self._runs = runs
                if self._watched is None and self._auto_pick and runs:
                    # Nothing chosen yet: watch the newest active run, else the newest run.
                    pick = next((r for r in runs if r.active), runs[0])
                    self._watched = pick.dir
                    self._tail = EventTail(pick.dir / "events.jsonl")
                    self._tracker = RunTracker()
                    changed = True
        with self._lock:
            watched, tail = self._watched, self._tail
        if watched is None or tail is None:
            if changed:
                self.version += 1
            return changed
        events = tail.read_new()
        info = next((r for r in self._runs if r.dir == watched), None)
        if info is None or now - self._listed_at > 0.5:
            info = read_run(watched)
        with self._lock:
            if watched != self._watched:
                return True
            if tail.reset:
                self._tracker = RunTracker()
            if events:
                self._tracker.feed_all(events)
                changed = True
            if self._info is None or _summary([info]) != _summary([self._info]):
                changed = True
            self._info = info
            if changed:
                self.version += 1
        return changed

    def news_since(self, shown_version: int, force: bool = False) -> RunsSnapshot | None:
        """Poll; a snapshot when there is something a widget that shows ``shown_version`` has not seen (or
        ``force``), else None. Called from a widget's polling thread."""
        changed = self.poll(force_list=force)
        if changed or force or self.version != shown_version:
            return self.snapshot()
        return None

    def snapshot(self) -> RunsSnapshot:
        with self._lock:
            return RunsSnapshot(runs=list(self._runs), watched=self._watched, info=self._info,
                                tracker=self._tracker.copy() if self._watched else None,
                                version=self.version)


def _summary(runs: list[RunInfo]) -> list[tuple[Any, ...]]:
    return [(r.dir, r.state, r.step, r.total_steps, r.loss, len(r.outputs), r.stop_requested) for r in runs]


def runs_watcher(app: Any) -> RunsWatcher:
    """The app's watcher (created on first use; ``app.runs_dirs`` limits where runs are looked for)."""
    watcher = getattr(app, "_kiln_runs_watcher", None)
    if watcher is None:
        watcher = RunsWatcher(getattr(app, "runs_dirs", None))
        app._kiln_runs_watcher = watcher
    return watcher
