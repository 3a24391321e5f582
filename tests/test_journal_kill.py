"""Kill a real bulk operation (``kiln tags replace`` / ``undo`` in a subprocess) with SIGKILL at random moments:
every caption must be exactly its before or its after, never empty or half-written, and undo must restore all."""

from __future__ import annotations

import os
import random
import shutil
import signal
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
N_IMAGES = 400
ITERATIONS = 24

DRIVER = (
    "import argparse, sys\n"
    "from curator.cli import tags\n"
    "p = argparse.ArgumentParser(prog='kiln'); sub = p.add_subparsers(); tags.register(sub)\n"
    "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))\n"
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
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-c", DRIVER, "tags", args[0], str(root), *args[1:], "--json"]
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _check_before_or_after(root: Path, before: dict[Path, bytes]) -> tuple[int, int]:
    n_before = n_after = 0
    for path, old in before.items():
        now = path.read_bytes()
        assert now in (old, _expected_after(old)), f"{path.name}: neither before nor after: {now!r}"
        n_before += now == old
        n_after += now != old
    return n_before, n_after


def test_sigkill_at_random_moments(dataset: Path) -> None:
    root = dataset
    before = _captions(root)
    assert len(before) == N_IMAGES

    # How long does an uninterrupted run take? (kill delays are drawn across that span)
    start = time.perf_counter()
    proc = _spawn(root, "replace", "long hair", "short hair")
    assert proc.wait(timeout=120) == 0, proc.stderr.read().decode() if proc.stderr else ""
    span = time.perf_counter() - start
    with Dataset.open(root, quiet=True) as ds:
        assert journal.undo(ds) is not None
    assert _captions(root) == before

    rng = random.Random(1234)
    outcomes = {"none": 0, "partial": 0, "all": 0}
    for iteration in range(ITERATIONS):
        kill_undo = iteration % 3 == 2
        if kill_undo:  # apply fully, then kill an undo midway
            proc = _spawn(root, "replace", "long hair", "short hair")
            assert proc.wait(timeout=120) == 0
            proc = _spawn(root, "undo")
        else:
            proc = _spawn(root, "replace", "long hair", "short hair")
        time.sleep(rng.uniform(0.2 * span, 1.05 * span))
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
