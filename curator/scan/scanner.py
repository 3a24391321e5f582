"""The incremental, parallel scan.

1. Walk every subset folder with ``os.scandir`` (no recursion, like kohya): images and their size/mtime, plus
   the names of every other file (captions) for the checks.
2. Compare with the index: new files and files whose size or mtime changed are probed; files gone from disk
   leave the index.
3. Probe in worker processes (``ProcessPoolExecutor.map`` with chunks); the parent writes results to sqlite in
   batches, so memory stays flat whatever the dataset size. The first batch is committed after
   ``FIRST_BATCH`` results and then at least every ``COMMIT_SECONDS``, so readers of the index (the TUI)
   see the images appear from the start of a long scan; ``on_progress`` is told after every commit.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from curator.index import OPEN_NEEDS, Index, to_signed64, to_unsigned64
from curator.layout import DatasetLayout, Subset, is_image_name, is_utf8_name
from curator.records import Flag, ImageRecord
from curator.scan.config import ScanConfig

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext

    from curator.scan.probe import ProbeResult

PARALLEL_MIN_FILES = 24  # below this, probing in-process beats starting workers
BATCH = 2048  # most results held before a commit
FIRST_BATCH = 64  # the first commit comes early, so a cold index shows images at once
COMMIT_SECONDS = 0.5  # later commits at least this often
CHUNKSIZE = 8
WINDOW = 2048  # files submitted to the pool at a time
HEAD = 16  # files probed in-process while the worker processes start
ROW_BYTES = 12_288  # index space per image (its row, its features: 4 KiB thumbnail, 2 KiB edge map, statistics; its
# share of the path index, the WAL copy), for messages


@dataclass(frozen=True, slots=True)
class FileEntry:
    """An image found on disk."""

    path: str  # posix, relative to the root
    abs_path: str
    subset: str  # the subset's rel_dir
    size: int
    mtime_ns: int


@dataclass(slots=True)
class WalkResult:
    """Everything one walk of the dataset saw: images, and per subset folder the other file names."""

    images: dict[str, FileEntry] = field(default_factory=dict)
    other_files: dict[str, set[str]] = field(default_factory=dict)  # subset rel_dir -> names (captions...)
    unreadable_dirs: list[str] = field(default_factory=list)
    bad_names: list[str] = field(default_factory=list)  # names that are not valid UTF-8 (skipped)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why): symlink loops, unreadable entries


def entry_problem(exc: OSError) -> str:
    """Why a directory entry cannot be used, in words (a symlink loop, a dangling link, no permission)."""
    import errno

    if exc.errno == errno.ELOOP:
        return "a symbolic link loop"
    return exc.strerror or str(exc)


@dataclass(slots=True)
class ScanSummary:
    """What a scan did."""

    images: int = 0
    new: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    seconds: float = 0.0
    probe_seconds: float = 0.0
    flags_by_kind: dict[str, int] = field(default_factory=dict)
    unreadable_dirs: list[str] = field(default_factory=list)
    bad_names: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why) of image names not scanned

    @property
    def probed(self) -> int:
        return self.new + self.changed

    @property
    def images_per_second(self) -> float:
        return self.probed / self.probe_seconds if self.probe_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "images": self.images,
            "new": self.new,
            "changed": self.changed,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 1),
            "flags_by_kind": dict(sorted(self.flags_by_kind.items())),
            "unreadable_dirs": self.unreadable_dirs,
            "skipped_names": self.bad_names,
            "skipped_files": [{"path": path, "reason": why} for path, why in self.skipped],
        }


def records_match_walk(records: Sequence[ImageRecord], summary: ScanSummary, walk: WalkResult) -> bool:
    """True when a scan (``summary``, ``walk``) found nothing that ``records`` (read from the index before it)
    do not show: no new, changed, removed or moved image."""
    if summary.probed or summary.removed or len(records) != len(walk.images):
        return False
    images = walk.images
    for record in records:
        entry = images.get(record.path)
        if entry is None or entry.subset != record.subset.rel_dir:
            return False
    return True


def walk_layout(layout: DatasetLayout) -> WalkResult:
    """Stat every file directly inside each subset folder (kohya does not recurse)."""
    result = WalkResult()
    for subset in layout.subsets:
        others: set[str] = set()
        result.other_files[subset.rel_dir] = others
        prefix = f"{subset.rel_dir}/" if subset.rel_dir else ""
        try:
            entries = os.scandir(subset.image_dir)
        except OSError:
            result.unreadable_dirs.append(subset.rel_dir or ".")
            continue
        with entries:
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                if not is_utf8_name(name):
                    result.bad_names.append(prefix + name.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
                    continue
                try:
                    if not entry.is_file():
                        continue
                    if is_image_name(name):
                        stat = entry.stat()
                        rel = prefix + name
                        result.images[rel] = FileEntry(rel, entry.path, subset.rel_dir, stat.st_size, stat.st_mtime_ns)
                    else:
                        others.add(name)
                except OSError as exc:
                    if is_image_name(name):  # an image kohya would fail on: say which and why
                        result.skipped.append((prefix + name, entry_problem(exc)))
                    continue
    return result


@dataclass(frozen=True, slots=True)
class ScanProgress:
    """Where a running scan is; passed to ``scan_dataset(on_progress=...)`` after each commit.

    ``records`` are the images committed to the index since the previous report (new or changed files);
    the first report (``done == 0``) comes right after the walk, with ``total`` the number of files to probe.
    """

    done: int
    total: int
    records: tuple[ImageRecord, ...] = ()


ProgressCallback = Callable[[ScanProgress], None]


def ignore_sigint() -> None:
    """In a worker: Ctrl-C (sent to the terminal's whole process group) is the parent's to handle, which
    stops the scan (or, in the trainer, stops the run) and keeps what was committed."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _probe_args(entry: FileEntry, pixel_limit: int) -> tuple[str, str, int, int, int]:
    return (entry.abs_path, entry.path, entry.size, entry.mtime_ns, pixel_limit)


def _probe_star(args: tuple[str, str, int, int, int]) -> ProbeResult:
    from curator.scan.probe import probe_file

    return probe_file(*args)


def _mp_context() -> BaseContext:
    import multiprocessing

    # fork is fastest, but unsafe once the process runs threads (e.g. inside the TUI).
    method = "fork" if threading.active_count() == 1 and sys.platform == "linux" else "forkserver"
    if method not in multiprocessing.get_all_start_methods():
        method = "spawn"
    if method != "fork":
        _ensure_resource_tracker()
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(["curator.scan.probe"])  # workers start with PIL, numpy and scipy loaded
    return context


def _ensure_resource_tracker() -> None:
    """Start multiprocessing's resource tracker with a real stderr before any forkserver/spawn child.

    The tracker hands ``sys.stderr.fileno()`` to its process; under a TUI (Textual, pytest capture)
    ``sys.stderr`` is a stand-in whose ``fileno()`` is -1 or raises, and starting the first child then fails
    with "bad value(s) in fds_to_keep". The tracker is started once per process, with ``sys.__stderr__``
    (or /dev/null when there is none) in place for that moment.
    """
    from multiprocessing import resource_tracker

    def usable(stream: TextIO | None) -> bool:
        try:
            return stream is not None and stream.fileno() >= 0
        except (OSError, ValueError, AttributeError):
            return False

    if usable(sys.stderr):
        resource_tracker.ensure_running()
        return
    with _TRACKER_LOCK:
        saved = sys.stderr
        devnull = None
        if usable(sys.__stderr__):
            sys.stderr = sys.__stderr__
        else:
            devnull = open(os.devnull, "w")  # noqa: SIM115 - closed below
            sys.stderr = devnull
        try:
            resource_tracker.ensure_running()
        finally:
            sys.stderr = saved
            if devnull is not None:
                devnull.close()


_TRACKER_LOCK = threading.Lock()


def probe_entries(entries: list[FileEntry], config: ScanConfig) -> Iterator[ProbeResult]:
    """Probe files, in worker processes when there are enough of them; yields in input order.

    Work is submitted in windows (two in flight), so the number of pending tasks, and the memory they hold,
    stays bounded however many files there are.
    """
    from curator.scan.probe import probe_file  # PIL and numpy load only when something must be read

    limit = config.pixel_limit
    workers = min(config.worker_count, max(1, len(entries) // CHUNKSIZE))
    if workers <= 1 or len(entries) < PARALLEL_MIN_FILES:
        for entry in entries:
            yield probe_file(*_probe_args(entry, limit))
        return
    from concurrent.futures import ProcessPoolExecutor  # imported here: opening a dataset stays light

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context(), initializer=ignore_sigint)
    try:
        # The workers take a moment to start (and import PIL/numpy): meanwhile this process probes the first
        # few files itself, so the first results (and the first commit) come at once.
        head = entries[:HEAD]
        pending: Iterator[ProbeResult] | None = None
        for start in range(HEAD, len(entries), WINDOW):
            window = [_probe_args(e, limit) for e in entries[start : start + WINDOW]]
            submitted = pool.map(_probe_star, window, chunksize=CHUNKSIZE)
            if head:
                for entry in head:
                    yield probe_file(*_probe_args(entry, limit))
                head = []
            if pending is not None:
                yield from pending
            pending = submitted
        if pending is not None:
            yield from pending
    except BaseException:
        # Ctrl-C or an error: drop queued work instead of finishing it; committed batches stay in the index
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


_INSERT = (
    "INSERT OR REPLACE INTO images (path, subset, size, mtime_ns, sha256, width, height, format, mode, frames, "
    "exif_rotated, phash, pixel_sha, flags) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)"
)


_INSERT_FEATURES = (
    "INSERT OR REPLACE INTO features (path, phash_mirror, thumb, stats, edges) VALUES (?, ?, ?, ?, ?)"
)
FeatureRow = tuple[str, int | None, bytes | None, str, bytes | None]
# Decoded images whose features lack what a newer schema adds (an upgraded index): probed again once.
_INCOMPLETE = "SELECT path FROM features WHERE stats != '{}' AND edges IS NULL"


def _feature_row(result: ProbeResult) -> FeatureRow:
    return (result.path, to_signed64(result.phash_mirror), result.thumb, result.stats or "{}", result.edges)


def _row(result: ProbeResult, subset: str) -> tuple[object, ...]:
    return (
        result.path,
        subset,
        result.size,
        result.mtime_ns,
        result.sha256,
        result.width,
        result.height,
        result.format,
        result.mode,
        result.frames,
        int(result.exif_rotated),
        to_signed64(result.phash),
        json.dumps(result.flags, ensure_ascii=False) if result.flags else "[]",
    )


def record_from_row(row: tuple[Any, ...], subset: Subset) -> ImageRecord:
    """An ``ImageRecord`` from an ``images`` row (path, subset, size, mtime_ns, sha256, width, height,
    format, mode, frames, exif_rotated, phash, flags[, pixel_sha ignored])."""
    path, _subset, size, mtime, sha, width, height, fmt, mode, frames, rotated, phash, flags = row[:13]
    # positional, in ImageRecord's field order (the TUI's start and every bulk edit build 100k of these)
    return ImageRecord(
        path,
        subset,
        size,
        mtime,
        sha,
        width,
        height,
        fmt,
        mode,
        frames,
        bool(rotated),
        to_unsigned64(phash),
        [Flag(path, kind, detail) for kind, detail in json.loads(flags)] if flags != "[]" else [],
    )


class _Progress:
    """A rich progress bar on stderr (files/s, ETA), or nothing."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.progress = None
        if not enabled or total == 0:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("scanning"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.task = self.progress.add_task("scan", total=total, rate="")
        self.started = time.perf_counter()
        self.progress.start()

    def advance(self, count: int, done: int) -> None:
        if self.progress is not None:
            now = time.perf_counter()
            rate = done / max(1e-6, now - self.started)
            self.progress.update(self.task, advance=count, rate=f"{rate:,.0f} files/s")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def scan_dataset(
    layout: DatasetLayout,
    index: Index,
    config: ScanConfig,
    progress: bool | None = None,
    walk: WalkResult | None = None,
    on_progress: ProgressCallback | None = None,
) -> tuple[ScanSummary, WalkResult]:
    """Bring the index up to date with the files; returns the summary and the walk it used.

    ``progress``: a progress bar on stderr (None: when stderr is a terminal). ``on_progress`` is called in
    this thread after the walk and after every commit (see :class:`ScanProgress`); an exception it raises
    stops the scan (what was committed stays in the index).
    """
    started = time.perf_counter()
    walk = walk or walk_layout(layout)
    conn = index.conn
    known: dict[str, tuple[int, int, str]] = {
        path: (size, mtime, subset)
        for path, size, mtime, subset in conn.execute("SELECT path, size, mtime_ns, subset FROM images")
    }
    summary = ScanSummary(unreadable_dirs=walk.unreadable_dirs, bad_names=walk.bad_names, skipped=walk.skipped)
    to_probe: list[FileEntry] = []
    moved: list[tuple[str, str]] = []
    for path, entry in walk.images.items():
        old = known.get(path)
        if old is None:
            summary.new += 1
            to_probe.append(entry)
        elif old[0] != entry.size or old[1] != entry.mtime_ns:
            summary.changed += 1
            to_probe.append(entry)
        else:
            summary.unchanged += 1
            if old[2] != entry.subset:
                moved.append((entry.subset, path))
    queued = {e.path for e in to_probe}
    for (path,) in conn.execute(_INCOMPLETE):
        if path in walk.images and path not in queued:
            summary.changed += 1
            summary.unchanged -= 1
            to_probe.append(walk.images[path])
    removed = [path for path in known if path not in walk.images]
    summary.removed = len(removed)
    # Images refused under a lower pixel limit are probed again when the limit allows them now.
    stored_limit = index.get_meta("pixel_limit")
    if stored_limit is not None and int(stored_limit) < config.pixel_limit:
        queued = {e.path for e in to_probe}
        for (path,) in conn.execute(
            "SELECT path FROM images WHERE flags LIKE '%\"too-large\"%' AND width * height <= ?", (config.pixel_limit,)
        ):
            if path in walk.images and path not in queued:
                summary.changed += 1
                summary.unchanged -= 1
                to_probe.append(walk.images[path])
    if removed or moved:
        with index.transaction() as tx:
            tx.executemany("DELETE FROM images WHERE path = ?", [(p,) for p in removed])
            tx.executemany("DELETE FROM features WHERE path = ?", [(p,) for p in removed])
            tx.executemany("UPDATE images SET subset = ? WHERE path = ?", moved)
    if on_progress is not None:
        on_progress(ScanProgress(0, len(to_probe)))
    if to_probe:
        show = _isatty(sys.stderr) if progress is None else progress
        bar = _Progress(show, len(to_probe))
        probe_started = time.perf_counter()
        subsets = {s.rel_dir: s for s in layout.subsets}
        batch: list[tuple[object, ...]] = []
        feature_batch: list[FeatureRow] = []
        done = 0
        limit = FIRST_BATCH
        last_commit = time.perf_counter()

        def commit() -> None:
            nonlocal batch, feature_batch, last_commit, limit
            needed = (len(to_probe) - done + len(batch)) * ROW_BYTES + OPEN_NEEDS  # what is left to index
            with index.transaction(f"indexing {len(to_probe)} new or changed image(s)", needed) as tx:
                tx.executemany(_INSERT, batch)
                tx.executemany(_INSERT_FEATURES, feature_batch)
            if on_progress is not None:
                records = tuple(record_from_row(row, subsets[row[1]]) for row in batch if row[1] in subsets)
                on_progress(ScanProgress(done, len(to_probe), records))
            batch = []
            feature_batch = []
            last_commit = time.perf_counter()
            limit = BATCH

        try:
            for result in probe_entries(to_probe, config):
                batch.append(_row(result, walk.images[result.path].subset))
                feature_batch.append(_feature_row(result))
                done += 1
                bar.advance(1, done)
                if len(batch) >= limit or time.perf_counter() - last_commit >= COMMIT_SECONDS:
                    commit()
            if batch:
                commit()
        finally:
            bar.close()
        summary.probe_seconds = time.perf_counter() - probe_started
    if to_probe or removed or moved or stored_limit != str(config.pixel_limit):
        # an unchanged dataset writes nothing: reading commands work while another process holds the index
        index.set_meta("pixel_limit", str(config.pixel_limit))
        index.set_meta("last_scan", str(time.time()))
    summary.images = len(walk.images)
    counts: Counter[str] = Counter()
    for (flags,) in conn.execute("SELECT flags FROM images WHERE flags != '[]'"):
        counts.update(kind for kind, _detail in json.loads(flags))
    summary.flags_by_kind = dict(counts)
    summary.seconds = time.perf_counter() - started
    return summary, walk


def _isatty(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def abs_path_of(root: Path, rel: str) -> Path:
    return root.joinpath(*rel.split("/"))
