"""Loading the dataset in the background: what the index knows at once, then the incremental scan (adding
images as they are indexed), then the health checks and the duplicate search — one worker, group ``load``.

The loader decides when the views see new rows (``RowsLoaded`` on the model's feed): at once from a warm
index, then at most every ``SCAN_REFRESH_SECONDS`` while a cold scan adds rows, then after the checks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from textual.app import App

from tui.model import DatasetModel, ModelError
from tui.shell.threads import call_ui
from tui.state import RowsLoaded

if TYPE_CHECKING:
    from curator.scan.scanner import ScanProgress, ScanSummary

SCAN_REFRESH_SECONDS = 0.5  # a cold scan shows newly indexed images at most this often
FREEZE_EVERY_SECONDS = 5.0  # while rows arrive in batches, freeze the long-lived objects at most this often
# A warm start's caption read (100,000 captions: seconds of CPU in the loader thread, which takes the GIL from the
# UI thread every few milliseconds) waits until the listed rows were painted and no key came for this long (at
# most CAPTIONS_WAIT_MAX_SECONDS): the first keys on the new list are answered at full speed (measured at 100,000
# images: the first key 77 ms with the read starting at once, ~30 ms without it; bench/bench_tui.py --only start).
CAPTIONS_QUIET_SECONDS = 0.3
CAPTIONS_WAIT_MAX_SECONDS = 2.0
CAPTIONS_WAIT_MIN_ROWS = 20_000  # fewer captions are read in a fraction of a second: at once

ProgressReporter = Callable[["ScanProgress"], None]


class ScanStopped(Exception):
    """Raised from the scan's progress callback when the app closes mid-scan."""


class DatasetLoader:
    """Runs the load pipeline for ``model``; tells the user through ``note`` (the status line), ``warn``
    (a toast) and ``fatal`` (the dataset cannot be used)."""

    def __init__(self, app: App[None], model: DatasetModel, note: Callable[[str], None],
                 warn: Callable[[str], None], fatal: Callable[[str], None],
                 last_input: Callable[[], float] = lambda: 0.0) -> None:
        self.app = app
        self.last_input = last_input  # time.monotonic() of the user's last key or click
        self.model = model
        self.note = note
        self.warn = warn
        self.fatal = fatal
        self.loaded = False  # the scan and the health checks are done
        self.scanning = False
        self._started = False
        self._frozen_at = 0.0

    def start(self) -> None:
        """(Re)load: the first time from the index, then a scan; later calls rescan."""
        self.app.run_worker(self._load, thread=True, exclusive=True, group="load", name="load dataset")

    def _ui(self, callback: Callable[..., object], *args: object) -> None:
        call_ui(self.app, callback, *args)

    def _load(self) -> None:
        model = self.model
        first, self._started = not self._started, True
        try:
            model.finish_preload()  # the dataset opened and its indexed rows built while the UI started
        except (ModelError, ImportError) as exc:
            self._ui(self.fatal, str(exc))
            return
        if model.index_note:
            self._ui(self.warn, model.index_note)
        from_index = False
        if first:
            if not model.rows:
                quick = model.indexed_records()
                if quick:
                    model.load_rows(quick, captions=False)
            rows = model.rows
            if rows:  # warm index: the list at once, then the captions
                from_index = True
                self._ui(self._rows_loaded, False, False)
                if len(rows) >= CAPTIONS_WAIT_MIN_ROWS:
                    self._wait_for_quiet()
                model.read_captions(rows)
                model.vocabulary()  # counted here, not on the UI thread
                self._ui(self._rows_loaded, False, True)
        self.scanning = True
        self._ui(self.note, "scanning…")
        try:
            summary = model.scan(self._progress_reporter())
            if not (from_index and model.rows_match_scan(summary)):
                model.load_rows(model.scanned_records())
                model.vocabulary()
        except ScanStopped:
            self.scanning = False
            return
        except Exception as exc:  # noqa: BLE001 - a failed scan still leaves the indexed rows usable
            self.scanning = False
            self._ui(self.fatal, f"scan failed: {exc}")
            return
        self.scanning = False
        self._ui(self._rows_loaded, False, False)
        skipped = skipped_note(model, summary, first)
        if skipped:
            self._ui(self.warn, skipped)
        self._ui(self.note, "checking health…")
        flags = None
        try:
            flags = model.all_flags(refresh=False)
            model.duplicate_clusters()  # the health pass just found them: kept for the Health view
        except Exception as exc:  # noqa: BLE001 - flags are advisory
            self._ui(self.warn, f"health checks failed: {exc}")
        if flags is not None:
            model.set_flags(flags)
        self._ui(self._rows_loaded, True, False)

    def _wait_for_quiet(self) -> None:
        """Until the rows just announced are on screen and then ``CAPTIONS_QUIET_SECONDS`` pass without a key
        (at most ``CAPTIONS_WAIT_MAX_SECONDS`` in all, or until the app closes)."""
        start = time.monotonic()
        painted = threading.Event()
        self._ui(self.app.call_after_refresh, painted.set)
        painted.wait(CAPTIONS_WAIT_MAX_SECONDS)
        quiet_from = time.monotonic()
        while self.app.is_running:
            now = time.monotonic()
            quiet = now - max(quiet_from, self.last_input())
            left = CAPTIONS_WAIT_MAX_SECONDS - (now - start)
            if quiet >= CAPTIONS_QUIET_SECONDS or left <= 0:
                return
            time.sleep(min(CAPTIONS_QUIET_SECONDS - quiet, left))

    def _progress_reporter(self) -> ProgressReporter:
        """The scan's ``on_progress``: adds the images just indexed to the rows (with their captions) and
        shows them, at most every ``SCAN_REFRESH_SECONDS`` (the first batch at once)."""
        model = self.model
        shown_at = 0.0
        pending = False

        def report(progress: ScanProgress) -> None:
            nonlocal shown_at, pending
            if not self.app.is_running:
                raise ScanStopped("the app is closing")  # stops the scan; what was indexed stays
            note = f"scanning… {progress.done}/{progress.total} indexed" if progress.total else "scanning…"
            if progress.records:
                model.add_records(progress.records)
                pending = True
            now = time.monotonic()
            if pending and now - shown_at >= SCAN_REFRESH_SECONDS:
                shown_at, pending = now, False
                model.vocabulary()
                self._ui(self._rows_loaded, False, True, note)
            else:
                self._ui(self.note, note)

        return report

    def _rows_loaded(self, final: bool, partial: bool, note: str | None = None) -> None:
        """On the UI thread: the views are told about the rows (``partial``: more are coming)."""
        self.loaded = final or self.loaded
        if not partial or time.monotonic() - self._frozen_at >= FREEZE_EVERY_SECONDS:
            self._frozen_at = time.monotonic()  # full loads always; a running scan's batches now and then
            freeze_long_lived_objects()
        self.model.changes.announce(RowsLoaded(partial=partial))
        if final:
            self.note("")
        elif note is not None:
            self.note(note)


def skipped_note(model: DatasetModel, summary: ScanSummary, first: bool) -> str:
    """What the layout and the scan left out and why (symlink loops, unreadable folders, names that are not
    UTF-8), as the CLI reports it; the layout's warnings only on the first load."""
    from curator.textsafe import printable

    lines = list(model.dataset.layout.warnings) if first else []
    lines += [f"skipped {path}: {why}" for path, why in summary.skipped]
    lines += [f"skipped {name}: the file name is not valid UTF-8" for name in summary.bad_names]
    lines += [f"{folder}/: cannot be read, skipped" for folder in summary.unreadable_dirs]
    if not lines:
        return ""
    shown = "\n".join(printable(line) for line in lines[:5])
    return shown + (f"\n… and {len(lines) - 5} more (kiln scan lists them)" if len(lines) > 5 else "")


def freeze_long_lived_objects() -> None:
    """Move every object alive now (the rows, records, tags of 10,000+ images) out of the cyclic garbage
    collector's reach. They live as long as the dataset is open; left in, each full collection walks all of them
    and stalls the UI for 0.1–0.25 s at random key presses (measured on view switches). Reference counting still
    frees them when they are replaced (rows and records hold no reference cycles); only cyclic garbage among
    them (a widget alive at this moment and later discarded) is never collected, which is why this runs after
    full loads and at most every ``FREEZE_EVERY_SECONDS`` while a scan adds rows."""
    import gc

    gc.freeze()
