"""What every view of the curator app is: a container the app shows in its view switcher, that follows the
dataset model through messages."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Protocol, cast

from textual.containers import Container

from tui.messages import ModelChanged, follow
from tui.state import (
    BucketsChanged,
    CaptionsChanged,
    CurrentChanged,
    FilterChanged,
    RowsLoaded,
    SelectionChanged,
)

if TYPE_CHECKING:
    from tui.config import TuiPrefs
    from tui.model import DatasetModel
    from tui.rows import Row


class ViewHost(Protocol):
    """What a view may use of the app (the app implements it; views never import the app)."""

    @property
    def model(self) -> DatasetModel: ...

    @property
    def prefs(self) -> TuiPrefs: ...

    @property
    def image_protocol(self) -> str: ...

    @property
    def loaded(self) -> bool:
        """The scan and the health checks are done."""
        ...

    def ui(self, callback: Callable[..., object], *args: object, **kwargs: object) -> object:
        """Run ``callback`` on the UI thread (from a worker thread)."""
        ...

    def save_prefs(self) -> None:
        """Write ``prefs`` (unless this app was started not to)."""
        ...

    def key_label(self, binding_id: str) -> str:
        """The keys binding ``binding_id`` answers to now (the user's keymap applied), as help writes them."""
        ...


class KilnView(Container):
    """Base class for a view. Subclasses set ``VIEW_ID``/``TITLE``, compose their widgets and react to hooks.

    The model's changes arrive as ``ModelChanged`` messages and become these hooks (all optional, on the UI
    thread): ``dataset_loaded()`` rows (re)loaded (also once when the view is built late);
    ``captions_changed()`` tags changed (edit, bulk op, undo, outside edit); ``buckets_changed()``;
    ``filter_changed(text)``, ``selection_changed(count)``, ``current_changed(path)``: the browse state
    (``self.model.state``). ``activated()`` each time the view is shown. A hidden view skips the rows a running
    scan adds (``LIVE_ROWS`` False) and catches up when it is shown. A view that does not show the dataset
    (the Runs view) sets ``FOLLOWS_MODEL`` False and gets none of the model hooks.
    """

    VIEW_ID: ClassVar[str] = ""
    TITLE: ClassVar[str] = ""
    LIVE_ROWS: ClassVar[bool] = False  # follow partial loads even while hidden
    FOLLOWS_MODEL: ClassVar[bool] = True

    DEFAULT_CSS = "KilnView { height: 1fr; }"

    _unfollow: Callable[[], None] | None = None
    _stale = False

    @property
    def kiln(self) -> ViewHost:
        return cast("ViewHost", self.app)

    @property
    def model(self) -> DatasetModel:
        return self.kiln.model

    # ----- following the model ----------------------------------------------------------------
    def on_mount(self) -> None:  # runs after the subclass's own on_mount
        if not self.FOLLOWS_MODEL:
            return
        self._unfollow = follow(self, self.model.changes)
        if self.model.rows:
            self.dataset_loaded()

    def on_unmount(self) -> None:
        if self._unfollow is not None:
            self._unfollow()
            self._unfollow = None

    def on_model_changed(self, message: ModelChanged) -> None:
        change = message.change
        if isinstance(change, RowsLoaded):
            if change.partial and not (self.LIVE_ROWS or self.display):
                self._stale = True
                return
            self._stale = False
            self.dataset_loaded()
        elif isinstance(change, CaptionsChanged):
            self.captions_changed()
        elif isinstance(change, BucketsChanged):
            self.buckets_changed()
        elif isinstance(change, FilterChanged):
            self.filter_changed(change.text)
        elif isinstance(change, SelectionChanged):
            self.selection_changed(change.count)
        elif isinstance(change, CurrentChanged):
            self.current_changed(change.path)

    def shown(self) -> None:
        """The app shows this view: catch up with rows skipped while hidden, then ``activated()``."""
        if self._stale:
            self._stale = False
            self.dataset_loaded()
        self.activated()

    # ----- hooks ------------------------------------------------------------------------------
    def dataset_loaded(self) -> None:
        """The rows were (re)loaded."""

    def captions_changed(self) -> None:
        """Some captions changed."""

    def buckets_changed(self) -> None:
        """The bucket settings (and every row's bucket) changed."""

    def filter_changed(self, text: str) -> None:
        """The image filter changed."""

    def selection_changed(self, count: int) -> None:
        """The selection changed."""

    def current_changed(self, path: str | None) -> None:
        """The current image changed."""

    def activated(self) -> None:
        """The view became visible."""

    def watched_rows(self) -> list[Row]:
        """Rows whose captions this view shows, polled for edits made outside kiln."""
        return []
