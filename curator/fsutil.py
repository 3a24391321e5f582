"""Crash-safe file writes: every user file kiln writes goes through here.

A write never changes a file in place. The new content goes to a temporary file in the same folder, is
flushed to disk (fsync), then renamed over the target (atomic on POSIX), and the folder is fsynced so the
rename itself survives a power cut. A reader (or a crash) therefore sees either the old bytes or the new
bytes, never a mix. The target keeps its permission bits; a new file gets the usual ``0o666 & ~umask``.

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


def _resolve_link(path: Path) -> Path:
    """Write through a symlink to its target (renaming over the link would replace the link itself)."""
    return Path(os.path.realpath(path)) if os.path.islink(path) else path


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (temp file in the same folder, fsync, rename, fsync dir).
    A symlink is written through (its target is replaced)."""
    path = _resolve_link(Path(path))
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


def _workers() -> int:
    """Threads for bulk renames (``KILN_IO_WORKERS``, default 16); ``1`` makes bulk writes strictly one file
    after another. ``KILN_IO_CREATE_WORKERS`` (default 1) does the same for creating the temporary files."""
    try:
        return max(1, int(os.environ.get("KILN_IO_WORKERS", "16")))
    except ValueError:
        return 16


def _env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, str(default))))
    except ValueError:
        return default


def _parallel_map(fn, args: list, workers: int | None = None) -> list:
    """``[fn(a) for a in args]`` on a thread pool for big batches; exceptions are returned, not raised."""

    def safe(a):
        try:
            return fn(a)
        except OSError as exc:
            return exc

    workers = min(workers or _workers(), _workers())
    if len(args) < _PARALLEL_MIN or workers == 1:
        return [safe(a) for a in args]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(workers, len(args) // 8 + 1)) as pool:
        return list(pool.map(safe, args))


_PROBE = 16  # renames timed serially before deciding whether a thread pool pays off
_SLOW_RENAME_S = 0.0003  # on tmpfs / a fast SSD a rename takes ~0.01-0.05 ms; a busy disk takes milliseconds


def _rename_all(pairs: list[tuple[Path, Path]]) -> list[object]:
    """``os.replace(tmp, target)`` for each pair (outcome None or the OSError). The first renames run one by
    one and are timed; when they are slow (renames over existing files waiting on the disk), the rest run on
    a thread pool, where those waits overlap."""
    import time

    def one(pair: tuple[Path, Path]) -> object:
        try:
            os.replace(pair[1], pair[0])
            return None
        except OSError as exc:
            return exc

    head = pairs[:_PROBE]
    start = time.perf_counter()
    outcomes = [one(p) for p in head]
    slow = head and (time.perf_counter() - start) / len(head) > _SLOW_RENAME_S
    rest = pairs[_PROBE:]
    if slow and len(rest) >= _PARALLEL_MIN:
        outcomes += _parallel_map(lambda p: os.replace(p[1], p[0]), rest)
    else:
        outcomes += [one(p) for p in rest]
    return outcomes


def atomic_write_many(items: Iterable[tuple[Path, bytes]]) -> list[Path]:
    """Atomically replace many files; each file individually is old-or-new at any moment.

    All temporary files are written first (one after another: creations in one folder serialise on its lock
    anyway), made durable with one filesystem sync (or one fsync each where ``syncfs`` is unavailable), then
    renamed over their targets on a thread pool (renames over existing files wait on the disk and overlap
    well); finally each touched folder is fsynced. Returns the targets renamed. If any temporary file cannot
    be written nothing is renamed; if a rename fails the others still happen. Either way the first ``OSError``
    is raised after cleaning up.
    """
    items = list(items)
    originals = [Path(p) for p, _d in items]
    items = [(_resolve_link(p), d) for p, (_p, d) in zip(originals, items, strict=True)]
    if not items:
        return []
    resolved_to_original = {r: o for o, (r, _d) in zip(originals, items, strict=True)}
    fast = sys.platform.startswith("linux")
    create_workers = _env_int("KILN_IO_CREATE_WORKERS", 1)
    temps = _parallel_map(lambda it: _write_temp(it[0], it[1], sync=not fast), items, workers=create_workers)
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
    outcomes = _rename_all(pairs)
    done = [path for (path, _tmp), out in zip(pairs, outcomes, strict=True) if not isinstance(out, OSError)]
    for folder in {p.parent for p in done}:
        fsync_dir(folder)
    done = [resolved_to_original.get(p, p) for p in done]
    failed = [(tmp, out) for (_p, tmp), out in zip(pairs, outcomes, strict=True) if isinstance(out, OSError)]
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
