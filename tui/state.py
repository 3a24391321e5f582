"""What the user is looking at, in one place: the filter, the selection and the current image.

``BrowseState`` belongs to the ``DatasetModel`` (``model.state``): every view and widget reads it there and
changes it only through its methods, so the Browse list, the grid, the Bulk scopes and the status line can never
disagree. Each change (and each change of the rows themselves) is announced on the model's ``ChangeFeed`` as
one of the small events below; ``tui.messages.follow`` turns them into Textual messages for a view.

Textual-free: the model announces from worker threads too (a listener must be thread-safe; posting a Textual
message is).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

from tui.rows import Row

Predicate = Callable[[Row], bool]


@dataclass(frozen=True, slots=True)
class RowsLoaded:
    """The rows were (re)loaded. ``partial``: a scan or a caption read is still under way (more follow)."""

    partial: bool = False


@dataclass(frozen=True, slots=True)
class CaptionsChanged:
    """Captions changed on disk or through the journal; ``paths`` are the images whose tags were re-read."""

    paths: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class BucketsChanged:
    """The bucket settings changed, so did every row's bucket."""


@dataclass(frozen=True, slots=True)
class FilterChanged:
    """The image filter is now ``text`` ('' = none)."""

    text: str


@dataclass(frozen=True, slots=True)
class SelectionChanged:
    """The selection now holds ``count`` images."""

    count: int


@dataclass(frozen=True, slots=True)
class CurrentChanged:
    """The current (focused) image is now ``path`` (None: no image shown)."""

    path: str | None


Change = RowsLoaded | CaptionsChanged | BucketsChanged | FilterChanged | SelectionChanged | CurrentChanged
Listener = Callable[[Change], None]


class ChangeFeed:
    """Announces changes to every subscribed listener, in the announcing thread."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(change)`` for every change from now on; returns the function that unsubscribes."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def announce(self, change: Change) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(change)


class BrowseState:
    """The filter (text and compiled predicate), the selection (image paths) and the current image.

    Setters announce only real changes. ``matching(rows)`` is the one evaluation of the filter over a list of
    rows (cached until the rows, their content or the filter change), shared by the list and the status line.
    """

    def __init__(self, feed: ChangeFeed | None = None) -> None:
        self.feed = feed if feed is not None else ChangeFeed()
        self.filter_text = ""
        self.predicate: Predicate | None = None
        self.selected: frozenset[str] = frozenset()
        self.current: str | None = None
        self._content_version = 0
        self._matching_for: tuple[Sequence[Row], int, int, Predicate | None] | None = None
        self._matching: list[int] = []

    # ----- filter ---------------------------------------------------------------------------------
    def set_filter(self, text: str, predicate: Predicate | None) -> None:
        """Show only the rows ``predicate`` accepts (None: every row); ``text`` is the query it came from."""
        text = text.strip()
        if text == self.filter_text and predicate is self.predicate:
            return
        self.filter_text, self.predicate = text, predicate
        self.feed.announce(FilterChanged(text))

    def matching(self, rows: Sequence[Row]) -> list[int]:
        """Indices of the ``rows`` that pass the filter, in their order."""
        key = self._matching_for
        predicate = self.predicate
        if (key is not None and key[0] is rows and key[1] == len(rows) and key[3] is predicate
                and (predicate is None or key[2] == self._content_version)):  # no filter: content cannot matter
            return self._matching
        found = list(range(len(rows))) if predicate is None else [i for i, r in enumerate(rows) if predicate(r)]
        self._matching_for, self._matching = (rows, len(rows), self._content_version, predicate), found
        return found

    @property
    def content_version(self) -> int:
        """Bumped each time rows change in place (what a sort by tags or flags depends on)."""
        return self._content_version

    def content_changed(self) -> None:
        """Rows changed in place (tags, flags, buckets): the filter must be evaluated again."""
        self._content_version += 1

    # ----- selection ------------------------------------------------------------------------------
    def set_selection(self, paths: Iterable[str]) -> None:
        selected = frozenset(paths)
        if selected != self.selected:
            self.selected = selected
            self.feed.announce(SelectionChanged(len(selected)))

    def select(self, paths: Iterable[str]) -> None:
        self.set_selection(self.selected | frozenset(paths))

    def toggle(self, path: str) -> None:
        self.set_selection(self.selected ^ {path})

    def clear_selection(self) -> None:
        self.set_selection(())

    def retain(self, paths: Collection[str]) -> None:
        """Forget selected images that are no longer in the dataset (after a rescan)."""
        if any(p not in paths for p in self.selected):
            self.set_selection(p for p in self.selected if p in paths)

    # ----- current image --------------------------------------------------------------------------
    def set_current(self, path: str | None) -> None:
        if path != self.current:
            self.current = path
            self.feed.announce(CurrentChanged(path))


GridAxis = str
"""``base``, ``lora``, ``preset``, ``strength`` or ``prompt``: the axes of a LoRA test grid."""
GRID_AXES: tuple[GridAxis, ...] = ("base", "lora", "preset", "strength", "prompt")


@dataclass(frozen=True, slots=True)
class GridCursor:
    """Where the grid browser is: one position on each axis of a LoRA test grid (``sizes`` per axis). Moving
    stops at the ends (``wrap`` for the axes cycled with one key)."""

    sizes: tuple[int, int, int, int, int]
    position: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)

    def at(self, axis: GridAxis) -> int:
        return self.position[GRID_AXES.index(axis)]

    def moved(self, axis: GridAxis, delta: int, *, wrap: bool = False) -> GridCursor:
        i = GRID_AXES.index(axis)
        size = max(self.sizes[i], 1)
        value = (self.position[i] + delta) % size if wrap else min(max(self.position[i] + delta, 0), size - 1)
        position = list(self.position)
        position[i] = value
        return GridCursor(self.sizes, (position[0], position[1], position[2], position[3], position[4]))

    def placed(self, axis: GridAxis, value: int) -> GridCursor:
        """At ``value`` on ``axis`` (clamped)."""
        return self.moved(axis, value - self.at(axis))
