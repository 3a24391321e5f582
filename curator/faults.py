"""Faults of the machine, told to the user: a full disk, a busy or read-only index, a read-only folder.

kiln never turns one of these into a traceback or into a pile of per-file messages. Each becomes one exception
whose message says what happened, where (the disk by its mount point, the file), and what to do:

* :class:`DiskFullError` (an ``OSError`` with ``errno.ENOSPC``): the disk holding a path has less free space
  than an operation needs. :func:`ensure_space` raises it before anything is written; :func:`disk_full` makes
  :func:`is_disk_full` recognises a real ``ENOSPC``/``EDQUOT`` or SQLite's "database or disk is full".
* :func:`index_error` turns a ``sqlite3.Error`` from the dataset index into a :class:`DiskFullError`, an
  :class:`IndexBusyError` ("database is locked": another kiln process holds the index), an
  :class:`IndexReadOnlyError` or an :class:`IndexDamagedError`, each with the index's path in the message.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})

# SQLite's primary result codes (the low byte of ``sqlite_errorcode``)
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_IOERR = 5, 6, 8, 10
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 11, 13, 14, 26


def format_bytes(n: int) -> str:
    """1536 -> '1.5 KiB' (binary units, as ``df -h`` counts)."""
    value = float(max(0, n))
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def _existing(path: Path | str) -> str:
    """``path`` or its nearest existing ancestor (a file about to be created is judged by its folder)."""
    current = os.path.abspath(path)
    while not os.path.exists(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current


def mount_point(path: Path | str) -> str:
    """The mount point of the filesystem holding ``path`` (the disk a user frees space on)."""
    current = os.path.realpath(_existing(path))
    while not os.path.ismount(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current


def free_space(path: Path | str) -> int | None:
    """Bytes an unprivileged user can still write on the filesystem holding ``path`` (None: unknown)."""
    try:
        st = os.statvfs(_existing(path))
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def block_size(path: Path | str) -> int:
    """The allocation unit of the filesystem holding ``path`` (a 10-byte caption still takes one)."""
    try:
        return max(512, os.statvfs(_existing(path)).f_frsize)
    except (OSError, AttributeError):
        return 4096


def space_for(sizes: list[int], block: int) -> int:
    """Bytes that files of ``sizes`` take on disk: each rounded up to whole blocks."""
    return sum(-(-max(1, n) // block) * block for n in sizes)


class DiskFullError(OSError):
    """The disk holding ``path`` has not enough free space for ``what``. ``mount``: its mount point;
    ``free``/``needed``: bytes (None when unknown)."""

    NOTHING_CHANGED = "nothing was changed"

    def __init__(self, path: Path | str, what: str, needed: int | None = None, *, note: str = NOTHING_CHANGED):
        self.path = str(path)
        self.mount = mount_point(path)
        self.free = free_space(path)
        self.needed = needed
        self.what = what
        self.note = note
        super().__init__(errno.ENOSPC, self._message(), self.path)

    def _message(self) -> str:
        free = "unknown free space" if self.free is None else f"{format_bytes(self.free)} free"
        if self.needed is not None:
            need = f"{self.what} needs {format_bytes(self.needed)}"
            if self.free is not None and self.needed > self.free:
                need += f": free at least {format_bytes(self.needed - self.free)} there"
        else:
            need = f"{self.what} needs more: free some space there"
        tail = f"; {self.note}" if self.note else ""
        return f"no space left on {self.mount} (the disk holding {self.path}): {free}, {need}{tail}"

    def __str__(self) -> str:
        return self.strerror or ""


INDEX_MIN_NEEDS = 128 * 1024  # any write to a WAL database: its -shm (32 KiB), WAL frames, b-tree pages
_NEARLY_FULL = 1 << 20  # below this much free space, a SQLite I/O error is taken for a full disk


def is_disk_full(exc: BaseException, path: Path | str | None = None) -> bool:
    """A real out-of-space fault: ``ENOSPC``/``EDQUOT``, SQLite's SQLITE_FULL, or (given the database's
    ``path``) a SQLite I/O error on a disk with almost nothing free (growing the -shm file of a WAL database
    on a full disk fails as SQLITE_IOERR_SHMSIZE)."""
    if isinstance(exc, DiskFullError):
        return True
    if isinstance(exc, OSError):
        return exc.errno in DISK_FULL_ERRNOS
    if isinstance(exc, sqlite3.Error):
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        if code == _SQLITE_FULL or "disk is full" in str(exc):
            return True
        if (code == _SQLITE_IOERR or "disk I/O error" in str(exc)) and path is not None:
            free = free_space(path)
            return free is not None and free < _NEARLY_FULL
    return False


def ensure_space(path: Path | str, needed: int, what: str) -> None:
    """Raise :class:`DiskFullError` when the disk holding ``path`` has less than ``needed`` bytes free."""
    free = free_space(path)
    if free is not None and free < needed:
        raise DiskFullError(path, what, needed)


def write_refusal(exc: OSError) -> str:
    """Why a file could not be written, in words a user can act on (per-file messages of bulk edits)."""
    code = exc.errno
    if code == errno.EROFS:
        return f"the disk holding it is mounted read-only ({mount_point(exc.filename or '.')})"
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied: the file or its folder is read-only, immutable (chattr +i) or another user's"
    return exc.strerror or str(exc)


class IndexFaultError(OSError):
    """The dataset index could not do what was asked; the message says why and what to do."""


class IndexBusyError(IndexFaultError):
    """SQLite's "database is locked": another process held the index longer than kiln waits."""


class IndexReadOnlyError(IndexFaultError):
    """The index file or its folder cannot be written."""


class IndexDamagedError(IndexFaultError):
    """The index file is not a database kiln can read (damaged, or not kiln's)."""


def index_error(
    exc: sqlite3.Error,
    db_path: Path | str,
    what: str,
    *,
    needed: int | None = None,
    note: str = DiskFullError.NOTHING_CHANGED,
) -> OSError:
    """The user-facing error for ``exc``, raised by SQLite while ``what`` on the index at ``db_path``
    (``needed``/``note``: for a full disk, the space the operation needs and what became of the files)."""
    if is_disk_full(exc, db_path):
        return DiskFullError(db_path, what, needed or INDEX_MIN_NEEDS, note=note)
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    text = str(exc)
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED) or "locked" in text:
        return IndexBusyError(
            errno.EBUSY,
            f"the dataset index {db_path} is busy: another kiln process (a scan, the TUI, kiln tags) has held it "
            f"for longer than kiln waits ({busy_timeout():g} s, env KILN_DB_TIMEOUT) while {what}; "
            "retry when it is done",
            str(db_path),
        )
    if code == _SQLITE_READONLY or "readonly" in text:
        return IndexReadOnlyError(
            errno.EROFS, f"the dataset index {db_path} is read-only while {what} ({text})", str(db_path)
        )
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return IndexDamagedError(
            errno.EIO,
            f"the dataset index {db_path} is damaged ({text}) while {what}; move it away and run kiln scan to "
            "rebuild it (the caption journal in it is lost with it)",
            str(db_path),
        )
    return IndexFaultError(errno.EIO, f"the dataset index {db_path} failed while {what}: {text}", str(db_path))


def busy_timeout() -> float:
    """Seconds a kiln process waits for another one's lock on the index (env ``KILN_DB_TIMEOUT``, default 30)."""
    try:
        return max(0.0, float(os.environ.get("KILN_DB_TIMEOUT", "30")))
    except ValueError:
        return 30.0


def describe(exc: BaseException) -> str:
    """One printable line for a fault (an ``OSError`` or a ``sqlite3.Error``): kiln's own errors as they are,
    a plain ``OSError`` as ``<file>: <reason>``."""
    from curator.textsafe import printable

    if isinstance(exc, sqlite3.Error):
        return printable(f"the dataset index failed: {exc}")
    if not isinstance(exc, OSError):
        return printable(str(exc))
    text = exc.strerror or str(exc)
    if exc.filename and str(exc.filename) not in text:
        text = f"{exc.filename}: {text}"
    return printable(text)
