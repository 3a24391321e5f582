"""The journal from the app's side: undo and redo (in a worker), and one way of telling the user how a
journaled write went (written, nothing to do, or refused because the file changed on disk)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from textual.app import App

from tui.model import DatasetModel
from tui.shell.threads import call_ui

if TYPE_CHECKING:
    from curator.tags.journal import ApplyResult

Notify = Callable[..., None]  # App.notify


class JournalActions:
    def __init__(self, app: App[None], model: DatasetModel, notify: Notify) -> None:
        self.app = app
        self.model = model
        self.notify = notify

    def report(self, result: ApplyResult | None, what: str) -> None:
        """Tell the user how a write went; conflicts are named, never overwritten (the rows were reloaded)."""
        if result is None:
            self.notify("No change.", timeout=2)
            return
        conflicts = list(result.conflicts)
        if conflicts:
            names = ", ".join(Path(c).name for c in conflicts[:3])
            self.notify(f"{what}: {len(conflicts)} caption(s) changed on disk and were NOT overwritten: {names}. "
                        "They were reloaded; review and retry.", severity="warning", timeout=10)
        elif not result.errors:
            self.notify(f"{what}: {len(result.applied)} caption(s) written. u undoes.", timeout=3)
        if result.errors:  # read-only, another user's, a symlink out of the dataset: each says why
            path, reason = result.errors[0]
            more = f" (and {len(result.errors) - 1} more)" if len(result.errors) > 1 else ""
            self.notify(f"{what}: {len(result.applied)} written; {len(result.errors)} NOT written: "
                        f"{Path(path).name}: {reason}{more}", severity="error", timeout=10)

    def undo(self) -> None:
        self._step("undo")

    def redo(self) -> None:
        self._step("redo")

    def _step(self, which: str) -> None:
        self.app.run_worker(lambda: self._run(which), thread=True, exclusive=True, group="journal")

    def _run(self, which: str) -> None:
        try:
            result = self.model.undo() if which == "undo" else self.model.redo()  # the model announces
        except Exception as exc:  # noqa: BLE001 - show the journal's message
            call_ui(self.app, self.notify, f"{which} failed: {exc}", severity="error")
            return
        call_ui(self.app, self._done, which, result)

    def _done(self, which: str, result: ApplyResult | None) -> None:
        if result is None:
            self.notify(f"Nothing to {which}.", timeout=2)
            return
        desc = result.description
        msg = f"{which.capitalize()} done: {desc}" if desc else f"{which.capitalize()} done."
        if result.conflicts:
            msg += f" {len(result.conflicts)} caption(s) changed on disk were left as they are."
        self.notify(msg, severity="warning" if result.conflicts else "information", timeout=4)
