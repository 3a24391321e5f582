"""The keys of the runs view, the training panel and the new-run form (registered with tui/bindings.py by
``tui.runs.register``)."""

from __future__ import annotations

from tui.bindings import Context, Key

RUNS_VIEW = Context("runs", "Runs view", "runs", "RunsView", (
    Key("watch", "enter", "watch", "Watch"),
    Key("new", "n", "new_run", "New run"),
    Key("stop", "s", "stop", "Stop"),
    Key("save-now", "S", "save_now", "Save now"),
    Key("resume", "r", "resume", "Resume"),
))
TRAINING_PANEL = Context("training-panel", "Training panel (f2)", None, "TrainingPanel", (
    Key("stop", "s", "stop", "Stop run"),
    Key("save-now", "S", "save_now", "Save now"),
    Key("resume", "r", "resume", "Resume run"),
    Key("new", "n", "new_run", "New run"),
))
NEW_RUN = Context("new-run", "Dialogs · new run", None, "NewRunScreen", (
    Key("cancel", "escape", "cancel", "Cancel"),
    Key("launch", "ctrl+l", "launch", "Launch"),
), palette=False)
CONTEXTS = (RUNS_VIEW, TRAINING_PANEL, NEW_RUN)
