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
from types import FrameType
from typing import Any, Protocol, TypeAlias

from curator.fsutil import atomic_write_bytes

Event: TypeAlias = dict[str, Any]
"""One line of events.jsonl, a JSON object: ``t``, ``type`` and the type's keys (docs/RUNS.md)."""
Listener: TypeAlias = Callable[[Event], None]
SignalHandler: TypeAlias = Callable[[int, FrameType | None], object] | int | signal.Handlers | None

EVENTS = "events.jsonl"
STATUS = "status.json"
_HOST = socket.gethostname()
CONFIG = "config.toml"
LOG = "train.log"
STATE_DIR = "state"
SAMPLES_DIR = "samples"
STOP_REQUEST = "stop.request"
SAVE_REQUEST = "save.request"
PID_FILE = "trainer.pid"
FORMAT_VERSION = 1

EVENT_TYPES = ("start", "phase", "schedule", "step", "validation", "epoch", "save", "sample", "warning", "error",
               "end")
STATES = ("starting", "running", "finished", "failed", "stopped")


class RunLog(Protocol):
    """What the training loop reports to and polls: a :class:`RunDir` on the main process, :class:`QuietRun`
    on the others."""

    def emit(self, type: str, **fields: object) -> Event: ...

    def update_status(self, **fields: object) -> None: ...

    def stop_requested(self) -> bool: ...

    def take_save_request(self) -> bool: ...


class QuietRun:
    """The run as the non-main processes see it: events go nowhere, no requests arrive (the main process
    shares the requests it sees)."""

    def emit(self, type: str, **fields: object) -> Event:
        return {"type": type, **fields}

    def update_status(self, **fields: object) -> None:
        pass

    def stop_requested(self) -> bool:
        return False

    def take_save_request(self) -> bool:
        return False


class RunDir:
    """One training run's folder. ``emit`` appends an event and forwards it to listeners (the display)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.listeners: list[Listener] = []
        self.write_error: OSError | None = None  # the first failure to write events/status (a full disk)
        self._status: dict[str, Any] = {"format": FORMAT_VERSION, "state": "starting", "pid": os.getpid(),
                                         "step": 0, "total_steps": None}

    @classmethod
    def start(cls, path: Path, config_toml: str, listeners: list[Listener]) -> RunDir:
        """The run directory of a run that starts now: folder and resolved config written, stale requests
        cleared, ``listeners`` told every event."""
        run = cls(path)
        run.create(config_toml)
        run.clear_requests()
        run.listeners.extend(listeners)
        return run

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
    def emit(self, type: str, **fields: object) -> Event:
        """Append one event (``t`` = unix time, ``type``) to events.jsonl and hand it to the listeners."""
        line = json.dumps({"t": round(time.time(), 3), "type": type, **fields}, ensure_ascii=False,
                          default=_jsonable, allow_nan=False) + "\n"
        try:
            with open(self.events_path, "a", encoding="utf-8") as fh:
                fh.write(line)
        except OSError as exc:  # a full disk: the run goes on (its saves say why they fail); told once
            self._cannot_write(self.events_path, exc)
        event: Event = json.loads(line)  # listeners see exactly what the file holds
        for listener in self.listeners:
            listener(event)
        return event

    def update_status(self, **fields: object) -> None:
        """Merge ``fields`` into status.json and write it atomically (temp file + fsync + rename)."""
        self._status.update(fields)
        self._status["pid"] = os.getpid()
        self._status["host"] = _HOST  # a pid means something only on this machine (runs on a shared disk)
        self._status["updated_at"] = round(time.time(), 3)
        data = json.dumps(self._status, indent=2, default=_jsonable, allow_nan=False) + "\n"
        try:
            atomic_write_bytes(self.status_path, data.encode("utf-8"))
        except OSError as exc:  # the previous status.json stays whole (atomic write)
            self._cannot_write(self.status_path, exc)

    def _cannot_write(self, path: Path, exc: OSError) -> None:
        """Say once on stderr that the run log cannot be written (and why), keep going."""
        if self.write_error is not None:
            return
        self.write_error = exc
        import sys

        from curator.faults import describe

        print(f"kiln: cannot write {path}: {describe(exc)}; the run goes on without recording its events",
              file=sys.stderr)

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


def write_pid(run_dir: Path) -> None:
    """Record this process as the run's trainer (``trainer.pid``), first thing, before anything heavy loads:
    whoever started it in the background reads it with :func:`read_pid`."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / PID_FILE, f"{os.getpid()}\n".encode())


def read_pid(run_dir: Path) -> int | None:
    """The pid in ``trainer.pid`` (None when there is none yet or it is unreadable)."""
    try:
        text = (Path(run_dir) / PID_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def read_events(run_dir: Path) -> Iterator[Event]:
    """The events of a run, skipping a torn last line (a writer may be mid-write)."""
    path = Path(run_dir) / EVENTS
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):  # anything else is not an event
                yield event


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """status.json, or None when there is none (yet) or it is not a JSON object."""
    try:
        status = json.loads((Path(run_dir) / STATUS).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return status if isinstance(status, dict) else None


class StopSignal:
    """SIGINT/SIGTERM set ``requested``; the loop saves and exits at the next step. A second SIGINT aborts."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, SignalHandler] = {}

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

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop right now, without saving
        self.requested = signal.Signals(signum).name


def _jsonable(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, set | tuple):
        return list(value)
    return str(value)
