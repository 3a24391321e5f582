"""The scan reports progress and commits early, so a UI can show a cold index filling in."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from curator.dataset import Dataset
from curator.scan import scanner
from curator.scan.config import ScanConfig
from curator.scan.scanner import ScanProgress
from tests.conftest import photo, save_photo, write_caption

COUNT = 90  # above the first batch (64)


def _dataset(root: Path) -> Path:
    base = photo("coffee.png")
    for i in range(COUNT):
        crop = base.crop((i * 3, i * 2, i * 3 + 96 + i % 7, i * 2 + 80))
        save_photo(crop, root / "2_cup" / f"cup{i:03d}.jpg", quality=85)
        write_caption(root / "2_cup" / f"cup{i:03d}.txt", f"cup, coffee, n{i}")
    return root


def test_progress_reports_committed_records_from_the_first_batch(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ds")
    reports: list[ScanProgress] = []
    visible: list[int] = []

    def on_progress(progress: ScanProgress) -> None:
        reports.append(progress)
        conn = sqlite3.connect(f"file:{root / '.kiln' / 'index.sqlite'}?mode=ro", uri=True)
        try:  # what another reader (the TUI) sees at this moment
            visible.append(conn.execute("SELECT count(*) FROM images").fetchone()[0])
        finally:
            conn.close()

    with Dataset.open(root, config=ScanConfig(workers=1)) as ds:
        summary = ds.scan(progress=False, on_progress=on_progress)
        assert summary.new == COUNT
        assert reports[0] == ScanProgress(0, COUNT, ())
        assert visible[0] == 0
        batches = [r for r in reports if r.records]
        assert len(batches) >= 2 and len(batches[0].records) <= scanner.FIRST_BATCH
        assert [r.done for r in batches] == sorted(r.done for r in batches) and batches[-1].done == COUNT
        # every report comes after its records are committed: a separate reader sees them
        assert visible[1:] == [r.done for r in batches]
        paths = [rec.path for r in batches for rec in r.records]
        assert sorted(paths) == sorted(rec.path for rec in ds.images())
        record = batches[0].records[0]
        indexed = {r.path: r for r in ds.indexed_records()}[record.path]
        assert record == indexed and record.subset.repeats == 2 and record.width > 0

        # a warm scan probes nothing and reports only the walk
        reports.clear()
        ds.scan(progress=False, on_progress=on_progress)
        assert reports == [ScanProgress(0, 0, ())]


def test_an_error_in_the_callback_stops_the_scan_and_keeps_what_was_committed(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ds")

    def on_progress(progress: ScanProgress) -> None:
        if progress.records:
            raise KeyboardInterrupt

    with Dataset.open(root, config=ScanConfig(workers=1)) as ds:
        try:
            ds.scan(progress=False, on_progress=on_progress)
        except KeyboardInterrupt:
            pass
        else:
            raise AssertionError("the callback's exception must stop the scan")
        kept = len(ds.indexed_records())
        assert 0 < kept < COUNT
        assert ds.scan(progress=False).new == COUNT - kept  # the next scan finishes the job


def test_worker_pool_starts_when_stderr_has_no_file_descriptor(tmp_path: Path, monkeypatch) -> None:
    """Textual (and pytest) replace sys.stderr with an object without a real fd; forkserver/spawn must work."""
    import threading
    from multiprocessing import resource_tracker

    class Capture:
        def write(self, text: str) -> int:
            return len(text)

        def flush(self) -> None:
            pass

        def fileno(self) -> int:
            return -1

    root = _dataset(tmp_path / "ds")
    resource_tracker._resource_tracker._stop()  # as in a fresh process
    monkeypatch.setattr(sys, "stderr", Capture())
    keep_alive = threading.Event()
    helper = threading.Thread(target=keep_alive.wait, daemon=True)  # threads running: no fork
    helper.start()
    try:
        with Dataset.open(root, config=ScanConfig(workers=2)) as ds:
            assert ds.scan(progress=False).new == COUNT
    finally:
        keep_alive.set()


def test_a_scan_that_changes_nothing_keeps_the_indexed_records(tmp_path: Path) -> None:
    """The TUI lists the index's records, then scans: when the scan finds them current the dataset keeps that
    list (one copy, not two); a changed file, or another process writing the index, makes it read them again."""
    root = _dataset(tmp_path / "ds")
    with Dataset.open(root, config=ScanConfig(workers=1)) as ds:
        ds.scan(progress=False)
    with Dataset.open(root, config=ScanConfig(workers=1)) as ds:
        listed = ds.indexed_records()
        ds.scan(progress=False)
        assert ds.images() is listed

        listed = ds.indexed_records()
        photo("chelsea.png").resize((120, 90)).save(root / "2_cup" / "cup005.jpg", quality=85)
        ds.scan(progress=False)
        fresh = ds.images()
        assert fresh is not listed and {r.path: r for r in fresh}["2_cup/cup005.jpg"].width == 120

        listed = ds.indexed_records()
        with Dataset.open(root, config=ScanConfig(workers=1)) as other, other.index.transaction() as tx:
            tx.execute("UPDATE images SET width = 7 WHERE path = ?", ("2_cup/cup001.jpg",))  # another process
        ds.scan(progress=False)
        assert ds.images() is not listed
        assert {r.path: r for r in ds.images()}["2_cup/cup001.jpg"].width == 7
