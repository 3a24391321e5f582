"""The list of views the curator app shows, in order. Add a view by registering it here (see docs/TUI.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tui.views.base import KilnView


@dataclass(frozen=True)
class ViewSpec:
    """A view: ``view_id`` (unique), ``title`` (tab text), ``key`` (number key that opens it), ``factory``.
    ``prewarm``: the app may build it in the background while the user is idle, so that its first showing is
    instant (False for views that start background work of their own, e.g. polling)."""

    view_id: str
    title: str
    key: str
    factory: Callable[[], KilnView]
    order: int = 100
    prewarm: bool = True


_EXTRA: list[ViewSpec] = []


def register_view(spec: ViewSpec) -> None:
    """Add a view (e.g. the training panel) before the app starts; replaces one with the same id."""
    _EXTRA[:] = [s for s in _EXTRA if s.view_id != spec.view_id]
    _EXTRA.append(spec)


def _deferred(module: str, class_name: str) -> Callable[[], KilnView]:
    """A factory that imports its view's module only when the view is first built (a fast start)."""

    def factory() -> KilnView:
        from importlib import import_module

        return getattr(import_module(module), class_name)()

    return factory


def builtin_views() -> list[ViewSpec]:
    return [
        ViewSpec("browser", "Browse", "1", _deferred("tui.views.browser", "BrowserView"), 10),
        ViewSpec("tags", "Tags", "2", _deferred("tui.views.tags", "TagsView"), 20),
        ViewSpec("bulk", "Bulk", "3", _deferred("tui.views.bulk", "BulkView"), 30),
        ViewSpec("buckets", "Buckets", "4", _deferred("tui.views.buckets", "BucketsView"), 40),
        ViewSpec("health", "Health", "5", _deferred("tui.views.health", "HealthView"), 50),
    ]


def all_views() -> list[ViewSpec]:
    """Built-in views plus registered ones, by ``order``; later registrations win on a shared key."""
    specs = {s.view_id: s for s in builtin_views()}
    for spec in _EXTRA:
        specs[spec.view_id] = spec
    return sorted(specs.values(), key=lambda s: (s.order, s.view_id))
