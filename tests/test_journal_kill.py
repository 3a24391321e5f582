"""Kill a real bulk operation (``kiln tags replace`` / ``undo`` in a subprocess) with SIGKILL at random
moments: every caption must be exactly its before or its after, never empty or half-written, and undo must
restore all."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from skimage import data as skdata

from curator.dataset import Dataset
from curator.fsutil import TEMP_PREFIX
from curator.tags import journal

REPO = Path(__file__).resolve().parents[1]
N_IMAGES = 200
ITERATIONS = 20

# The real `kiln` entry point; imports are done before "ready" so kills land inside the operation itself.
DRIVER = (
    "import sys\n"
    "from tui.cli import main\n"
    "import curator.dataset, curator.tags.commands, curator.tags.journal\n"
    "import curator.tags.ops, curator.tags.items\n"
    "sys.stdout.write('ready\\n'); sys.stdout.flush()\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _caption(i: int) -> bytes:
    eol = b"\r\n" if i % 5 == 0 else b"\n"
    tail = b"extra line kohya ignores" + eol if i % 9 == 0 else b""
    return b"img%d, long hair, tag%d, smile" % (i, i % 7) + eol + tail


def _expected_after(raw: bytes) -> bytes:
    return raw.replace(b"long hair", b"short hair", 1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kill") / "ds"
    folders = [root / "10_ohwx woman", root / "3_style"]
    for f in folders:
        f.mkdir(parents=True)
    photo = root / "photo.png"
    Image.fromarray(skdata.astronaut()).resize((64, 64)).save(photo)
    for i in range(N_IMAGES):
        folder = folders[i % 2]
        shutil.copyfile(photo, folder / f"img{i:04d}.png")
        (folder / f"img{i:04d}.txt").write_bytes(_caption(i))
    photo.unlink()
    with Dataset.open(root, quiet=True) as ds:
        ds.scan(progress=False)
    return root


def _captions(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.glob("*/*.txt")}


def _spawn(root: Path, *args: str) -> subprocess.Popen:
    # one file at a time, so that kills also land between two renames (partially applied operations)
    env = {**os.environ, "PYTHONPATH": str(REPO), "KILN_IO_WORKERS": "1"}
    argv = [sys.executable, "-c", DRIVER, "tags", args[0], str(root), *args[1:], "--json"]
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n", proc.stderr.read().decode() if proc.stderr else ""
    return proc


def _wait_for_pending(root: Path, proc: subprocess.Popen, timeout: float = 60) -> float:
    """Block until the subprocess has committed its journal entry (state pending/undoing): files are about to
    be written. Returns when that was seen (perf_counter)."""
    conn = sqlite3.connect(root / ".kiln" / "index.sqlite", timeout=30)
    try:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline and proc.poll() is None:
            try:
                row = conn.execute("SELECT state FROM tag_journal ORDER BY id DESC LIMIT 1").fetchone()
            except sqlite3.OperationalError:
                row = None
            if row and row[0] in ("pending", "undoing"):
                break
            time.sleep(0.002)
        return time.perf_counter()
    finally:
        conn.close()


def _check_before_or_after(root: Path, before: dict[Path, bytes]) -> tuple[int, int]:
    n_before = n_after = 0
    for path, old in before.items():
        now = path.read_bytes()
        assert now in (old, _expected_after(old)), f"{path.name}: neither before nor after: {now!r}"
        n_before += now == old
        n_after += now != old
    return n_before, n_after


@pytest.mark.slow
def test_sigkill_at_random_moments(dataset: Path) -> None:
    root = dataset
    before = _captions(root)
    assert len(before) == N_IMAGES

    # How long does an uninterrupted operation take, and its write phase? (kill delays are drawn across them)
    proc = _spawn(root, "replace", "long hair", "short hair")
    start = time.perf_counter()
    pending_at = _wait_for_pending(root, proc)
    assert proc.wait(timeout=120) == 0, proc.stderr.read().decode() if proc.stderr else ""
    span = time.perf_counter() - start
    write_span = max(0.01, time.perf_counter() - pending_at)
    with Dataset.open(root, quiet=True) as ds:
        assert journal.undo(ds) is not None
    assert _captions(root) == before

    rng = random.Random(1234)
    outcomes = {"none": 0, "partial": 0, "all": 0}
    for iteration in range(ITERATIONS):
        kill_undo = iteration % 3 == 2
        if kill_undo:  # apply fully, then kill an undo midway
            with Dataset.open(root, quiet=True) as ds:
                from curator.tags.items import load_items
                from curator.tags.ops import replace_tag

                assert journal.apply_changes(
                    ds, replace_tag(load_items(ds), "long hair", "short hair"), "r", "r"
                ).ok
            proc = _spawn(root, "undo")
        else:
            proc = _spawn(root, "replace", "long hair", "short hair")
        if iteration % 2:  # anywhere in the run
            time.sleep(rng.uniform(0.0, 1.1 * span))
        else:  # inside the write phase: after the journal entry is committed
            _wait_for_pending(root, proc)
            time.sleep(rng.uniform(0.0, write_span))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)

        n_before, n_after = _check_before_or_after(root, before)
        outcomes["none" if n_after == 0 else "all" if n_before == 0 else "partial"] += 1

        # The next kiln session recovers the interrupted entry and can undo everything that was applied.
        with Dataset.open(root, quiet=True) as ds:
            entries = journal.history(ds, limit=3)
            assert all(e.state not in ("pending", "undoing", "redoing") for e in entries)
            while any(e.state == "applied" for e in journal.history(ds, limit=5)):
                result = journal.undo(ds)
                assert result is not None and result.ok, result
        assert _captions(root) == before, f"iteration {iteration}: undo did not restore every caption"
        assert not [p for p in root.rglob(TEMP_PREFIX + "*")], "temporary files left behind"
    # the random delays must have hit the middle of the writes at least once
    assert outcomes["partial"] + outcomes["all"] > 0, outcomes
    print("kill outcomes:", outcomes)
