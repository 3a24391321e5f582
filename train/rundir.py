"""The run directory: resolved config, ``events.jsonl``, ``status.json``, saved files, ``state/``, requests.

The format is stable and documented in docs/RUNS.md; ``kiln runs`` / ``kiln watch`` and the TUI read it.
No heavy imports here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from curator.fsutil import atomic_write_bytes

EVENTS = "events.jsonl"
STATUS = "status.json"
_HOST = socket.gethostname()
CONFIG = "config.toml"
LOG = "train.log"
STATE_DIR = "state"
SAMPLES_DIR = "samples"
STOP_REQUEST = "stop.request"
SAVE_REQUEST = "save.request"
FORMAT_VERSION = 1

EVENT_TYPES = ("start", "phase", "step", "epoch", "save", "sample", "warning", "error", "end")
STATES = ("starting", "running", "finished", "failed", "stopped")


class RunDir:
    """One training run's folder. ``emit`` appends an event and forwards it to listeners (the display)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self._status: dict[str, Any] = {"format": FORMAT_VERSION, "state": "starting", "pid": os.getpid(),
                                         "step": 0, "total_steps": None}

    # -- layout ---------------------------------------------------------------------------------------------
    @property
    def events_path(self) -> Path:
        return self.path / EVENTS

    @property
    def status_path(self) -> Path:
        return self.path / STATUS

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def log_path(self) -> Path:
        return self.path / LOG

    @property
    def state_dir(self) -> Path:
        return self.path / STATE_DIR

    @property
    def samples_dir(self) -> Path:
        return self.path / SAMPLES_DIR

    def create(self, config_toml: str) -> None:
        """Make the folder and write the resolved config (keeps an existing events.jsonl: resume appends)."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.config_path, config_toml.encode("utf-8"))

    # -- events and status ---------------------------------------------------------------------------------
    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        """Append one event (``t`` = unix time, ``type``) to events.jsonl and hand it to the listeners."""
        event = {"t": round(time.time(), 3), "type": type, **fields}
        line = json.dumps(event, ensure_ascii=False, default=_jsonable, allow_nan=False) + "\n"
        with open(self.events_path, "a", encoding="utf-8") as fh:
            fh.write(line)
        event = json.loads(line)  # listeners see exactly what the file holds
        for listener in self.listeners:
            listener(event)
        return event

    def update_status(self, **fields: Any) -> None:
        """Merge ``fields`` into status.json and write it atomically (temp file + fsync + rename)."""
        self._status.update(fields)
        self._status["pid"] = os.getpid()
        self._status["host"] = _HOST  # a pid means something only on this machine (runs on a shared disk)
        self._status["updated_at"] = round(time.time(), 3)
        data = json.dumps(self._status, indent=2, default=_jsonable, allow_nan=False) + "\n"
        atomic_write_bytes(self.status_path, data.encode("utf-8"))

    # -- requests from other processes ------------------------------------------------------------------------
    def stop_requested(self) -> bool:
        return (self.path / STOP_REQUEST).exists()

    def take_save_request(self) -> bool:
        """True (once) when someone asked for a save by creating save.request."""
        request = self.path / SAVE_REQUEST
        if not request.exists():
            return False
        try:
            request.unlink()
        except FileNotFoundError:
            return False
        return True

    def clear_requests(self) -> None:
        for name in (STOP_REQUEST, SAVE_REQUEST):
            try:
                (self.path / name).unlink()
            except FileNotFoundError:
                pass


def request_stop(run_dir: Path) -> None:
    """Ask a running trainer to save and stop at its next step (what `kiln stop` and the TUI do)."""
    (Path(run_dir) / STOP_REQUEST).write_text(f"{time.time():.3f}\n", encoding="utf-8")


def request_save(run_dir: Path) -> None:
    """Ask a running trainer to save a LoRA (and state) at its next step."""
    (Path(run_dir) / SAVE_REQUEST).write_text(f"{time.time():.3f}\n", encoding="utf-8")


def read_events(run_dir: Path) -> Iterator[dict[str, Any]]:
    """The events of a run, skipping a torn last line (a writer may be mid-write)."""
    path = Path(run_dir) / EVENTS
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def read_status(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(run_dir) / STATUS).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


class StopSignal:
    """SIGINT/SIGTERM set ``requested``; the loop saves and exits at the next step. A second SIGINT aborts."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside a test runner thread)
                pass

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop right now, without saving
        self.requested = signal.Signals(signum).name


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, set | tuple):
        return list(value)
    return str(value)
