"""The messages the curator's parts talk with.

Down, from the model to a view: ``ModelChanged`` carries one ``tui.state`` change (rows loaded, captions
changed, filter, selection, current image…); ``follow(node, model.changes)`` delivers each change to ``node``
as one. Up, from a view to the app (they bubble): ``ShowView``, ``ShowImages``, ``RevealImage``, ``Rescan``,
``CaptionsWritten``, ``StatusNote``. A view never calls another view or reaches into its widgets: it changes
the model's state or posts one of these.

Every message here may be posted from a worker thread (``post_message`` is thread-safe).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from textual.message import Message
from textual.message_pump import MessagePump

from tui.state import Change, ChangeFeed

if TYPE_CHECKING:
    from curator.tags.journal import ApplyResult


class ModelChanged(Message, bubble=False):
    """The dataset model changed (``change`` says how)."""

    def __init__(self, change: Change) -> None:
        super().__init__()
        self.change = change


def follow(node: MessagePump, feed: ChangeFeed) -> Callable[[], None]:
    """Deliver every change announced on ``feed`` to ``node`` as a ``ModelChanged``; returns the function that
    stops it (call it when the node goes away)."""

    def deliver(change: Change) -> None:
        try:
            node.post_message(ModelChanged(change))
        except RuntimeError:  # the event loop is closed: the app is gone
            pass

    return feed.subscribe(deliver)


class ShowView(Message):
    """Show the view ``view_id``."""

    def __init__(self, view_id: str) -> None:
        super().__init__()
        self.view_id = view_id


class ShowImages(Message):
    """Filter the images by ``query`` (the tag query language) and show them in the browser."""

    def __init__(self, query: str) -> None:
        super().__init__()
        self.query = query


class ApplyFilter(Message, bubble=False):
    """To the browser: filter by ``query`` (what ``ShowImages`` becomes once the browser is shown)."""

    def __init__(self, query: str) -> None:
        super().__init__()
        self.query = query


class OpenFilter(Message, bubble=False):
    """To the browser: open the filter box (the `/` key, wherever it is pressed)."""


class RevealImage(Message):
    """Show the image ``path`` in the browser (clearing the filter when it hides it)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path


class Rescan(Message):
    """Files were added or removed (trash, restore): scan the dataset again."""


class CaptionsWritten(Message):
    """A journaled write finished: tell the user how it went (``result`` None: nothing to write)."""

    def __init__(self, result: ApplyResult | None, what: str) -> None:
        super().__init__()
        self.result = result
        self.what = what


class StatusNote(Message):
    """Show ``text`` in the status line ('' clears it) — background work a view started."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
