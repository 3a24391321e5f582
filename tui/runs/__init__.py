"""Training runs in the TUI: the training panel beside the curator, the full-screen runs view, the new-run
form. ``register()`` adds the runs view to the app's view registry; ``toggle_training_panel(app)`` shows or
hides the panel (see docs/RUNS.md for the app wiring)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from textual.app import App

    from tui.runs.panel import TrainingPanel
    from tui.views.base import KilnView

RUNS_VIEW_KEY = "6"


def register() -> None:
    """Add the Runs view and its keys to the curator app (call before the app is created)."""
    from tui.bindings import register_context
    from tui.runs.keys import CONTEXTS
    from tui.views.registry import ViewSpec, register_view

    def factory() -> KilnView:
        from tui.runs.view import RunsView

        return RunsView()

    register_view(ViewSpec("runs", "Runs", RUNS_VIEW_KEY, factory, 60, prewarm=False))  # it polls the runs
    for context in CONTEXTS:
        register_context(context)


def toggle_training_panel(app: App[None]) -> TrainingPanel:
    from tui.runs.panel import toggle_training_panel as toggle

    return toggle(app)
