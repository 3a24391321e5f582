"""The keys of the runs view, the training panel, the new-run form and the grid browser (registered with tui/bindings.py by
``tui.runs.register``)."""

from __future__ import annotations

from tui.bindings import Context, Key

RUNS_VIEW = Context("runs", "Runs view", "runs", "RunsView", (
    Key("watch", "enter", "watch", "Watch"),
    Key("new", "n", "new_run", "New run"),
    Key("stop", "s", "stop", "Stop"),
    Key("save-now", "S", "save_now", "Save now"),
    Key("resume", "r", "resume", "Resume"),
    Key("grid", "g", "open_grid", "Grid", long="Browse the run's LoRA test grid (kiln lora grid)"),
    Key("hardest", "h", "hardest", "Hardest images", long="Hardest images: the run's per-image loss ranking"),
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
    Key("estimate", "ctrl+o", "estimate", "Estimate", long="Estimate memory and time (a few-step dry run)"),
), palette=False)
GRID_BROWSER = Context("grid-browser", "Runs view · grid browser", None, "GridBrowser", (
    Key("next-epoch", "down,j", "epoch(1)", "Next epoch", show=False),
    Key("previous-epoch", "up,k", "epoch(-1)", "Previous epoch", show=False),
    Key("stronger", "right,l", "strength(1)", "Stronger", show=False),
    Key("weaker", "left,h", "strength(-1)", "Weaker", show=False),
    Key("next-prompt", "right_square_bracket", "prompt(1)", "Next prompt"),
    Key("previous-prompt", "left_square_bracket", "prompt(-1)", "Previous prompt", show=False),
    Key("next-base", "b", "next_base", "Next base"),
    Key("next-blocks", "p", "next_preset", "Next blocks"),
    Key("control", "c", "control", "Control", long="Flip between this image and the control (strength 0)"),
    Key("sheet", "s", "sheet", "Sheet", long="Show the whole contact sheet"),
    Key("close", "escape,q", "close", "Close"),
), palette=False)
HARDEST = Context("hardest", "Dialogs · hardest images", None, "HardestScreen", (
    Key("cancel", "escape", "cancel", "Close"),
    Key("reveal", "enter", "reveal", "Show in curator"),
    Key("flip", "e", "flip", "Hardest / easiest"),
), palette=False)
CONTEXTS = (RUNS_VIEW, TRAINING_PANEL, NEW_RUN, GRID_BROWSER, HARDEST)
