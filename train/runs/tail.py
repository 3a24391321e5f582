"""Follow a growing ``events.jsonl``: read only what is new, never a half-written line."""

from __future__ import annotations

import json
import os
from pathlib import Path

from train.rundir import Event


class EventTail:
    """Incremental reader of one events file. ``read_new()`` returns the complete new events since the last
    call. If the file was replaced or truncated (``kiln train --force`` starts over), ``reset`` becomes True
    and reading restarts from the top; the caller should forget what it knew."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.offset = 0
        self.reset = False
        self._inode: int | None = None
        self._pending = b""

    def read_new(self, limit_bytes: int = 64 * 2**20) -> list[Event]:
        self.reset = False
        try:
            st = os.stat(self.path)
        except OSError:
            if self.offset:
                self._restart()
            return []
        if (self._inode is not None and st.st_ino != self._inode) or st.st_size < self.offset:
            self._restart()
        self._inode = st.st_ino
        if st.st_size == self.offset:
            return []
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read(limit_bytes)
        self.offset += len(data)
        data = self._pending + data
        cut = data.rfind(b"\n") + 1
        self._pending = data[cut:]
        events: list[Event] = []
        for line in data[:cut].splitlines():
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(event, dict) and "type" in event:
                events.append(event)
        return events

    def _restart(self) -> None:
        self.offset = 0
        self._pending = b""
        self._inode = None
        self.reset = True


def read_tail(path: Path, max_bytes: int) -> tuple[bytes, int] | None:
    """The last ``max_bytes`` of a file and the file's size, or None when it can't be read."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            return fh.read(), size
    except OSError:
        return None


def last_events(path: Path, max_bytes: int = 65536) -> list[Event]:
    """The complete events in the last ``max_bytes`` of an events file (cheap on long runs)."""
    tail = read_tail(path, max_bytes)
    if tail is None:
        return []
    data, size = tail
    lines = data.split(b"\n")
    if size > max_bytes:
        lines = lines[1:]  # the first line is probably cut
    lines = lines[:-1]  # after the last newline: empty, or a line being written
    out = []
    for line in lines:
        try:
            event = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(event, dict) and "type" in event:
            out.append(event)
    return out


def first_event(path: Path) -> Event | None:
    try:
        with open(path, "rb") as fh:
            line = fh.readline(1 << 20)
    except OSError:
        return None
    if not line.endswith(b"\n"):
        return None
    try:
        event = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return event if isinstance(event, dict) else None
