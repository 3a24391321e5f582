"""Crash-safe file writes: every user file kiln writes goes through here.

A write never changes a file in place. The new content goes to a temporary file in the same folder, is flushed
to disk (fsync), then renamed over the target (atomic on POSIX), and the folder is fsynced so the rename itself
survives a power cut. A reader (or a crash) therefore sees either the old bytes or the new bytes, never a mix.
The target keeps its permission bits; a new file gets the usual ``0o666 & ~umask``.

``atomic_write_many`` does the same for thousands of files at once with a single filesystem sync instead of
one fsync per file (the data of every temporary file is durable before any rename happens).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import stat
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

TEMP_PREFIX = ".kiln-tmp-"
"""Temporary files are named ``.kiln-tmp-<target name>.<random>``; leftovers can be removed safely."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _target_mode(path: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def fsync_dir(folder: Path) -> None:
    """fsync a directory so renames/creations inside it are durable (no-op where unsupported)."""
    if sys.platform == "win32":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_temp(path: Path, data: bytes, sync: bool) -> Path:
    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX + path.name + ".", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        os.chmod(tmp, _target_mode(path))
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (temp file in the same folder, fsync, rename, fsync dir)."""
    path = Path(path)
    tmp = _write_temp(path, data, sync=True)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def _syncfs(folder: Path) -> bool:
    """Flush the whole filesystem holding ``folder`` (Linux ``syncfs``). Returns False when unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return False
    try:
        return libc.syncfs(fd) == 0
    except AttributeError:
        return False
    finally:
        os.close(fd)


def atomic_write_many(items: Iterable[tuple[Path, bytes]]) -> list[Path]:
    """Atomically replace many files; each file individually is old-or-new at any moment.

    All temporary files are written first, made durable with one filesystem sync (or one fsync each where
    ``syncfs`` is unavailable), then renamed one by one; finally each touched folder is fsynced.
    Returns the targets in the order they were renamed. On error, unrenamed temporaries are removed.
    """
    pending: list[tuple[Path, Path]] = []
    done: list[Path] = []
    try:
        items = [(Path(p), d) for p, d in items]
        if not items:
            return []
        fast = sys.platform.startswith("linux")
        for path, data in items:
            pending.append((path, _write_temp(path, data, sync=not fast)))
        if fast and not _syncfs(items[0][0].parent):
            for _path, tmp in pending:
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        for path, tmp in pending:
            os.replace(tmp, path)
            done.append(path)
        for folder in {p.parent for p in done}:
            fsync_dir(folder)
        return done
    finally:
        for _path, tmp in pending[len(done):]:
            with contextlib.suppress(OSError):
                tmp.unlink()


def remove_stale_temps(folder: Path) -> int:
    """Delete kiln temporary files left in ``folder`` by a killed process. Returns how many were removed."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if entry.name.startswith(TEMP_PREFIX) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed += 1
    return removed
