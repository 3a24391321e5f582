"""The staging folder of bulk writes: a batch a detached cleaner is freeing is left to it, and cleaners pause
while a batch is written (real processes, real locks)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curator import fsutil
from curator.fsutil import _umask

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="flock and the detached cleaner")

HOLD = "import fcntl, os, sys, time\nfd = os.open(sys.argv[1], os.O_RDONLY)\nfcntl.flock(fd, fcntl.{})\nprint('held', flush=True)\ntime.sleep(60)\n"


def _batch(stage: Path, files: int, pid: int = 999_999_999) -> Path:
    batch = stage / f"batch-{pid}-1"
    batch.mkdir(parents=True)
    for i in range(files):
        (batch / f".kiln-tmp-c{i}.txt").write_bytes(b"old %d\n" % i)
    return batch


def _holder(path: Path, lock: str) -> subprocess.Popen[str]:
    """Another process holding ``flock(path, lock)`` until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(lock), str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _gone(path: Path, within_s: float = 20.0) -> bool:
    deadline = time.monotonic() + within_s
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not path.exists()


def test_clean_stage_leaves_a_batch_whose_cleaner_is_at_work(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("KILN_IO_BACKGROUND_FREE", "0")
    stage = tmp_path / "staging"
    batch = _batch(stage, 5)  # its writer (no such pid) is gone: stale
    cleaner = _holder(batch, "LOCK_EX")  # what a detached cleaner holds while it frees the batch
    try:
        assert fsutil.clean_stage(stage) == 0 and len(os.listdir(batch)) == 5
    finally:
        cleaner.kill()
        cleaner.wait()
    assert fsutil.clean_stage(stage) == 1 and os.listdir(stage) == []  # the cleaner died: freed here


def test_a_big_stale_batch_goes_to_a_detached_cleaner(tmp_path: Path) -> None:
    stage = tmp_path / "staging"
    batch = _batch(stage, 300)
    assert fsutil.clean_stage(stage) == 1
    assert _gone(batch) and os.listdir(stage) == []


def test_the_detached_cleaner_pauses_while_a_batch_is_written(tmp_path: Path) -> None:
    stage = tmp_path / "staging"
    batch = _batch(stage, 300, pid=os.getpid())
    writer = _holder(stage, "LOCK_SH")  # another process writing a batch in this staging folder
    try:
        fsutil._free_batch(str(batch), 300)  # hands the batch to a detached cleaner
        time.sleep(1.0)
        assert len(os.listdir(batch)) == 300  # nothing freed while the write runs
        assert fsutil.clean_stage(stage, older_than_s=0.0) == 0  # nor taken over: its cleaner holds it
    finally:
        writer.kill()
        writer.wait()
    assert _gone(batch)


def test_a_bulk_write_through_the_stage_leaves_the_old_files_to_the_cleaner(tmp_path: Path, monkeypatch) -> None:
    """The batch write itself, spare pools off: every file replaced, the old contents freed by the detached
    cleaner, nothing left in the staging folder afterwards."""
    monkeypatch.setenv("KILN_IO_SPARES", "0")
    folder, stage = tmp_path / "captions", tmp_path / ".kiln" / "staging"
    folder.mkdir()
    stage.mkdir(parents=True)
    files = [folder / f"c{i:03d}.txt" for i in range(300)]
    for i, path in enumerate(files):
        path.write_bytes(b"old %d\n" % i)
    outcomes = fsutil.write_files_atomically([(p, b"new %d\n" % i) for i, p in enumerate(files)], stage=stage)
    assert outcomes == [None] * 300 and all(p.read_bytes() == b"new %d\n" % i for i, p in enumerate(files))
    assert sorted(os.listdir(folder)) == sorted(p.name for p in files)
    deadline = time.monotonic() + 20
    while os.listdir(stage) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.listdir(stage) == []


def _captions(tmp_path: Path, n: int = 300) -> tuple[list[Path], Path]:
    folder, stage = tmp_path / "captions", tmp_path / ".kiln" / "staging"
    folder.mkdir()
    stage.mkdir(parents=True)
    files = [folder / f"c{i:03d}.txt" for i in range(n)]
    for i, path in enumerate(files):
        path.write_bytes(b"old %d, with some tags\n" % i)
    return files, stage


def _pools(stage: Path) -> list[Path]:
    return sorted(p for p in stage.iterdir() if p.name.startswith("spare-"))


def test_the_old_files_of_a_big_batch_serve_the_next_one(tmp_path: Path, monkeypatch) -> None:
    """A big batch keeps the old contents it swapped out as one spare pool; the next batch writes its new
    contents into those inodes (no file created, none freed) and leaves its own old contents as the pool.
    Every file holds exactly its new bytes (shorter and longer than the spare's), with its own mode."""
    files, stage = _captions(tmp_path)
    os.chmod(files[5], 0o600)
    created: list[str] = []
    real_create = fsutil._create_temp

    def spy(*args, **kwargs):
        created.append(real_create(*args, **kwargs))
        return created[-1]

    monkeypatch.setattr(fsutil, "_create_temp", spy)
    first = [(p, b"new %d\n" % i) for i, p in enumerate(files)]
    assert fsutil.write_files_atomically(first, stage=stage) == [None] * 300
    assert len(created) == 300 and all(p.read_bytes() == d for p, d in first)
    (pool,) = _pools(stage)
    assert sorted(f.read_bytes() for f in pool.iterdir()) == sorted(b"old %d, with some tags\n" % i for i in range(300))
    inodes = {f.stat().st_ino for f in pool.iterdir()}
    second = [(p, b"a much longer new caption %d, " % i * (1 + i % 3) + b"\n") for i, p in enumerate(files)]
    assert fsutil.write_files_atomically(second, stage=stage) == [None] * 300
    assert len(created) == 300  # nothing new was created: the spares took the new contents
    assert all(p.read_bytes() == d for p, d in second)
    assert {p.stat().st_ino for p in files} == inodes  # the captions are the spares' inodes now
    assert stat.S_IMODE(files[5].stat().st_mode) == 0o600 and stat.S_IMODE(files[6].stat().st_mode) == 0o666 & ~_umask()
    (pool,) = _pools(stage)
    assert sorted(f.read_bytes() for f in pool.iterdir()) == sorted(d for _p, d in first)
    assert [p for p in stage.iterdir() if not p.name.startswith("spare-")] == []


def test_a_spare_that_is_not_kiln_s_alone_is_never_written_into(tmp_path: Path) -> None:
    """A spare with another name (an old caption that had a hard link), a symlink and a file with extended
    attributes in the pool are left as they are: new temporary files serve instead."""
    files, stage = _captions(tmp_path)
    assert fsutil.write_files_atomically([(p, b"new %d\n" % i) for i, p in enumerate(files)], stage=stage) == [None] * 300
    (pool,) = _pools(stage)
    spares = sorted(pool.iterdir())
    outside = tmp_path / "kept.txt"
    os.link(spares[0], outside)  # the old caption's other name
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"not kiln's\n")
    spares[1].unlink()
    spares[1].symlink_to(victim)
    xattr = True
    try:
        os.setxattr(spares[2], "user.kiln-test", b"1")
    except OSError:  # a filesystem without user attributes
        xattr = False
    kept = outside.read_bytes()
    third = [(p, b"third %d\n" % i) for i, p in enumerate(files)]
    assert fsutil.write_files_atomically(third, stage=stage) == [None] * 300
    assert all(p.read_bytes() == d for p, d in third)
    assert outside.read_bytes() == kept and victim.read_bytes() == b"not kiln's\n"
    assert all(os.stat(p).st_nlink == 1 for p in files)
    if xattr:
        assert all("user.kiln-test" not in os.listxattr(p) for p in files)


def test_an_unused_spare_pool_is_freed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("KILN_IO_BACKGROUND_FREE", "0")
    files, stage = _captions(tmp_path)
    assert fsutil.write_files_atomically([(p, b"new\n") for p in files], stage=stage) == [None] * 300
    (pool,) = _pools(stage)
    assert fsutil.clean_stage(stage) == 0 and _pools(stage) == [pool]  # fresh: kept for the next batch
    old = time.time() - fsutil._SPARE_KEEP_S - 5
    os.utime(pool, (old, old))
    assert fsutil.clean_stage(stage) == 1 and os.listdir(stage) == []
    assert all(p.read_bytes() == b"new\n" for p in files)
