"""SIGKILL at random moments (>= 50 trials each): an index rebuild. (Training saves: tests/test_faults_training.py.)

Each trial forks a child that runs the real operation and kills it with SIGKILL at a random moment within one
uninterrupted run's duration. Afterwards the index opens, passes SQLite's integrity check, holds no half row
(every row it has equals the reference scan's), and the next scan completes it.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from curator.dataset import Dataset, ScanConfig
from curator.index import Index
from tests.faults import kill_trials, timed
from tests.test_faults_disk_full import build

TRIALS = 50
ROW = "SELECT path, size, mtime_ns, sha256, width, height, format, mode, frames, phash FROM images ORDER BY path"


def _rows(root: Path) -> list[tuple[object, ...]]:
    """The index's rows, after opening it as kiln does (a file killed before its tables existed opens too)."""
    with Index.open(root, quiet=True) as index:
        assert index.conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return index.conn.execute(ROW).fetchall()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("kill-index") / "ds", n=16)


def _scan(root: Path) -> None:
    with Dataset.open(root, config=ScanConfig(workers=1), quiet=True) as ds:
        ds.scan(progress=False)


def test_index_rebuild_killed_at_random_moments(images: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("curator.scan.scanner.FIRST_BATCH", 4)  # several commits in a small rebuild
    monkeypatch.setattr("curator.scan.scanner.BATCH", 4)
    root = images
    _scan(root)
    reference = {row[0]: row for row in _rows(root)}
    assert len(reference) == 16
    span = 1.2 * timed(lambda: (shutil.rmtree(root / ".kiln"), _scan(root)))

    def setup(i: int) -> None:
        if i % 2 == 0:  # a cold rebuild: the index deleted
            shutil.rmtree(root / ".kiln", ignore_errors=True)
        else:  # a rebuild of an index of an older schema: kiln empties and refills it
            if not (root / ".kiln" / "index.sqlite").exists():
                _scan(root)
            conn = sqlite3.connect(root / ".kiln" / "index.sqlite")
            conn.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
            conn.commit()
            conn.close()

    partial = 0

    def check(i: int) -> None:
        nonlocal partial
        if (root / ".kiln" / "index.sqlite").exists():
            rows = _rows(root)
            for row in rows:  # whatever was committed is whole and right
                assert reference[row[0]] == row
            partial += 0 < len(rows) < len(reference)
        if i % 5 == 4:  # the next scan completes it
            _scan(root)
            assert {row[0]: row for row in _rows(root)} == reference

    report = kill_trials(setup, lambda: _scan(root), check, TRIALS, span)
    assert report.trials == TRIALS and report.killed >= TRIALS // 3, report
    assert partial > 0, "no kill landed between two commits of the rebuild"
