"""Planting real faults for the reliability tests (docs/RELIABILITY.md).

* :class:`WriteFaults` - an ``os``-level injector: counts every write an operation makes through Python's
  ``os`` module (``open`` for writing, ``write``, ``fsync``, ``replace``/``rename``) and fails the N-th with a
  chosen errno (ENOSPC, EROFS, EACCES). Sweeping N over every write of an operation plants the fault at each
  point. Works everywhere, as any user.
* :func:`tiny_disk` - a real small filesystem (a tmpfs mounted in the test's folder) that :meth:`TinyDisk.fill`
  fills up to the last few bytes: SQLite and every write meet a real ``ENOSPC``. Needs CAP_SYS_ADMIN
  (root); skipped with the reason elsewhere.
* :func:`deny_writes` - make a file or folder really unwritable: ``chmod a-w`` for a normal user, ``chattr +i``
  (immutable) for root, whom permission bits do not stop. Skipped with the reason where neither works.
* :func:`run_on_read_only_mount` - run a command in a private mount namespace where a folder is a read-only
  bind mount (``unshare``): writes there fail with EROFS, for real.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]

PLANTED: dict[str, int] = {}
"""Faults planted in this test session, by kind (tests/conftest.py prints the tally at the end)."""


def planted(kind: str, count: int = 1) -> None:
    PLANTED[kind] = PLANTED.get(kind, 0) + count

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class InjectedFault(OSError):
    """The error a :class:`WriteFaults` plants (an ``OSError`` like the kernel's)."""


@dataclass
class WriteFaults:
    """Count writes through ``os`` and fail the ``fail_at``-th (0-based) with ``code`` (None: only count).
    ``calls`` lists them as ``(kind, path)``; ``only``: count just the writes whose path contains it."""

    fail_at: int | None = None
    code: int = errno.ENOSPC
    only: str | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)
    planted: bool = False
    _fds: dict[int, str] = field(default_factory=dict)

    def _hit(self, kind: str, path: str) -> None:
        if self.only is not None and self.only not in path:
            return
        n = len(self.calls)
        self.calls.append((kind, path))
        if self.fail_at is not None and n == self.fail_at:
            self.planted = True
            planted(f"injected {errno.errorcode.get(self.code, self.code)} ({kind})")
            raise InjectedFault(self.code, os.strerror(self.code), path if kind != "write" else None)

    @contextlib.contextmanager
    def installed(self) -> Iterator[WriteFaults]:
        real_open, real_write, real_fsync = os.open, os.write, os.fsync
        real_replace, real_rename, real_close = os.replace, os.rename, os.close

        def fake_open(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
            if flags & _WRITE_FLAGS:
                self._hit("open", os.fspath(path))
            fd = real_open(path, flags, mode, dir_fd=dir_fd)
            self._fds[fd] = os.fspath(path)
            return fd

        def fake_write(fd: int, data: Any) -> int:
            path = self._fds.get(fd, f"<fd {fd}>")
            if fd > 2:
                self._hit("write", path)
            return real_write(fd, data)

        def fake_fsync(fd: Any) -> None:
            fileno = fd if isinstance(fd, int) else fd.fileno()
            self._hit("fsync", self._fds.get(fileno, f"<fd {fileno}>"))
            real_fsync(fd)

        def fake_replace(src: Any, dst: Any, **kw: Any) -> None:
            self._hit("replace", os.fspath(dst))
            real_replace(src, dst, **kw)

        def fake_rename(src: Any, dst: Any, **kw: Any) -> None:
            self._hit("rename", os.fspath(dst))
            real_rename(src, dst, **kw)

        def fake_close(fd: int) -> None:
            self._fds.pop(fd, None)
            real_close(fd)

        patches = {"open": fake_open, "write": fake_write, "fsync": fake_fsync, "replace": fake_replace,
                   "rename": fake_rename, "close": fake_close}
        saved = {name: getattr(os, name) for name in patches}
        for name, fn in patches.items():
            setattr(os, name, fn)
        try:
            yield self
        finally:
            for name, fn in saved.items():
                setattr(os, name, fn)


def count_writes(operation: Callable[[], object], only: str | None = None) -> int:
    """How many writes ``operation`` makes (run it once, failing nothing)."""
    faults = WriteFaults(only=only)
    with faults.installed():
        operation()
    return len(faults.calls)


# ---- a real small disk ---------------------------------------------------------------------------------------


class TinyDisk:
    """A small tmpfs mounted at ``path``; :meth:`fill` leaves exactly ``free`` bytes."""

    FILLER = ".filler"

    def __init__(self, path: Path) -> None:
        self.path = path

    def free(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self, leave: int = 0) -> int:
        """Allocate a filler file so that about ``leave`` bytes stay free (rounded down to a page);
        returns the free bytes left."""
        self.unfill()
        planted("full tmpfs (real ENOSPC)")
        size = self.free() - leave
        if size > 0:
            fd = os.open(self.path / self.FILLER, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, size - size % 4096)
            finally:
                os.close(fd)
        return self.free()

    def unfill(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / self.FILLER).unlink()


def _mount_tmpfs(path: Path, size: str) -> str | None:
    """Mount a tmpfs at ``path``; None on success, else why not."""
    if not sys.platform.startswith("linux"):
        return "tmpfs mounts are Linux-only"
    if os.geteuid() != 0:
        return "mounting a small tmpfs needs root (CAP_SYS_ADMIN); the os-level ENOSPC sweeps run without it"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "kiln-faults", str(path)],
                          capture_output=True, text=True)
    return None if done.returncode == 0 else f"cannot mount a tmpfs here: {done.stderr.strip()}"


@contextlib.contextmanager
def tiny_disk(folder: Path, size: str = "4m") -> Iterator[TinyDisk]:
    """A :class:`TinyDisk` at ``folder`` (created), unmounted afterwards; skips the test where it cannot be."""
    folder.mkdir(parents=True, exist_ok=True)
    why = _mount_tmpfs(folder, size)
    if why:
        pytest.skip(why)
    try:
        yield TinyDisk(folder)
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


# ---- write-protected files and folders --------------------------------------------------------------------


def _chattr_immutable(path: Path, on: bool) -> bool:
    if shutil.which("chattr") is None:
        return False
    done = subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True)
    return done.returncode == 0


@contextlib.contextmanager
def deny_writes(*paths: Path) -> Iterator[str]:
    """Make ``paths`` really unwritable for this process for the duration; yields the method used
    ("chmod" or "chattr +i"). Skips the test where writes cannot be denied."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in paths}
        planted("write denied (chmod a-w)", len(paths))
        for p in paths:
            p.chmod(modes[p] & ~0o222)
        try:
            yield "chmod"
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    done: list[Path] = []
    try:
        for p in paths:
            if not _chattr_immutable(p, True):
                pytest.skip(f"running as root, and chattr +i is not supported on {p}'s filesystem")
            done.append(p)
            planted("write denied (chattr +i)")
        yield "chattr +i"
    finally:
        for p in done:
            _chattr_immutable(p, False)


# ---- a read-only mount ----------------------------------------------------------------------------------------


def _unshare_prefix() -> list[str] | None:
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return None
    return ["unshare", "--mount", "--propagation", "private"] if os.geteuid() == 0 else ["unshare", "-rm"]


def read_only_mount_skip_reason() -> str | None:
    prefix = _unshare_prefix()
    if prefix is None:
        return "needs Linux with unshare(1) for a private mount namespace"
    probe = subprocess.run([*prefix, "sh", "-c", "mount --bind / /mnt 2>/dev/null || mount --bind /tmp /tmp"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make a private mount namespace here ({probe.stderr.strip() or 'unshare failed'})"
    return None


def run_on_read_only_mount(folder: Path, argv: list[str], env: dict[str, str] | None = None,
                           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` where ``folder`` is a read-only bind mount of itself (a private mount namespace, gone when
    the command ends)."""
    prefix = _unshare_prefix()
    assert prefix is not None
    planted("read-only bind mount (EROFS)")
    quoted = " ".join(_sh_quote(a) for a in argv)
    script = (f"mount --bind {_sh_quote(str(folder))} {_sh_quote(str(folder))} && "
              f"mount -o remount,bind,ro {_sh_quote(str(folder))} && exec {quoted}")
    return subprocess.run([*prefix, "sh", "-c", script], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def _sh_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


# ---- snapshots -----------------------------------------------------------------------------------------------


def snapshot(root: Path, skip_kiln: bool = True) -> dict[str, bytes]:
    """Every file under ``root`` (bytes by relative path), ``.kiln/`` left out unless asked."""
    out: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if skip_kiln and ".kiln" in dirnames:
            dirnames.remove(".kiln")
        for name in filenames:
            p = Path(dirpath, name)
            if p.is_file() and not p.is_symlink():
                out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


# ---- SIGKILL at random moments ---------------------------------------------------------------------------------


@dataclass
class KillReport:
    trials: int = 0
    killed: int = 0  # SIGKILL landed before the operation finished
    finished: int = 0


def fork_and_kill(operation: Callable[[], object], delay: float) -> bool:
    """Run ``operation`` in a forked child (this process's imports already loaded, so a trial costs the
    operation, not an interpreter start) and SIGKILL it after ``delay`` seconds. Returns True when the kill
    landed before the operation finished."""
    import signal
    import time

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no output, no pytest, no atexit handlers
        code = 0
        try:
            os.close(read_end)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            os.write(write_end, b"go")
            operation()
        except BaseException:  # noqa: BLE001 - the child reports failure through its exit code
            code = 3
        finally:
            os._exit(code)
    os.close(write_end)
    os.read(read_end, 2)  # the child is running
    os.close(read_end)
    deadline = time.perf_counter() + delay
    done, status = 0, 0
    while not done and time.perf_counter() < deadline:
        time.sleep(min(0.002, max(0.0, deadline - time.perf_counter())))
        done, status = os.waitpid(pid, os.WNOHANG)
    if not done:
        os.kill(pid, signal.SIGKILL)
        _pid, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status):
        assert os.WEXITSTATUS(status) == 0, "the operation failed in the child"
        return False
    return True


def kill_trials(setup: Callable[[int], None], operation: Callable[[], object], check: Callable[[int], None],
                trials: int, span: float, seed: int = 14) -> KillReport:
    """``trials`` times: ``setup(i)``, run ``operation`` in a child killed at a random moment within
    ``span`` seconds, ``check(i)``."""
    import random

    rng = random.Random(seed)
    report = KillReport()
    for i in range(trials):
        setup(i)
        killed = fork_and_kill(operation, rng.uniform(0.0, span))
        planted("SIGKILL at a random moment")
        report.trials += 1
        report.killed += killed
        report.finished += not killed
        check(i)
    return report


def timed(operation: Callable[[], object]) -> float:
    """Seconds one uninterrupted run of ``operation`` takes."""
    import time

    start = time.perf_counter()
    operation()
    return time.perf_counter() - start
