"""The staging folder of bulk writes: a batch a detached cleaner is freeing is left to it, and cleaners pause
while a batch is written (real processes, real locks)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curator import fsutil

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


def test_a_bulk_write_through_the_stage_leaves_the_old_files_to_the_cleaner(tmp_path: Path) -> None:
    """The batch write itself: every file replaced, the old contents freed by the detached cleaner, nothing
    left in the staging folder afterwards."""
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
