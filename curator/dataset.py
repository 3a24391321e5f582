"""``Dataset``: a dataset folder (or kohya TOML) with its layout, its index and its health.

    ds = Dataset.open("/data/my_lora")        # reads the layout, opens .kiln/index.sqlite
    ds.scan()                                  # incremental: only new/changed files are probed
    records = ds.images()                      # ImageRecord list from the index (refreshes once if needed)
    flags = ds.flags()                         # every finding: files, sizes, captions, duplicates
"""

from __future__ import annotations

import sqlite3
from itertools import islice
from operator import attrgetter, le
from pathlib import Path
from typing import TYPE_CHECKING

from curator.index import Index
from curator.layout import DatasetLayout, LayoutError, load_layout
from curator.records import FLAG_KINDS, Flag, ImageRecord
from curator.scan.config import ScanConfig
from curator.scan.scanner import (
    ProgressCallback,
    ScanProgress,
    ScanSummary,
    WalkResult,
    record_from_row,
    records_match_walk,
    scan_dataset,
)

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from curator.buckets import BucketChoice
    from curator.dupes import Cluster, Features
    from curator.scan.quality import ImageStats

__all__ = ["Dataset", "DatasetError", "EmptyDatasetError", "ScanConfig", "ScanProgress", "ScanSummary"]

_KIND_ORDER = {kind: n for n, kind in enumerate(FLAG_KINDS)}


class DatasetError(LayoutError):
    """The dataset cannot be read at all (missing, not a folder, no permission)."""


class EmptyDatasetError(LayoutError):
    """The folder holds no image: nothing to index, so nothing (no ``.kiln/``) is written."""


def empty_dataset_message(layout: DatasetLayout) -> str:
    """What to tell a user who pointed kiln at a folder without images: where kiln looked, for what."""
    from curator.layout import IMAGE_EXTENSIONS

    kinds = " ".join(sorted(IMAGE_EXTENSIONS))
    if layout.source == "flat":
        where = f"{layout.root} holds no image file ({kinds}) and no kohya <repeats>_<name>/ folder"
    else:
        folders = ", ".join(f"{s.rel_dir or '.'}/" for s in layout.subsets[:5])
        more = f" and {len(layout.subsets) - 5} more" if len(layout.subsets) > 5 else ""
        where = f"the {len(layout.subsets)} subset folder(s) of {layout.root} ({folders}{more}) hold no image file ({kinds})"
    return f"no images: {where}; nothing was written (no .kiln/ index)"


GIVEN_SOURCE = "the command line"


def choose_buckets(layout: DatasetLayout, config: ScanConfig) -> BucketChoice:
    """The bucket settings a dataset is looked at with: the options ``config`` gives (the command line), over
    the train config it names (its ``[dataset]``), over the dataset TOML's, over kohya's defaults (see
    ``curator.buckets.choose_bucket_settings``). Raises ``LayoutError`` when the train config cannot be read."""
    from curator.buckets import choose_bucket_settings, read_train_config_buckets

    layers: list[tuple[str, dict[str, object]]] = []
    if layout.source == "toml":
        name = layout.toml_path.name if layout.toml_path is not None else "TOML"
        layers.append((f"the dataset TOML {name}", dict(layout.toml_settings)))
    if config.train_config is not None:
        try:
            train = read_train_config_buckets(config.train_config)
        except ValueError as exc:
            raise LayoutError(str(exc)) from None
        layers.append((train.source, train.options))
    layers.append((GIVEN_SOURCE, config.bucket_options()))
    spelling = {GIVEN_SOURCE: {"resolution": "--resolution", "min_bucket": "--min-bucket",
                               "max_bucket": "--max-bucket", "step": "--step", "no_upscale": "--no-upscale"}}
    return choose_bucket_settings(*layers, spelling=spelling)


class Dataset:
    """An open dataset. Use :meth:`open`; call :meth:`close` (or use ``with``) when done."""

    def __init__(self, layout: DatasetLayout, index: Index, config: ScanConfig, buckets: BucketChoice) -> None:
        self.layout = layout
        self.index = index
        self.config = config
        self.buckets = buckets  # the one set of bucket settings (checks, bucket: queries, kiln buckets, the TUI)
        self._walk: WalkResult | None = None
        self._records: list[ImageRecord] | None = None
        self._indexed: tuple[int, list[ImageRecord]] | None = None  # (data_version, records) of indexed_records
        self._by_path: dict[str, ImageRecord] | None = None
        self._clusters: dict[int, list[Cluster]] = {}  # duplicate clusters by threshold, until the next scan
        self.last_summary: ScanSummary | None = None

    @classmethod
    def open(
        cls,
        path: Path | str,
        caption_extension: str | None = None,
        config: ScanConfig | None = None,
        *,
        quiet: bool = False,
    ) -> Dataset:
        """Open a dataset folder or kohya TOML; raises ``LayoutError`` with the reason when it cannot
        (``EmptyDatasetError`` for a folder without images that has no index yet: nothing is created)."""
        config = config or ScanConfig()
        if caption_extension is not None:
            config = config.model_copy(update={"caption_extension": caption_extension})
        layout = load_layout(path, config.caption_extension)
        buckets = choose_buckets(layout, config)
        if not Index.exists(layout.root) and not layout.has_images():
            raise EmptyDatasetError(empty_dataset_message(layout))
        index = Index.open(layout.root, quiet=quiet)
        return cls(layout, index, config, buckets)

    @property
    def root(self) -> Path:
        return self.layout.root

    # ------------------------------------------------------------------------------------------- scanning

    def scan(self, progress: bool | None = None, on_progress: ProgressCallback | None = None) -> ScanSummary:
        """Bring the index up to date (only new/changed files are read).

        ``progress``: a progress bar on stderr (None: when stderr is a terminal). ``on_progress(ScanProgress)``
        is called from this thread after the walk and after every commit to the index (the first after 64
        images, then about every 0.5 s) with the records just committed, so a UI can show them as they come.
        """
        summary, walk = scan_dataset(self.layout, self.index, self.config, progress=progress,
                                     on_progress=on_progress)
        self._walk = walk
        self._records = self._indexed_if_current(summary, walk)
        self._by_path = None
        self._clusters = {}
        self.last_summary = summary
        return summary

    def refresh(self, progress: bool | None = False) -> ScanSummary:
        """Alias of :meth:`scan`, quiet by default (for callers that just want current data)."""
        return self.scan(progress=progress)

    def invalidate(self) -> None:
        """Forget cached records and walk: the next :meth:`images` re-checks the files."""
        self._walk = None
        self._records = None
        self._by_path = None
        self._clusters = {}

    @property
    def walk(self) -> WalkResult:
        if self._walk is None:
            self.scan(progress=False)
        assert self._walk is not None
        return self._walk

    # -------------------------------------------------------------------------------------------- records

    def images(self) -> list[ImageRecord]:
        """Every image from the index, sorted by path. The first call per ``Dataset`` stats the files and
        probes what changed; later calls return the cached list until :meth:`scan` or :meth:`invalidate`."""
        if self._walk is None:
            self.scan(progress=False)
        if self._records is None:
            self._records = self._load_records()
        return self._records

    def indexed_records(self) -> list[ImageRecord]:
        """What the index holds right now, without looking at the files (instant; may be stale). The next
        :meth:`scan` keeps this list as :meth:`images` when it finds them current (no second copy: 57 MB at
        100,000 images)."""
        version = self._data_version()
        records = self._load_records()
        self._indexed = (version, records)
        return records

    def _data_version(self) -> int:
        """SQLite's count of commits made to the index by other connections (another kiln process)."""
        return int(self.index.conn.execute("PRAGMA data_version").fetchone()[0])

    def _indexed_if_current(self, summary: ScanSummary, walk: WalkResult) -> list[ImageRecord] | None:
        """The records of the last :meth:`indexed_records` when the scan just run changed none of them and no
        other process wrote the index since (else None: :meth:`images` reads them again)."""
        indexed, self._indexed = self._indexed, None
        if indexed is None or indexed[0] != self._data_version():
            return None
        records = indexed[1]
        return records if records_match_walk(records, summary, walk) else None

    def _load_records(self) -> list[ImageRecord]:
        subsets = {s.rel_dir: s for s in self.layout.subsets}
        # read in the table's stored order, then put in path order here: ``ORDER BY path`` walks the path index
        # and looks every row up in the table (~0.1 s more CPU at 100,000 images, the TUI's warm start), and the
        # stored order is path order already unless a later scan appended images (then one sort)
        rows = self.index.conn.execute(
            "SELECT path, subset, size, mtime_ns, sha256, width, height, format, mode, frames, exif_rotated, "
            "phash, flags FROM images"
        )
        records = [record_from_row(row, subsets[row[1]]) for row in rows if row[1] in subsets]
        paths = [record.path for record in records]
        if not all(map(le, paths, islice(paths, 1, None))):
            records.sort(key=attrgetter("path"))  # str order is SQLite's BINARY order of the UTF-8 text
        return records

    def record(self, path: str) -> ImageRecord | None:
        """The record of one image by its posix path relative to the root."""
        records = self.images()
        if self._by_path is None or len(self._by_path) != len(records):
            self._by_path = {r.path: r for r in records}
        return self._by_path.get(path)

    # --------------------------------------------------------------------------------------------- health

    def duplicates(self, threshold: int | None = None) -> list[Cluster]:
        """Exact and near duplicate clusters (``curator.dupes.Cluster``), each with its reasons; kept in the
        index between processes while nothing they depend on changes (``curator.dupes.cache``)."""
        from curator.dupes import DupeSettings, find_clusters
        from curator.dupes.cache import cached_clusters

        limit = self.config.near_threshold if threshold is None else threshold
        records = self.images()
        clusters = self._clusters.get(limit)
        if clusters is None:  # once per scan (health flags and the duplicates view share it), kept in the index
            settings = DupeSettings(threshold=limit, geometric=self.config.geometric)

            def compute() -> list[Cluster]:
                return find_clusters(records, pixel_digest=self._pixel_digest,
                                     features=self.duplicate_features(records), settings=settings)  # fmt: skip

            clusters = self._clusters[limit] = cached_clusters(
                self.index, records, settings, self.config.pixel_limit, compute
            )
        return list(clusters)

    def duplicate_features(self, records: list[ImageRecord] | None = None) -> Features:
        """``curator.dupes.Features`` row-aligned with ``records`` (default: :meth:`images`), from the index; the
        search may let go of the thumbnails and have them read again (``Features.reload_thumbs``)."""
        import numpy as np

        from curator.dupes import Features
        from curator.index import to_unsigned64
        from curator.scan.hashing import THUMB_SIDE

        records = self.images() if records is None else records
        n = len(records)
        position = {record.path: k for k, record in enumerate(records)}
        phash = np.zeros(n, dtype=np.uint64)
        mirror = np.zeros(n, dtype=np.uint64)
        valid = np.zeros(n, dtype=bool)
        for path, mirror_hash, has_thumb in self.index.conn.execute(
            "SELECT path, phash_mirror, length(thumb) = ? FROM features", (THUMB_SIDE * THUMB_SIDE,)
        ):
            k = position.get(path)
            record_phash = None if k is None else records[k].phash
            if k is None or record_phash is None or mirror_hash is None or not has_thumb:
                continue
            phash[k] = record_phash
            mirror[k] = to_unsigned64(mirror_hash) or 0
            valid[k] = True
        return Features(phash=phash, mirror=mirror, thumbs=self._thumbnails(position, valid), valid=valid,
                        reload_thumbs=lambda: self._thumbnails(position, valid))  # fmt: skip

    def _thumbnails(self, position: dict[str, int], valid: NDArray[np.bool_]) -> NDArray[np.uint8]:
        """The (n, 64, 64) thumbnails of the ``valid`` rows (zeros elsewhere) by each path's row in ``position``,
        read row by row into the array: a dict of every thumbnail's bytes first held another 0.4 GB at 100,000
        images, which the allocator kept after it was freed."""
        import numpy as np

        from curator.scan.hashing import THUMB_SIDE

        thumbs = np.zeros((len(valid), THUMB_SIDE, THUMB_SIDE), dtype=np.uint8)
        for path, thumb in self.index.conn.execute("SELECT path, thumb FROM features WHERE length(thumb) = ?",
                                                   (THUMB_SIDE * THUMB_SIDE,)):  # fmt: skip
            k = position.get(path)
            if k is not None and valid[k]:
                thumbs[k] = np.frombuffer(thumb, dtype=np.uint8).reshape(THUMB_SIDE, THUMB_SIDE)
        return thumbs

    def _pixel_digest(self, record: ImageRecord) -> str | None:
        from curator.scan.probe import pixel_digest

        row = self.index.conn.execute(
            "SELECT pixel_sha FROM images WHERE path = ? AND sha256 = ?", (record.path, record.sha256)
        ).fetchone()
        if row and row[0]:
            return str(row[0])
        digest = pixel_digest(str(record.abs_path), self.config.pixel_limit)
        if digest is not None:
            try:
                self.index.conn.execute(
                    "UPDATE images SET pixel_sha = ? WHERE path = ? AND sha256 = ?", (digest, record.path, record.sha256)
                )
            except sqlite3.Error:  # a locked or read-only index: the digest is only not kept
                pass
        return digest

    def flags(self, threshold: int | None = None, *, refresh: bool = True) -> list[Flag]:
        """Every finding, sorted by path then kind; also stored in the index's ``flags`` table.

        ``refresh``: first bring the index up to date with the files (a stat walk; captions are always
        read fresh). Pass False right after :meth:`scan`.
        """
        from curator.checks import SizeRules, caption_flags, image_flags, quality_flags
        from curator.dupes import duplicate_flags

        if refresh:
            self.scan(progress=False)
        records = self.images()
        rules = SizeRules.from_config(self.config, self.buckets.settings)
        stats = self.image_stats()
        found: list[Flag] = []
        for record in records:
            # with statistics the quality checks judge transparency (with its colour) instead of the scan's flag
            found += [f for f in image_flags(record, rules) if not (f.kind == "alpha" and record.path in stats)]
        found += quality_flags(records, stats, self.config.quality, rules.bucket_settings, rules.widest_aspect)
        del stats  # 0.1 GB of objects at 100,000 images: free for the checks below to reuse
        found += self._watermark_flags(records)
        found += self._text_flags(records)
        found += caption_flags(self.layout, records, self.walk.other_files)
        found += duplicate_flags(self.duplicates(threshold))
        found.sort(key=lambda f: (f.path, _KIND_ORDER.get(f.kind, 99), f.detail))
        with self.index.transaction() as tx:
            tx.execute("DELETE FROM flags")
            tx.executemany(
                "INSERT INTO flags (path, kind, detail, score) VALUES (?, ?, ?, ?)",
                [(f.path, f.kind, f.detail, f.score) for f in found],
            )
        return found

    def image_stats(self) -> dict[str, ImageStats]:
        """``curator.scan.quality.ImageStats`` of every decoded image, by path, from the index."""
        import json

        from curator.scan.quality import ImageStats

        return {
            path: ImageStats.from_dict(json.loads(text))
            for path, text in self.index.conn.execute("SELECT path, stats FROM features WHERE stats != '{}'")
        }

    def edge_bitmaps(self, records: list[ImageRecord] | None = None) -> tuple[list[ImageRecord], NDArray[np.uint8]]:
        """The records that have an edge bitmap (decoded images) and their bitmaps, packed (n, EDGE_BYTES)
        (``curator.scan.edges``), in the order of ``records`` (default: every image)."""
        import numpy as np

        from curator.scan.edges import EDGE_BYTES

        wanted = records if records is not None else self.images()
        position = {record.path: k for k, record in enumerate(wanted) if record.readable}
        # row by row into one array, as ``duplicate_features`` does: a dict of every blob and their joined copy
        # held about 0.5 GB more at 100,000 images
        packed = np.zeros((len(position), EDGE_BYTES), dtype=np.uint8)
        rows: list[int] = []
        for path, blob in self.index.conn.execute("SELECT path, edges FROM features WHERE edges IS NOT NULL"):
            k = position.get(path)
            if k is None or len(blob) != EDGE_BYTES:
                continue
            packed[len(rows)] = np.frombuffer(blob, dtype=np.uint8)
            rows.append(k)
        packed = packed[: len(rows)]
        if not all(map(le, rows, islice(rows, 1, None))):  # the table's order is path order unless scans appended
            order = np.argsort(np.asarray(rows, dtype=np.intp), kind="stable")
            rows, packed = [rows[i] for i in order], packed[order]
        return [wanted[k] for k in rows], packed

    def _watermark_flags(self, records: list[ImageRecord]) -> list[Flag]:
        from curator.checks.watermark import watermark_flags

        threshold = self.config.quality.watermark
        if threshold is None:
            return []
        chosen, packed = self.edge_bitmaps(records)
        paths = [r.path for r in chosen]
        groups = [r.subset.rel_dir for r in chosen]
        return watermark_flags(paths, packed, [r.phash for r in chosen], threshold, groups)

    def _text_flags(self, records: list[ImageRecord]) -> list[Flag]:
        """``text-heavy`` findings by the ONNX text detector, when one is configured (raises
        ``curator.textdetect.model.TextModelError`` when it cannot be used)."""
        model = self.config.text_model
        if model is None or self.config.quality.text_heavy is None:
            return []
        from curator.textdetect.check import text_flags

        return text_flags(self.text_areas(records), self.config.quality.text_heavy, model.path.name)

    def text_areas(self, records: list[ImageRecord] | None = None, progress: bool = False) -> dict[str, float]:
        """Each decoded image's text area (0..1) by the configured text detector (``ScanConfig.text_model``;
        empty without one), cached in the index; ``progress``: a bar on stderr while the detector runs."""
        model = self.config.text_model
        if model is None:
            return {}
        from curator.autotag.progress import progress_factory
        from curator.textdetect.check import text_areas

        chosen = records if records is not None else self.images()
        with progress_factory(progress, "text detector") as bar:
            return text_areas(self.index, chosen, model, self.config.pixel_limit, progress=bar)

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
