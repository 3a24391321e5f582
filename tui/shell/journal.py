"""The journal from the app's side: undo and redo (in a worker), and the one way of telling the user how a
journaled write went: what was written, and for every file that was not, which file and why (changed on disk
since kiln read it, read-only, no permission, …), for an edit, a bulk operation, an undo or a redo alike."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from textual.app import App

from tui.model import DatasetModel
from tui.shell.threads import call_ui

if TYPE_CHECKING:
    from textual.notifications import SeverityLevel

    from curator.tags.journal import ApplyResult

Notify = Callable[..., None]  # App.notify
FILES_NAMED = 8  # files listed by name in a report; the rest are counted


def write_report(result: ApplyResult, what: str, root: Path) -> tuple[str, SeverityLevel]:
    """The message and severity telling how a journaled write went: the files written, then each file that
    was not with its reason (names relative to the dataset ``root``)."""
    problems = [(path, "changed on disk since kiln read it (reloaded, not overwritten)") for path in result.conflicts]
    problems += list(result.errors)
    written = len(result.applied)
    if not problems:
        return f"{what}: {written} caption(s) written. u undoes.", "information"
    done = f"{written} caption(s) written" if written else "nothing written"
    lines = [f"{what}: {done}, {len(problems)} not written:"]
    for path, reason in problems[:FILES_NAMED]:
        lines.append(f"  {_name(path, root)}: {reason}")
    if len(problems) > FILES_NAMED:
        more = f"  … and {len(problems) - FILES_NAMED} more"
        lines.append(more + (f" (kiln tags history --show {result.entry_id})" if result.entry_id else ""))
    if written:
        lines.append("u undoes the written ones.")
    return "\n".join(lines), "warning" if written else "error"


def _name(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


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
        message, severity = write_report(result, what, self.model.root)
        self.notify(message, severity=severity, timeout=3 if severity == "information" else 15)

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
        what = f"{which.capitalize()} of {result.description}" if result.description else which.capitalize()
        if result.ok:
            self.notify(f"{what}: done, {len(result.applied)} caption(s) written.", timeout=4)
            return
        message, severity = write_report(result, what, self.model.root)
        self.notify(message.replace("u undoes the written ones.", ""), severity=severity, timeout=15)
