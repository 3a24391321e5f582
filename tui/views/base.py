"""What every view of the curator app is: a container the app shows in its view switcher."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual.containers import Container

if TYPE_CHECKING:
    from tui.app import KilnApp


class KilnView(Container):
    """Base class for a view. Subclasses set ``VIEW_ID``/``TITLE``, compose their widgets and react to hooks.

    Hooks (all optional, called on the UI thread):
    ``dataset_loaded()`` after a (re)scan filled ``self.kiln.model.rows``;
    ``captions_changed()`` after tags changed (edit, bulk op, undo, outside edit);
    ``activated()`` each time the view is shown.
    """

    VIEW_ID: ClassVar[str] = ""
    TITLE: ClassVar[str] = ""

    DEFAULT_CSS = "KilnView { height: 1fr; }"

    @property
    def kiln(self) -> KilnApp:
        return self.app  # type: ignore[return-value]

    def dataset_loaded(self) -> None:
        """The rows were (re)loaded."""

    def captions_changed(self) -> None:
        """Some captions changed."""

    def activated(self) -> None:
        """The view became visible."""
