"""Handing work back to the UI thread from worker threads."""

from __future__ import annotations

from collections.abc import Callable

from textual.app import App


def call_ui(app: App[None], callback: Callable[..., object], *args: object, **kwargs: object) -> object:
    """Run ``callback`` on the UI thread from a worker thread and return its result; a no-op (None) once the
    app is shutting down."""
    from textual.css.query import NoMatches

    if not app.is_running:
        return None
    try:
        return app.call_from_thread(callback, *args, **kwargs)
    except NoMatches:  # a widget went away meanwhile (app exiting)
        return None
    except RuntimeError:
        if not app.is_running:
            return None
        raise
