"""Crash-safe file writes: every user file kiln writes goes through here.

A write never changes a file in place. The new content goes to a temporary file in the same folder, is
flushed to disk (fsync), then renamed over the target (atomic on POSIX), and the folder is fsynced so the
rename itself survives a power cut. A reader (or a crash) therefore sees either the old bytes or the new
bytes, never a mix. The target keeps its permission bits, and its owner where this process may set it (root
editing a user's file leaves it the user's); a new file gets the usual ``0o666 & ~umask``.

``atomic_write_many`` does the same for thousands of files at once with a single filesystem sync instead of
one fsync per file (the data of every temporary file is durable before any rename happens).

A full disk stops a batch before any rename: every temporary file is removed and nothing is replaced (the
error is a :class:`curator.faults.DiskFullError` naming the disk and the space needed). Writes can be
*confined* to the dataset's folders: a symlink whose target lies outside them is refused
(:class:`OutsideFoldersError`), never written through.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import itertools
import os
import stat
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from curator.faults import DISK_FULL_ERRNOS, DiskFullError, block_size, ensure_space, space_for

_A = TypeVar("_A")
_R = TypeVar("_R")

TEMP_PREFIX = ".kiln-tmp-"
"""Temporary files are named ``.kiln-tmp-<target name>.<random>``; leftovers can be removed safely."""

_TEMP_NAME_MAX = 200  # bytes of the target's name kept in a temporary name (NAME_MAX is 255 on most systems)


class OutsideFoldersError(OSError):
    """A write would follow a symlink out of the folders it is confined to (the dataset's)."""

    def __init__(self, link: str, target: str):
        super().__init__(
            errno.EXDEV,
            f"it is a symlink to {target}, outside the dataset; kiln does not write through it "
            "(replace the link with a copy of the file to edit it here)",
            link,
        )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: Path | str) -> None:
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


_READ_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_READ_CHUNK = 16384


def read_file(path: Path | str) -> bytes | None:
    """The bytes of a file, ``None`` when it does not exist (other ``OSError``s are raised). Cheaper than
    ``open(path, "rb").read()`` for the thousands of small caption files a bulk operation reads."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        return None
    try:
        data = os.read(fd, _READ_CHUNK)
        if data:
            more = os.read(fd, _READ_CHUNK)
            if more:
                chunks = [data, more]
                while more:
                    more = os.read(fd, 1 << 20)
                    chunks.append(more)
                data = b"".join(chunks)
        return data
    finally:
        os.close(fd)


def read_files(paths: Iterable[Path | str]) -> list[bytes | None]:
    """:func:`read_file` of each path, in order."""
    return [read_file(p) for p in paths]




def atomic_write_bytes(path: Path | str, data: bytes, *, what: str = "") -> None:
    """Replace ``path`` with ``data`` atomically (temp file in the same folder, fsync, rename, fsync dir).
    A symlink is written through (its target is replaced). On a full disk the old file is kept and
    :class:`DiskFullError` says how much space ``what`` (default: writing the file's name) needs."""
    umask = _umask()
    target, mode, owner, _exists = _prepare_target(os.fspath(path), 0o666 & ~umask)
    try:
        tmp = _create_temp(target, data, mode, sync=True, umask=umask, owner=owner)
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:
            folder = os.path.dirname(target) or "."
            needed = space_for([len(data)], block_size(folder))
            raise DiskFullError(target, what or f"writing {os.path.basename(target)}", needed) from exc
        raise
    try:
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            folder = os.path.dirname(target) or "."
            raise DiskFullError(target, what or f"writing {os.path.basename(target)}",
                                space_for([len(data)], block_size(folder))) from exc
        raise
    fsync_dir(os.path.dirname(target) or ".")


def atomic_write_with(
    path: Path | str, write: Callable[[Path], None], *, size: int | None = None, what: str = ""
) -> None:
    """Replace ``path`` atomically with the file ``write(temp_path)`` produces next to it: for writers that
    stream to a path (safetensors' ``save_file``), so a multi-gigabyte file is never held in memory as bytes.
    Same protocol as :func:`atomic_write_bytes`: the temporary file is fsynced, renamed over ``path`` and the
    folder fsynced; if ``write`` raises, the temporary file is removed and ``path`` is untouched.

    ``size``: about how many bytes the file will have; the disk is checked for them first. A full disk (before or
    while writing, whatever the writer raises for it) is a :class:`DiskFullError` saying how much ``what``
    (default: writing the file's name) needs."""
    umask = _umask()
    target, mode, owner, _exists = _prepare_target(os.fspath(path), 0o666 & ~umask)
    folder = os.path.dirname(target) or "."
    label = what or f"writing {os.path.basename(target)}"
    needed = space_for([size], block_size(folder)) if size is not None else None
    if needed is not None:
        ensure_space(folder, needed, label)
    try:
        tmp = _create_temp(target, b"", mode, sync=False, umask=umask)
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:
            raise DiskFullError(target, label, needed) from exc
        raise
    try:
        write(Path(tmp))
        os.chmod(tmp, mode)  # the writer may have recreated the file
        if owner is not None:
            with contextlib.suppress(OSError):
                os.chown(tmp, *owner)
        fd = os.open(tmp, _READ_FLAGS)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if _says_disk_full(exc):
            raise DiskFullError(target, label, needed) from exc
        raise
    fsync_dir(folder)


def _says_disk_full(exc: BaseException) -> bool:
    """A writer's way of reporting ENOSPC: an ``OSError``, or a library error that carries the OS error's text
    (safetensors: ``IoError(Os { code: 28, kind: StorageFull, ... })``; torch: "file write failed")."""
    if isinstance(exc, OSError):
        return exc.errno in DISK_FULL_ERRNOS
    text = str(exc)
    return any(sign in text for sign in ("No space left on device", "StorageFull", "code: 28", "Disk quota exceeded"))


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
        return bool(libc.syncfs(fd) == 0)
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


def _parallel_map(fn: Callable[[_A], _R], args: list[_A], workers: int | None = None) -> list[_R | OSError]:
    """``[fn(a) for a in args]`` on a thread pool for big batches; an ``OSError`` is returned, not raised."""

    def safe(a: _A) -> _R | OSError:
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


def _rename_all(pairs: list[tuple[str, str, bool]]) -> tuple[list[OSError | None], int]:
    """Put each temporary file in place: ``(target, temp, exchange)`` -> swapped with the target when
    ``exchange`` and the filesystem can (the old content stays at ``temp``), else ``os.replace(temp, target)``.
    Returns the outcomes (None or the OSError) and how many were swapped. The first plain renames run one by
    one and are timed; when they are slow (renames over existing files waiting on the disk), the rest run on
    a thread pool, where those waits overlap."""
    swapped = 0

    def one(pair: tuple[str, str, bool]) -> OSError | None:
        nonlocal swapped
        try:
            if pair[2] and _exchange(pair[1], pair[0]):
                swapped += 1
            else:
                os.replace(pair[1], pair[0])
            return None
        except OSError as exc:
            return exc

    head = pairs[:_PROBE]
    start = time.perf_counter()
    outcomes: list[OSError | None] = []
    for pair in head:
        outcomes.append(one(pair))
        if _full(outcomes[-1]):  # a full disk: the remaining renames would fail alike; they are not tried
            return outcomes + [outcomes[-1]] * (len(pairs) - len(outcomes)), swapped
    slow = head and (time.perf_counter() - start) / len(head) > _SLOW_RENAME_S
    rest = pairs[_PROBE:]
    if slow and len(rest) >= _PARALLEL_MIN and not any(p[2] for p in rest):
        outcomes += _parallel_map(lambda p: os.replace(p[1], p[0]), rest)
    else:
        for pair in rest:
            outcomes.append(one(pair))
            if _full(outcomes[-1]):
                return outcomes + [outcomes[-1]] * (len(pairs) - len(outcomes)), swapped
    return outcomes, swapped


def _full(outcome: object) -> bool:
    return isinstance(outcome, OSError) and outcome.errno in DISK_FULL_ERRNOS


def atomic_write_many(items: Iterable[tuple[Path | str, bytes]]) -> list[Path]:
    """Atomically replace many files; each file individually is old-or-new at any moment.

    All temporary files are written first (one after another: creations in one folder serialise on its lock
    anyway), made durable with one filesystem sync per filesystem touched (or one fsync each where ``syncfs``
    is unavailable), then renamed over their targets (on a thread pool when renames turn out to be slow:
    renames over existing files wait on the disk and overlap well); finally each touched folder is fsynced.
    Returns the targets renamed. If any temporary file cannot be written nothing is renamed (a full disk
    raises :class:`DiskFullError`); if a rename fails the others still happen. Either way the first
    ``OSError`` is raised after cleaning up.
    """
    items = list(items)
    if not items:
        return []
    originals = [Path(p) for p, _d in items]
    outcomes = write_files_atomically(items, all_or_nothing=True)
    full = next((o for o in outcomes if isinstance(o, DiskFullError)), None)
    if full is not None:
        raise full
    temp_errors = [o for o in outcomes if isinstance(o, _TempError)]
    if temp_errors:
        raise temp_errors[0].cause
    done = [p for p, out in zip(originals, outcomes, strict=True) if out is None]
    failed = [out for out in outcomes if out is not None]
    if failed:
        raise PartialWriteError(done, failed[0])
    return done


class _TempError(OSError):
    """The temporary file of one target could not be written (wraps the cause)."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror, cause.filename)
        self.cause = cause


_Target = tuple[str, int, tuple[int, int] | None, bool]  # (file to replace, its mode bits, owner to keep, exists)
_OWN = (os.geteuid(), os.getegid()) if hasattr(os, "geteuid") else None


def _owner(st: os.stat_result) -> tuple[int, int] | None:
    """The (uid, gid) a replacement must be given to keep ``st``'s owner; None when it is this process's."""
    if _OWN is None or (st.st_uid, st.st_gid) == _OWN:
        return None
    return st.st_uid, st.st_gid


def _prepare_target(path: str, default_mode: int, confine: Sequence[str] = ()) -> _Target:
    """(the file to replace, its permission bits, its owner when not ours): a symlink is written through to
    its target (refused with :class:`OutsideFoldersError` when ``confine`` names folders and the target is in
    none of them); one ``lstat`` tells all for the usual plain file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path, default_mode, None, False
    if stat.S_ISLNK(st.st_mode):
        real = os.path.realpath(path)
        if confine and not any(real.startswith(folder) for folder in confine):  # folders end with a separator
            raise OutsideFoldersError(path, real)
        try:
            st = os.stat(real)
        except FileNotFoundError:  # a dangling link: its target is created
            return real, default_mode, None, False
        return real, stat.S_IMODE(st.st_mode), _owner(st), True
    return path, stat.S_IMODE(st.st_mode), _owner(st), True


def _create_temp(
    target: str,
    data: bytes,
    mode: int,
    sync: bool,
    umask: int,
    owner: tuple[int, int] | None = None,
    in_folder: str | None = None,
) -> str:
    """Write ``data`` to a new temporary file next to ``target`` (or in ``in_folder``, a staging folder on the
    same filesystem) with permission bits ``mode`` (created with them when the ``umask`` keeps them all, else
    fixed with ``fchmod``) and, where this process may set it, the target's ``owner``."""
    folder, name = os.path.split(target)
    if in_folder is not None:
        folder = in_folder
    if len(os.fsencode(name)) > _TEMP_NAME_MAX:  # a long name plus the temporary suffix would pass NAME_MAX
        name = hashlib.sha1(os.fsencode(name)).hexdigest()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    exact = not (mode & umask) and not (mode & ~0o777)
    while True:
        tmp = os.path.join(folder, f"{TEMP_PREFIX}{name}.{os.getpid()}.{next(_counter)}")
        try:
            fd = os.open(tmp, flags, mode if exact else 0o600)
            break
        except FileExistsError:
            continue
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if owner is not None:
            with contextlib.suppress(OSError):  # only root may give a file away; others keep what they can
                os.fchown(fd, *owner)
        if hasattr(os, "fchmod") and (not exact or owner is not None):  # fchown may clear set-id bits
            os.fchmod(fd, mode)
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    if not hasattr(os, "fchmod"):  # pragma: no cover - Windows
        os.chmod(tmp, mode)
    return tmp


def _sync_filesystems(folders: Iterable[str]) -> bool:
    """One ``syncfs`` per filesystem holding ``folders`` (a symlinked caption may live on another disk).
    False when some filesystem could not be synced that way (the caller then fsyncs each file)."""
    devices: dict[int, str] = {}
    for folder in folders:
        try:
            devices.setdefault(os.stat(folder).st_dev, folder)
        except OSError:
            return False
    return all(_syncfs(Path(folder)) for folder in devices.values())


# ---- staging: a bulk write without freeing the old files on the way ------------------------------------------
#
# Creating thousands of temporary files inside a caption folder of 100,000 entries makes every creation slow,
# and renaming over an existing file frees its blocks there and then (on a disk mounted with ``discard`` that
# is a TRIM per file, a fraction of a millisecond each). With a staging folder (``.kiln/staging``) on the same
# filesystem the temporary files are made there, and each is *exchanged* with its target
# (``renameat2(RENAME_EXCHANGE)``: atomic like a rename, the target holds the new bytes at once): the old
# contents end up in the staging batch, freed afterwards, in the background for big batches. The detached
# cleaner holds the batch folder's ``flock`` (so ``clean_stage`` in the next operation leaves the batch to it
# instead of freeing 50,000 old files in the foreground) and pauses while a writer holds the staging folder's
# ``flock`` shared (so freeing and the next bulk write do not compete for the disk).

_RENAME_EXCHANGE = 2
_BACKGROUND_FREE_MIN = 256  # old files freed by a detached process from this many on
_CLEANER = """\
import os, shutil, sys, time
try:
    os.nice(19)
except OSError:
    pass
batch, stage = sys.argv[1], sys.argv[2]
try:
    import fcntl
    stage_fd = os.open(stage, os.O_RDONLY)
except (ImportError, OSError):
    stage_fd = None
def no_writer():
    while stage_fd is not None:
        try:
            fcntl.flock(stage_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            time.sleep(0.1)
            continue
        except OSError:
            return
        fcntl.flock(stage_fd, fcntl.LOCK_UN)
        return
try:
    with os.scandir(batch) as entries:
        for n, entry in enumerate(entries):
            if n % 64 == 0:
                no_writer()
            try:
                os.unlink(entry.path)
            except OSError:
                pass
except OSError:
    pass
shutil.rmtree(batch, True)
"""
"""The detached cleaner (``python -S -c _CLEANER <batch> <staging folder>``): frees a batch's old files at the
lowest CPU priority, pausing while a batch is being written in the same staging folder (writers hold the
folder's ``flock`` shared, see :func:`write_files_atomically`), so the next bulk write does not compete with
it for the disk."""
_renameat2: Callable[..., int] | None | bool = None  # None: not looked up yet; False: unavailable


def _exchange(a: str, b: str) -> bool:
    """Atomically swap the files at ``a`` and ``b``; False where the system or filesystem cannot (the caller
    renames instead). Other errors are raised."""
    global _renameat2
    if _renameat2 is None:
        _renameat2 = False
        if sys.platform.startswith("linux"):
            try:
                fn = ctypes.CDLL(None, use_errno=True).renameat2
                fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
                _renameat2 = fn
            except (AttributeError, OSError):
                pass
    if not callable(_renameat2):
        return False
    at_cwd = -100
    if _renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), b)


def exchange_paths(a: Path | str, b: Path | str) -> bool:
    """Atomically swap two files or folders on one filesystem (Linux ``RENAME_EXCHANGE``); False where that is
    not possible, and the caller must do otherwise."""
    try:
        return _exchange(os.fspath(a), os.fspath(b))
    except OSError:
        return False


def write_new_file(path: Path | str, data: bytes) -> None:
    """Create ``path`` (it must not exist: a file in a private temporary folder) with ``data``, fsynced. A full
    disk raises the ``OSError`` (ENOSPC) with ``path``; a partly written file is removed."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        if exc.filename is None:
            exc.filename = os.fspath(path)
        raise
    os.close(fd)


_SPARE_PREFIX = "spare-"
_SPARE_KEEP_S = 900.0  # a spare pool unused this long is freed (by the next clean_stage)


def _spares_on() -> bool:
    return os.environ.get("KILN_IO_SPARES", "1") != "0"


def _stage_batch(stage: Path | str | None) -> tuple[str, int, list[str]] | None:
    """A batch folder in ``stage`` for this write, its device and the names of the spare files in it (a spare
    pool claimed from an earlier batch, see :func:`_claim_spares`; else a new, empty folder), or None (no
    staging: temporary files go beside their targets)."""
    if stage is None or os.environ.get("KILN_IO_STAGING", "1") == "0":
        return None
    batch = os.path.join(os.fspath(stage), f"batch-{os.getpid()}-{next(_counter)}")
    try:
        spares = _claim_spares(os.fspath(stage), batch) if _spares_on() else None
        if spares is None:
            os.makedirs(batch)
            spares = []
        return batch, os.stat(batch).st_dev, spares
    except OSError:
        return None


def _claim_spares(stage: str, batch: str) -> list[str] | None:
    """Take the newest spare pool of ``stage`` for this write by renaming it to ``batch`` (one atomic step: two
    writers never share a pool; a pool a detached cleaner is freeing, which holds its lock, is left to it).
    Returns the names of its files, or None when there is no pool to take."""
    try:
        pools = sorted((e.name for e in os.scandir(stage) if e.name.startswith(_SPARE_PREFIX)), reverse=True)
    except OSError:
        return None
    for name in pools:
        path = os.path.join(stage, name)
        try:
            fd = _lock_batch(path)
        except OSError:  # taken meanwhile
            continue
        if fd is None:  # a cleaner is freeing it
            continue
        try:
            os.rename(path, batch)
            os.utime(batch)  # a fresh mtime: clean_stage takes an old batch of a live pid for a stale one
        except OSError:
            continue
        finally:
            os.close(fd)
        try:
            return [n for n in os.listdir(batch) if n.startswith(TEMP_PREFIX)]
        except OSError:
            return []
    return None


def _reuse_spare(
    path: str, data: bytes, mode: int, sync: bool, owner: tuple[int, int] | None
) -> str | None:
    """Write ``data`` into the spare file ``path`` (an old content a previous batch swapped out of its
    caption: an inode nothing else names any more) so it serves as this write's temporary file, with
    permission bits ``mode`` and the owner the target must keep; None when it cannot serve (hard-linked
    elsewhere, not a plain file, carrying extended attributes or an owner this process cannot change), and
    the caller makes a new temporary file. Reusing the inode spares the filesystem freeing one file and
    allocating another per caption (ext4 without a journal skips every recently freed inode when it allocates
    one: after a batch freed 50,000 old files, creating the next batch's took 3-12 times as long). The bytes
    are written over the old ones from the start (no truncation to zero first, which would free the data
    block and, on a disk mounted with ``discard``, TRIM it), then cut to length."""
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:
            raise
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            return None
        if hasattr(os, "listxattr"):
            try:
                names = os.listxattr(fd)
            except OSError:
                names = []
            if any(not n.startswith("security.") for n in names):  # an ACL or the user's attributes
                os.close(fd)
                return None
        want = owner if owner is not None else _OWN
        if want is not None and (st.st_uid, st.st_gid) != want:
            try:
                os.fchown(fd, *want)
            except OSError:
                os.close(fd)
                return None
            os.fchmod(fd, mode)  # fchown may clear set-id bits
        elif stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if st.st_size > len(data):
            os.ftruncate(fd, len(data))
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return path


def _files_in(folder: str) -> int:
    try:
        with os.scandir(folder) as entries:
            return sum(1 for _ in entries)
    except OSError:
        return 0


def _keep_or_free(batch: str) -> None:
    """After a batch write: keep the batch folder (the old contents swapped out, spares left over) as a spare
    pool for the next bulk write when it is big, else free it (see :func:`_free_batch`)."""
    files = _files_in(batch)
    if files >= _BACKGROUND_FREE_MIN and _spares_on():
        stage = os.path.dirname(batch)
        pool = os.path.join(stage, f"{_SPARE_PREFIX}{time.time_ns():020d}-{os.getpid()}-{next(_counter)}")
        try:
            os.rename(batch, pool)
            os.utime(pool)
            return
        except OSError:
            pass
    _free_batch(batch, files)


def _lock_batch(batch: str) -> int | None:
    """An open descriptor of the batch folder holding an exclusive ``flock`` on it, or None when another
    process holds the lock (a detached cleaner is freeing the batch). Where ``flock`` does not exist the
    descriptor is returned unlocked. Raises ``OSError`` when the folder cannot be opened."""
    fd = os.open(batch, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:
        pass  # a filesystem without flock: nothing to coordinate with
    return fd


def _free_batch(batch: str, old_files: int) -> None:
    """Remove a staging batch (the old contents swapped out of their targets): a detached low-priority process
    frees big ones, so the caller does not wait for the disk; small ones go at once."""
    try:
        fd = _lock_batch(batch)
    except OSError:
        fd = None
    if fd is not None:
        _free_locked(batch, fd, old_files)


def _free_locked(batch: str, fd: int, old_files: int) -> None:
    """:func:`_free_batch` of a batch whose lock ``fd`` holds (closed here). The detached cleaner inherits the
    descriptor, so the lock stays held until the batch is gone: :func:`clean_stage` in another process leaves
    such a batch to it instead of freeing 50,000 old files in the foreground."""
    try:
        if old_files >= _BACKGROUND_FREE_MIN and os.environ.get("KILN_IO_BACKGROUND_FREE", "1") != "0":
            import subprocess

            try:
                subprocess.Popen([sys.executable, "-S", "-c", _CLEANER, batch, os.path.dirname(batch)],
                                 start_new_session=True,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 pass_fds=(fd,))
                return
            except OSError:
                pass
        import shutil

        shutil.rmtree(batch, ignore_errors=True)
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def clean_stage(stage: Path | str, older_than_s: float = 600.0) -> int:
    """Remove the staging batches in ``stage`` whose writer is gone (killed, or finished while its detached
    cleaner died), and any older than ``older_than_s`` (a reused pid); returns how many. A batch a detached
    cleaner is still freeing (it holds the batch's lock) is left to it; a big stale one is handed to a new
    detached cleaner (see :func:`_free_batch`)."""
    removed = 0
    try:
        entries = list(os.scandir(stage))
    except OSError:
        return 0
    now = time.time()
    for entry in entries:
        try:
            if entry.name.startswith(_SPARE_PREFIX):  # a spare pool (see _keep_or_free): freed once unused
                stale = now - entry.stat().st_mtime > min(older_than_s, _SPARE_KEEP_S) or not _spares_on()
            elif entry.name.startswith("batch-"):
                pid = int(entry.name.split("-")[1])
                stale = not _alive(pid) or now - entry.stat().st_mtime > older_than_s
            else:
                continue
        except (OSError, ValueError, IndexError):
            continue
        if not stale:
            continue
        try:
            fd = _lock_batch(entry.path)
        except OSError:  # gone meanwhile
            continue
        if fd is None:  # a detached cleaner is freeing it
            continue
        try:
            old_files = sum(1 for _ in os.scandir(entry.path))
        except OSError:
            old_files = 0
        _free_locked(entry.path, fd, old_files)
        removed += 1
    return removed


def _target_path(target: _Target | OSError) -> str:
    """The path of a prepared target (only items whose temporary file was made reach the renames)."""
    if isinstance(target, OSError):
        raise target
    return target[0]


def write_files_atomically(
    items: list[tuple[Path | str, bytes]],
    all_or_nothing: bool = False,
    *,
    confine: Sequence[Path | str] = (),
    what: str = "",
    stage: Path | str | None = None,
) -> list[OSError | None]:
    """Atomically replace each ``(path, data)``; returns per item ``None`` (replaced) or the ``OSError``.

    The batch protocol of :func:`atomic_write_many` with a per-file outcome: temporary files first, their
    data made durable (one ``syncfs`` per filesystem on Linux, else an fsync per file), then the renames, then
    one fsync per touched folder. A file whose temporary file cannot be written is not renamed (with
    ``all_or_nothing``, then no file is). Paths are handled as strings: no ``Path`` object per file.

    A full disk (``ENOSPC``/``EDQUOT`` while writing or syncing the temporary files) stops the batch before any
    rename: every item's outcome is then the same :class:`DiskFullError`, saying how much space ``what``
    (default: "writing N files") needs on that disk. ``confine``: folders the writes must stay in; a symlink
    leading out of them is that item's :class:`OutsideFoldersError`. ``stage``: a staging folder for the
    temporary files (see the notes above :func:`_exchange`); targets on another filesystem get theirs beside
    them, as without one.
    """
    if not items:
        return []
    hold = _share_stage(stage) if stage is not None and len(items) >= _PARALLEL_MIN else None
    try:
        return _write_files(items, all_or_nothing, confine, what, stage)
    finally:
        if hold is not None:
            os.close(hold)


def _share_stage(stage: Path | str) -> int | None:
    """A descriptor of the staging folder holding a shared ``flock`` on it while a batch is written there
    (detached cleaners pause meanwhile); None where the folder or the lock is unavailable."""
    try:
        fd = os.open(stage, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_SH)
    except (ImportError, OSError):  # pragma: no cover - Windows, or a filesystem without flock
        pass
    return fd


def _write_files(
    items: list[tuple[Path | str, bytes]],
    all_or_nothing: bool,
    confine: Sequence[Path | str],
    what: str,
    stage: Path | str | None,
) -> list[OSError | None]:
    """:func:`write_files_atomically` (the staging folder's shared lock held by the caller)."""
    if not items:
        return []
    fast = sys.platform.startswith("linux")
    umask = _umask()
    default_mode = 0o666 & ~umask
    folders_in = [os.path.join(os.path.realpath(f), "") for f in confine]
    targets: list[_Target | OSError] = []
    for path, _data in items:
        try:
            targets.append(_prepare_target(os.fspath(path), default_mode, folders_in))
        except OSError as exc:
            targets.append(exc)

    batch = _stage_batch(stage) if len(items) >= _PARALLEL_MIN else None
    devices: dict[str, int] = {}

    def staged(target: str) -> str | None:
        """The staging batch folder when ``target`` is on its filesystem."""
        if batch is None:
            return None
        folder = os.path.dirname(target) or "."
        dev = devices.get(folder)
        if dev is None:
            try:
                dev = devices[folder] = os.stat(folder).st_dev
            except OSError:
                dev = devices[folder] = -1
        return batch[0] if dev == batch[1] else None

    spares = batch[2] if batch is not None else []

    def create(i: int) -> str:
        target = targets[i]
        if isinstance(target, OSError):
            raise target
        folder = staged(target[0])
        while folder is not None and spares:  # batch is set: staged() found its folder
            temp = _reuse_spare(os.path.join(folder, spares.pop()), items[i][1], target[1], sync=not fast,
                                owner=target[2])
            if temp is not None:
                return temp
        return _create_temp(target[0], items[i][1], target[1], sync=not fast, umask=umask, owner=target[2],
                            in_folder=folder)

    def disk_full(exc: OSError) -> list[OSError | None]:
        """Every item fails with one DiskFullError; no temporary file is left."""
        for temp in made.values():
            with contextlib.suppress(OSError):
                os.unlink(temp)
        if batch is not None:
            _free_batch(batch[0], _files_in(batch[0]))
        path = exc.filename or _target_path(next(t for t in targets if not isinstance(t, OSError)))
        folder = os.path.dirname(os.fspath(path)) or "."
        sizes = [len(data) for (_p, data), t in zip(items, targets, strict=True) if not isinstance(t, OSError)]
        needed = space_for(sizes, block_size(folder))
        error = DiskFullError(folder, what or f"writing {len(items)} file(s)", needed)
        return [error] * len(items)

    create_workers = _env_int("KILN_IO_CREATE_WORKERS", 1)
    made: dict[int, str] = {}  # item -> its temporary file
    outcomes: list[OSError | None] = [None] * len(items)
    if create_workers == 1 or len(items) < _PARALLEL_MIN:
        for i in range(len(items)):  # one after another, stopping at a full disk
            try:
                made[i] = create(i)
            except OSError as exc:
                if exc.errno in DISK_FULL_ERRNOS:
                    return disk_full(exc)
                outcomes[i] = _TempError(exc)
    else:
        temps = _parallel_map(create, list(range(len(items))), workers=create_workers)
        for i, temp in enumerate(temps):
            if isinstance(temp, OSError):
                outcomes[i] = _TempError(temp)
            else:
                made[i] = temp
        first_full = next((t for t in temps if isinstance(t, OSError) and t.errno in DISK_FULL_ERRNOS), None)
        if isinstance(first_full, OSError):
            return disk_full(first_full)
    if all_or_nothing and len(made) < len(items):
        for temp in made.values():
            with contextlib.suppress(OSError):
                os.unlink(temp)
        if batch is not None:
            _free_batch(batch[0], _files_in(batch[0]))
        return outcomes
    try:
        if fast and not _sync_filesystems({os.path.dirname(temp) for temp in made.values()}):
            for temp in made.values():
                fd = os.open(temp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
    except OSError as exc:  # some filesystems (NFS, delayed allocation) report a full disk only here
        if exc.errno in DISK_FULL_ERRNOS:
            return disk_full(exc)
        for temp in made.values():
            with contextlib.suppress(OSError):
                os.unlink(temp)
        if batch is not None:
            _free_batch(batch[0], _files_in(batch[0]))
        raise
    except BaseException:
        for temp in made.values():
            with contextlib.suppress(OSError):
                os.unlink(temp)
        if batch is not None:
            _free_batch(batch[0], _files_in(batch[0]))
        raise
    swap = {i for i in made if batch is not None and made[i].startswith(batch[0]) and _exists(targets[i])}
    renamed, _swapped = _rename_all([(_target_path(targets[i]), temp, i in swap) for i, temp in made.items()])
    folders = set()
    full: DiskFullError | None = None
    for (i, temp), out in zip(made.items(), renamed, strict=True):
        if isinstance(out, OSError):
            if _full(out):  # rare (a folder that must grow): the files renamed so far stay replaced
                if full is None:
                    done = sum(o is None for o in renamed)
                    folder = os.path.dirname(temp) or "."
                    needed = space_for([len(items[j][1]) for j in made], block_size(folder))
                    note = f"{done} of {len(items)} file(s) were replaced before the disk filled"
                    full = DiskFullError(folder, what or f"writing {len(items)} file(s)", needed, note=note)
                out = full
            outcomes[i] = out
            with contextlib.suppress(OSError):
                os.unlink(temp)
        else:
            folders.add(os.path.dirname(_target_path(targets[i])))
    for folder in folders:
        fsync_dir(folder)
    if batch is not None:
        _keep_or_free(batch[0])
    return outcomes


def _exists(target: _Target | OSError) -> bool:
    return not isinstance(target, OSError) and target[3]


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
