"""What state a run is in, from its directory alone: running, finished, failed, stopped, starting or dead.

A run is **dead** when its status says it is going (starting/running) but the process that wrote it is gone
(crashed, killed, machine rebooted) and no ``end`` event was written. Process checks: the pid exists, is not a
zombie, and (on Linux) started before the run's last status write, so a recycled pid is not mistaken for it.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from train.rundir import CONFIG, EVENTS, LOG, STATUS, STOP_REQUEST, read_status
from train.runs.tail import first_event, last_events, read_tail

STATES = ("starting", "running", "finished", "failed", "stopped", "dead")
ACTIVE = ("starting", "running")
STARTING_GRACE_S = 120.0  # a run dir with a log but no status yet counts as starting this long
OTHER_HOST_STALE_S = 1800.0  # a run on another machine with no status update for this long counts as dead


@dataclass
class RunInfo:
    """One run as `kiln runs` lists it."""

    name: str
    dir: Path
    state: str
    step: int = 0
    total_steps: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    loss: float | None = None
    outputs: list[str] = field(default_factory=list)
    started_at: float | None = None
    updated_at: float | None = None
    pid: int | None = None
    phase: str = ""
    message: str = ""
    stop_requested: bool = False
    resumable: bool = False
    log_tail: list[str] = field(default_factory=list)  # filled for dead and failed runs

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def fraction(self) -> float | None:
        return None if not self.total_steps else max(0.0, min(1.0, self.step / self.total_steps))

    def to_json(self) -> dict[str, Any]:
        """The `kiln runs --json` record (documented fields first)."""
        data = asdict(self)
        out = {"name": self.name, "dir": str(self.dir), "state": self.state, "step": self.step,
               "total_steps": self.total_steps, "loss": self.loss, "outputs": list(self.outputs)}
        for key, value in data.items():
            if key not in out:
                out[key] = str(value) if isinstance(value, Path) else value
        return out


def is_run_dir(path: Path) -> bool:
    """A folder kiln's trainer wrote: it has events.jsonl or status.json (or a config.toml and train.log)."""
    path = Path(path)
    return (path / EVENTS).is_file() or (path / STATUS).is_file() or (
        (path / CONFIG).is_file() and (path / LOG).is_file())


def read_run(run_dir: Path, known_pid: int | None = None, launched_at: float | None = None,
             log_lines: int = 15) -> RunInfo:
    """The state of the run in ``run_dir``. ``known_pid`` / ``launched_at``: what a launcher recorded (used
    until the trainer writes its own status, e.g. right after ``kiln resume``)."""
    run_dir = Path(run_dir)
    status = read_status(run_dir) or {}
    events_path = run_dir / EVENTS
    tail = last_events(events_path, max_bytes=16384)
    first = first_event(events_path)
    end = next((e for e in reversed(tail) if e.get("type") in ("end", "start", "phase")), None)
    ended = end if end is not None and end.get("type") == "end" else None
    start = next((e for e in reversed(tail) if e.get("type") == "start"), None)
    last_step = next((e for e in reversed(tail) if e.get("type") == "step"), None)

    name = (start or {}).get("name") or run_dir.name
    info = RunInfo(name=str(name), dir=run_dir, state="starting")
    info.pid = _int(status.get("pid")) or _int((start or {}).get("pid")) or known_pid
    info.step = _int(status.get("step")) or _int((last_step or {}).get("step")) or 0
    info.total_steps = _int(status.get("total_steps")) or _int((start or last_step or {}).get("total_steps"))
    info.epoch = _int(status.get("epoch"))
    info.epochs = _int(status.get("epochs")) or _int((start or {}).get("epochs"))
    loss = status.get("loss", (last_step or {}).get("loss"))
    info.loss = float(loss) if isinstance(loss, int | float) and not isinstance(loss, bool) else None
    info.phase = str(status.get("phase") or "")
    info.message = str(status.get("message") or "")
    info.updated_at = _float(status.get("updated_at"))
    info.started_at = _float((first or {}).get("t")) or _mtime(run_dir / CONFIG) or _mtime(run_dir / LOG)
    info.stop_requested = (run_dir / STOP_REQUEST).exists()
    info.resumable = (run_dir / "state").is_dir() and any((run_dir / "state").iterdir())
    info.outputs = list_outputs(run_dir)

    written = str(status.get("state") or "")
    relaunched = (known_pid is not None and launched_at is not None and known_pid != info.pid
                  and launched_at > (info.updated_at or 0) and pid_alive(known_pid))
    if relaunched:  # resumed: the new process has not written its status yet
        info.state, info.pid = "starting", known_pid
    elif written in ("finished", "failed", "stopped"):
        info.state = written
    elif ended is not None:  # an end event without a final status write
        info.state = {"finished": "finished", "stopped": "stopped"}.get(str(ended.get("reason")), "failed")
        info.message = info.message or str(ended.get("message") or "")
    elif _other_host(status):
        # Written by a trainer on another machine (a shared folder): its pid means nothing here. Trust the
        # status while it keeps being updated.
        silent_s = time.time() - info.updated_at if info.updated_at is not None else 0.0
        stale = silent_s > OTHER_HOST_STALE_S
        info.state = "dead" if stale else (written if written in ACTIVE else "starting")
        if stale:
            info.message = (f"no news from {status.get('host')} for {silent_s / 60:.0f} min (the trainer runs on "
                            "that machine)")
    elif info.pid is not None and pid_alive(info.pid, not_after=info.updated_at):
        info.state = written if written in ACTIVE else "starting"
    elif info.pid is None and not status and not tail:
        # Launched, nothing written yet: starting while the log is young, dead after that.
        young = (_mtime(run_dir / LOG) or info.started_at or 0) > time.time() - STARTING_GRACE_S
        info.state = "starting" if young else "dead"
    else:
        info.state = "dead"
    if info.state == "dead" and not info.message:
        info.message = "the training process ended without saying why (killed, crashed or the machine restarted)"
    if info.state in ("dead", "failed"):
        info.log_tail = log_tail(run_dir, log_lines)
    return info


def list_outputs(run_dir: Path) -> list[str]:
    """The LoRA files in the run directory, oldest first."""
    try:
        files = [p for p in Path(run_dir).glob("*.safetensors") if p.is_file()]
    except OSError:
        return []
    files.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
    return [str(p) for p in files]


def log_tail(run_dir: Path, lines: int = 15, max_bytes: int = 32768) -> list[str]:
    """The last ``lines`` lines of train.log (control characters removed), or of events as a fallback."""
    from curator.textsafe import printable

    tail = read_tail(Path(run_dir) / LOG, max_bytes)
    if tail is None:
        return []
    text = tail[0].decode("utf-8", errors="replace").replace("\r", "\n")
    out = [printable(line) for line in text.split("\n") if line.strip()]
    return out[-lines:]


def pid_alive(pid: int, not_after: float | None = None) -> bool:
    """True if ``pid`` is a live (non-zombie) process; with ``not_after`` (a unix time the run's process was
    known alive), a process that started after it is a recycled pid, not ours."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    except OSError:
        return False
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc (macOS): trust kill(0)
    state, start_ticks = stat
    if state in ("Z", "X"):
        return False
    if not_after is not None:
        started = _process_start_time(start_ticks)
        if started is not None and started > not_after + 2.0:
            return False
    return True


def _proc_stat(pid: int) -> tuple[str, int] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        rest = raw[raw.rindex(")") + 2:].split()
        return rest[0], int(rest[19])
    except (ValueError, IndexError):
        return None


def _process_start_time(start_ticks: int) -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                boot = int(line.split()[1])
                return boot + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    return None


def _other_host(status: dict[str, Any]) -> bool:
    """True when status.json names a host (``host``) other than this one."""
    import socket

    host = status.get("host")
    return isinstance(host, str) and bool(host) and host != socket.gethostname()


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
