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
import itertools
import os
import stat
import sys
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


_counter = itertools.count()


def _write_temp(path: Path, data: bytes, sync: bool) -> Path:
    """Write ``data`` to a new temporary file next to ``path`` with ``path``'s permission bits."""
    mode = _target_mode(path)
    while True:
        tmp = path.parent / f"{TEMP_PREFIX}{path.name}.{os.getpid()}.{next(_counter)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
            break
        except FileExistsError:
            continue
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.close(fd)
    if not hasattr(os, "fchmod"):  # pragma: no cover - Windows
        os.chmod(tmp, mode)
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


_PARALLEL_MIN = 32  # below this many files, threads cost more than they save
_WORKERS = 16  # file creation and rename latency (directory updates) overlaps well across threads


def _parallel_map(fn, args: list) -> list:
    """``[fn(a) for a in args]`` on a thread pool for big batches; exceptions are returned, not raised."""

    def safe(a):
        try:
            return fn(a)
        except OSError as exc:
            return exc

    if len(args) < _PARALLEL_MIN:
        return [safe(a) for a in args]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(_WORKERS, len(args) // 8 + 1)) as pool:
        return list(pool.map(safe, args))


def atomic_write_many(items: Iterable[tuple[Path, bytes]]) -> list[Path]:
    """Atomically replace many files; each file individually is old-or-new at any moment.

    All temporary files are written first (in parallel for big batches), made durable with one filesystem sync
    (or one fsync each where ``syncfs`` is unavailable), then renamed over their targets; finally each touched
    folder is fsynced. Returns the targets renamed. If any temporary file cannot be written nothing is renamed;
    if a rename fails the others still happen. Either way the first ``OSError`` is raised after cleaning up.
    """
    items = [(Path(p), d) for p, d in items]
    if not items:
        return []
    fast = sys.platform.startswith("linux")
    temps = _parallel_map(lambda it: _write_temp(it[0], it[1], sync=not fast), items)
    errors = [t for t in temps if isinstance(t, OSError)]
    if errors:
        for t in temps:
            if not isinstance(t, OSError):
                with contextlib.suppress(OSError):
                    t.unlink()
        raise errors[0]
    pairs = list(zip([p for p, _d in items], temps, strict=True))
    try:
        if fast and not _syncfs(items[0][0].parent):
            for _path, tmp in pairs:
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
    except BaseException:
        for _path, tmp in pairs:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise
    outcomes = _parallel_map(lambda pt: os.replace(pt[1], pt[0]), pairs)
    done = [path for (path, _tmp), out in zip(pairs, outcomes, strict=True) if not isinstance(out, OSError)]
    for folder in {p.parent for p in done}:
        fsync_dir(folder)
    failed = [(tmp, out) for (_path, tmp), out in zip(pairs, outcomes, strict=True) if isinstance(out, OSError)]
    for tmp, _out in failed:
        with contextlib.suppress(OSError):
            tmp.unlink()
    if failed:
        raise PartialWriteError(done, failed[0][1])
    return done


class PartialWriteError(OSError):
    """Some renames of :func:`atomic_write_many` failed; ``done`` lists the files that were replaced."""

    def __init__(self, done: list[Path], cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror, cause.filename)
        self.done = done


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
