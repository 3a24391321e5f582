"""The TUI's one door to the headless curator: opens the dataset, builds browser rows, forwards edits.

Thin by design: every decision (layout, scanning, flags, buckets, caption format, journal, queries,
duplicates, trash) is the curator's; this module only adapts its records into ``Row`` view-models and keeps
the TUI's copy of caption text fresh. Methods here may block (disk): call them from worker threads.

The model also holds what the user is looking at (``state``: filter, selection, current image, see
tui/state.py) and announces every change on ``changes`` (rows loaded by the loader, captions written or
re-read here, buckets re-computed here); views follow that feed as Textual messages (tui/messages.py).
"""

from __future__ import annotations

import gc
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from curator.captions.files import caption_path, caption_target, caption_targets
from tui.rows import Row
from tui.state import BrowseState, BucketsChanged, CaptionsChanged, ChangeFeed, Predicate

if TYPE_CHECKING:
    from rich.text import Text

    from curator.buckets import BucketSettings, TrainConfigBuckets
    from curator.captions import Caption
    from curator.dataset import Dataset
    from curator.dupes import Cluster
    from curator.records import Flag, ImageRecord
    from curator.scan.config import QualityThresholds
    from curator.scan.scanner import ProgressCallback, ScanSummary
    from curator.tags.items import CaptionItem
    from curator.tags.journal import ApplyResult, CaptionChange, JournalEntry, JournalWatch
    from curator.tags.ops import AbsorbCandidate
    from curator.tags.query import QueryItem
    from curator.tags.suggest import Suggestion
    from curator.tags.suspects import Suspect
    from curator.textdetect.config import TextModelConfig
    from curator.trash import TrashBatch

FlagsByPath = dict[str, list["Flag"]]
PlanParams = Mapping[str, object]  # a bulk operation's inputs (``DatasetModel.plan``)

INLINE_PRELOAD_MAX = 25_000  # indexed images read before the first paint; more are read in a background thread
UNKNOWN_MTIME = -1  # caption bytes came from the index cache; the next poll learns the file's mtime


class ModelError(Exception):
    """Something the UI should show as a message (the text says what and how to fix it)."""


def error_message(exc: BaseException, doing: str) -> str:
    """What went wrong while ``doing`` (e.g. "preview"), as the UI says it: the curator's own errors (a bad
    argument, query, rule file, scope) already say what to fix and are shown as they are; a file error names
    the file and the reason; anything else is called an unexpected error, never shown as bare exception text."""
    from curator.tags.consolidate import RulesError
    from curator.tags.items import ScopeError
    from curator.tags.ops import OperationError
    from curator.tags.query import QueryError
    from curator.textsafe import printable

    if isinstance(exc, OperationError | QueryError | RulesError | ScopeError | ModelError):
        return printable(f"Cannot {doing}: {exc}")
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        where = f" {exc.filename}" if exc.filename else ""
        return printable(f"Cannot {doing}: could not read{where} ({reason}); nothing was written")
    return printable(f"Cannot {doing}: an unexpected {type(exc).__name__} ({exc}); nothing was written. "
                     "This is a kiln bug: please report it with what you did")


def _caption_targets(rows: list[Row]) -> list[Path]:
    """The caption target of every row (``curator.captions.files.caption_targets``, the fast batch form); a
    row that already knows its target keeps it."""
    todo = [row.record for row in rows if row.caption_target is None]
    fresh = iter(caption_targets(todo))
    return [row.caption_target if row.caption_target is not None else Path(next(fresh)) for row in rows]


def _carry_caption(old: Row, row: Row) -> None:
    """Keep what ``old`` knew about its caption in its replacement ``row`` (so the list does not blink)."""
    if old.captions_loaded:
        row.caption_path, row.caption_raw = old.caption_path, old.caption_raw
        row.caption_mtime_ns, row.tags, row.captions_loaded = old.caption_mtime_ns, old.tags, True
        row.caption_target = old.caption_target


def preload(root: Path, quality: QualityThresholds | None = None, train_config: Path | None = None,
            text_model: TextModelConfig | None = None) -> DatasetModel:
    """The model of the dataset at ``root`` with its preload running in a thread (opening included): ``kiln
    DATASET`` calls this before it imports Textual, so the index is read while the UI's modules load."""
    model = DatasetModel(root, quality=quality, train_config=train_config, text_model=text_model)
    model.start_preload(background=True)
    return model


class DatasetModel:
    """The open dataset as the TUI sees it."""

    def __init__(self, root: Path, quality: QualityThresholds | None = None, train_config: Path | None = None,
                 text_model: TextModelConfig | None = None) -> None:
        self.root = Path(root)
        self.quality = quality  # the image-quality thresholds of the health pass (None: the defaults)
        self.text_model = text_model  # the text detector of the health pass's text-heavy check (None: not run)
        self.train_config = train_config  # a kiln train config whose [dataset] bucket options to use
        self._dataset: Dataset | None = None
        self.rows: list[Row] = []
        self.by_path: dict[str, Row] = {}
        self.bucket_settings: BucketSettings | None = None
        self.bucket_source = ""  # where bucket_settings come from, in words (shown in the Buckets view)
        self.bucket_error = ""  # why the dataset's own bucket options could not be used ('' when they could)
        self.train_steps: TrainConfigBuckets | None = None  # the train config's batch size and length
        self.changes = ChangeFeed()
        self.state = BrowseState(self.changes)
        self._lock = threading.RLock()
        self.flag_list: list[Flag] = []
        self.clusters: list[Cluster] = []  # duplicate clusters found by the last health pass
        self._vocab: Counter[str] | None = None
        self._bucket_cache: dict[tuple[int, int], tuple[int, int] | None] = {}
        self._bucket_cache_settings: BucketSettings | None = None
        self._preload: threading.Thread | None = None
        self._preload_started = False
        self._preload_error: BaseException | None = None
        self._journal_watch: JournalWatch | None = None

    @property
    def dataset(self) -> Dataset:
        """The open curator ``Dataset`` (raises ``ModelError`` before :meth:`open` succeeded)."""
        if self._dataset is None:
            raise ModelError(f"{self.root} is not open")
        return self._dataset

    @property
    def is_open(self) -> bool:
        return self._dataset is not None

    # ----- opening and scanning ---------------------------------------------------------------
    def start_preload(self, inline_max: int | None = None, background: bool = False) -> None:
        """Open the dataset and build the rows the index already knows, before the UI's first paint.

        ``background``: all of it in a thread, opening included (what ``kiln DATASET`` does before it even
        imports Textual, so that reading 100,000 indexed images overlaps the UI's imports and start-up; until
        it is done the model is not open and has no rows).

        Up to ``inline_max`` (default ``INLINE_PRELOAD_MAX``) indexed images this runs here and now (10,000 rows
        take ~0.2 s): a second thread would not be faster, since the GIL serialises it with Textual's start-up,
        and the switching between the two costs more than it saves (measured: bench/bench_tui.py). A larger
        index is read in a background thread so that the window still appears at once. :meth:`finish_preload`
        collects either."""
        if self._preload_started or self._dataset is not None:
            return
        self._preload_started = True
        if background:
            self._preload = threading.Thread(target=self._open_and_preload, name="kiln-preload", daemon=True)
            self._preload.start()
            return
        try:
            self.open()
            count = self.dataset.index.conn.execute("SELECT count(*) FROM images").fetchone()[0]
        except BaseException as exc:  # noqa: BLE001 - handed to finish_preload's caller
            self._preload_error = exc
            return
        if count <= (INLINE_PRELOAD_MAX if inline_max is None else inline_max):
            self._run_preload()
            return
        self._preload = threading.Thread(target=self._run_preload, name="kiln-preload", daemon=True)
        self._preload.start()

    def _open_and_preload(self) -> None:
        try:
            self.open()
        except BaseException as exc:  # noqa: BLE001 - handed to finish_preload's caller
            self._preload_error = exc
            return
        self._run_preload()

    def _run_preload(self) -> None:
        from curator.tags.bulk import paused_gc

        try:
            with paused_gc():  # 20,000 acyclic objects: the collector's passes would cost ~15 % here
                records = self.indexed_records()
                if records and not self.rows:
                    self.load_rows(records, captions=False)
                # they live as long as the dataset is open: out of the collector's reach, or its next full pass
                # (soon after it resumes, before the first paint) walks them all (~40 ms on 10,000 images)
                gc.freeze()
        except BaseException as exc:  # noqa: BLE001 - handed to finish_preload's caller
            self._preload_error = exc

    def finish_preload(self) -> None:
        """Wait for :meth:`start_preload` (if started) and re-raise what it failed with; opens the dataset when
        no preload ran."""
        thread = self._preload
        if thread is not None:
            thread.join()
        error, self._preload_error = self._preload_error, None
        if error is not None:
            raise error
        if self._dataset is None:
            self.open()

    def open(self) -> None:
        from curator.buckets import read_train_config_buckets
        from curator.dataset import Dataset
        from curator.scan.config import ScanConfig

        try:
            config = ScanConfig(train_config=self.train_config, text_model=self.text_model)
            if self.quality is not None:
                config = ScanConfig(quality=self.quality, train_config=self.train_config, text_model=self.text_model)
            self._dataset = Dataset.open(self.root, config=config, quiet=True)
            if self.train_config is not None:
                self.train_steps = read_train_config_buckets(self.train_config)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot open {self.root}: {exc}") from exc
        self._use_dataset_buckets()

    @property
    def index_note(self) -> str:
        """A line to show when the index had to live outside the dataset (read-only folder)."""
        index = self._dataset.index if self._dataset is not None else None
        if index is not None and getattr(index, "in_cache", False):
            return f"read-only dataset: index in {index.kiln_dir}"
        return ""

    def _use_dataset_buckets(self) -> None:
        """The dataset's bucket settings (``Dataset.buckets``: the train config's, the dataset TOML's, else kohya's
        defaults: what ``kiln buckets``, ``kiln check`` and ``bucket:`` queries use); kohya's defaults, with the
        reason in ``bucket_error``, when kohya would refuse them."""
        from curator.buckets import DEFAULTS_SOURCE, BucketSettings

        choice = self.dataset.buckets
        if choice.settings is not None:
            self.bucket_settings, self.bucket_source, self.bucket_error = choice.settings, choice.source, ""
        else:
            self.bucket_settings, self.bucket_source, self.bucket_error = BucketSettings(), DEFAULTS_SOURCE, choice.error

    def indexed_records(self) -> list[ImageRecord]:
        """What the index already knows, without touching the files (instant on a warm index)."""
        with self._lock:
            return list(self.dataset.indexed_records())

    def scan(self, on_progress: ProgressCallback | None = None) -> ScanSummary:
        """Incremental scan (new/changed files only); ``on_progress(curator ScanProgress)`` after each commit,
        from this thread, with the records just indexed."""
        with self._lock:
            return self.dataset.scan(progress=False, on_progress=on_progress)

    def rows_match_scan(self, summary: ScanSummary) -> bool:
        """True when a scan that just ran found nothing the rows do not already show (no new, changed, removed
        or moved image): the rows built from the index can stay as they are."""
        from curator.scan.scanner import records_match_walk

        return records_match_walk([row.record for row in self.rows], summary, self.dataset.walk)

    def scanned_records(self) -> list[ImageRecord]:
        with self._lock:
            return list(self.dataset.images())

    def all_flags(self, refresh: bool = True) -> FlagsByPath:
        """Every health flag by image path (``curator.tags.items.flags_by_image``: flags on a caption file
        count for its image). ``refresh``: first bring the index up to date (pass False right after :meth:`scan`)."""
        from curator.tags.items import flags_by_image

        with self._lock:
            flags = self.dataset.flags(refresh=refresh)
        self.flag_list = flags
        return flags_by_image(flags, [row.record for row in self.rows])

    def load_rows(self, records: list[ImageRecord], flags: FlagsByPath | None = None,
                  captions: bool = True) -> list[Row]:
        """Rows for ``records``; replaces ``self.rows``. Caption data known from the previous rows is carried
        over (so the list does not blink); ``captions`` re-reads them all (see :meth:`read_captions`). The
        selection forgets images that are gone. The caller announces ``RowsLoaded`` when it wants the views to
        show them (the loader does, at most every half second while a scan runs)."""
        previous = self.by_path
        flags = flags or {}
        rows = self._rows(records, flags)
        for row in rows:
            old = previous.get(row.path)
            if old is not None:
                _carry_caption(old, row)
        with self._lock:
            self.rows = rows
            self.by_path = {r.path: r for r in rows}
            self._vocab = None
        self.state.retain(self.by_path)
        if captions:
            self.read_captions(rows)
        return rows

    def add_records(self, records: Iterable[ImageRecord], captions: bool = True) -> list[Row]:
        """Add (or replace, by path) the rows of ``records`` — the images a running scan just indexed — keeping
        every other row; returns the new rows. ``captions``: read theirs (from the caption cache)."""
        fresh = self._rows(records)
        if not fresh:
            return []
        with self._lock:
            rows = list(self.rows)
            by_path = dict(self.by_path)
            positions = {r.path: n for n, r in enumerate(rows)} if any(r.path in by_path for r in fresh) else {}
            for row in fresh:
                old = by_path.get(row.path)
                if old is not None:
                    _carry_caption(old, row)
                    rows[positions[row.path]] = row
                else:
                    rows.append(row)
                by_path[row.path] = row
            self.rows, self.by_path, self._vocab = rows, by_path, None
        if captions:
            self.read_captions(fresh)
        return fresh

    def read_captions(self, rows: list[Row]) -> None:
        """Fill every row's caption from the index's caption cache (``curator.tags.cache``: one stat per file,
        bytes re-read only when changed); falls back to reading the files."""
        from curator.captions import Caption

        targets = _caption_targets(rows)
        data: Mapping[Path, bytes | None] | None = None
        try:
            from curator.tags.cache import CaptionCache

            with self._lock:
                data = CaptionCache(self.dataset.index, self.root).read_many(targets, with_keys=False)
        except Exception:  # noqa: BLE001 - no cache (old index, read-only): read the files
            data = None
        for row, target in zip(rows, targets, strict=True):
            row.caption_target = target
            if data is None:
                self.read_caption(row)
                continue
            raw = data.get(target)
            row.caption_error = None
            row.caption_path = target if raw is not None else None
            row.caption_raw = raw
            row.caption_mtime_ns = UNKNOWN_MTIME if raw is not None else None
            row.tags = list(Caption.parse(raw).tags) if raw is not None else []
            row.captions_loaded = True
        self._edited()

    def set_flags(self, flags: FlagsByPath) -> None:
        for row in self.rows:
            row.flags = flags.get(row.path, row.flags)
        self.state.content_changed()  # flags change what a filter matches, not the tags (the vocabulary stays)

    def _edited(self) -> None:
        """Rows changed in place: the vocabulary and the filter's matches are computed again."""
        self._vocab = None
        self.state.content_changed()

    def _rows(self, records: Iterable[ImageRecord], flags: FlagsByPath | None = None) -> list[Row]:
        """A row per record, with ``flags[path]`` where given, else a copy of the record's own flags. A warm start
        builds 100,000 of them before the list shows (the preload thread, competing for the GIL with the UI's
        start): one loop, ``Row`` built positionally, no flag scan for the records without flags."""
        bucket_of = self.bucket_of
        out: list[Row] = []
        append = out.append
        for rec in records:
            path, subset, own = rec.path, rec.subset, rec.flags
            row_flags = flags.get(path) if flags else None
            if row_flags is None:
                row_flags = list(own) if own else []
            folder = subset.rel_dir if subset is not None else path.rpartition("/")[0]
            bucket = bucket_of(rec.width, rec.height) if not own or rec.readable else None
            append(Row(rec, path, path.rpartition("/")[2], folder or ".", rec.size, rec.width, rec.height, bucket,
                       flags=row_flags))
        return out

    def bucket_of(self, width: int, height: int) -> tuple[int, int] | None:
        """The kohya bucket of a ``width``×``height`` image under the current settings (cached by size)."""
        if not width or not height:
            return None
        settings = self.bucket_settings
        if settings is None:
            return None
        if self._bucket_cache_settings is not settings:
            self._bucket_cache, self._bucket_cache_settings = {}, settings
        key = (width, height)
        try:
            return self._bucket_cache[key]
        except KeyError:
            pass
        from curator.buckets import bucket_of

        bucket = bucket_of(width, height, settings)
        self._bucket_cache[key] = bucket
        return bucket

    def rebucket(self, settings: BucketSettings, source: str = "the Buckets view") -> None:
        """Use new bucket settings for the bucket column and ``bucket:`` filters (announces ``BucketsChanged``)."""
        if settings == self.bucket_settings:
            return
        self.bucket_settings, self.bucket_source = settings, source
        for row in self.rows:
            row.bucket = self.bucket_of(row.width, row.height) if row.record.readable else None
        self.state.content_changed()
        self.changes.announce(BucketsChanged())

    # ----- captions ---------------------------------------------------------------------------
    def read_caption(self, row: Row) -> None:
        """(Re)read ``row``'s caption file into the row (the vocabulary and the filter's matches are computed
        again only when its content changed: the caption poller re-reads unchanged files to learn their mtime)."""
        from curator.captions import Caption

        before = (row.caption_raw, row.caption_error, row.captions_loaded)
        path = caption_path(row.record)
        row.caption_path = path
        row.caption_error = None
        if path is None:
            row.caption_raw, row.caption_mtime_ns, row.tags = None, None, []
            row.captions_loaded = True
        else:
            try:
                st = path.stat()
                raw = path.read_bytes()
            except OSError as exc:
                row.caption_raw, row.caption_mtime_ns, row.tags = None, None, []
                row.caption_error = f"cannot read caption: {exc.strerror or exc}"
            else:
                if raw != row.caption_raw or not row.captions_loaded:
                    row.tags = list(Caption.parse(raw).tags)
                row.caption_raw, row.caption_mtime_ns = raw, st.st_mtime_ns
                row.captions_loaded = True
        if (row.caption_raw, row.caption_error, row.captions_loaded) != before:
            self._edited()

    def changed_on_disk(self, rows: Iterable[Row]) -> list[Row]:
        """Rows whose caption file changed (mtime, appeared, vanished) since kiln read it; re-read them and
        announce ``CaptionsChanged`` for them."""
        changed = self._reread_changed(rows)
        if changed:
            self.changes.announce(CaptionsChanged(frozenset(r.path for r in changed)))
        return changed

    def _reread_changed(self, rows: Iterable[Row]) -> list[Row]:
        changed: list[Row] = []
        for row in rows:
            path = row.caption_path or caption_target(row.record)
            try:
                mtime = path.stat().st_mtime_ns
            except OSError:
                mtime = None
            if row.caption_mtime_ns == UNKNOWN_MTIME and mtime is not None:
                # read from the cache: learn the mtime, and report only if the bytes differ
                before = row.caption_raw
                self.read_caption(row)
                if row.caption_raw != before:
                    changed.append(row)
            elif mtime != row.caption_mtime_ns:
                self.read_caption(row)
                changed.append(row)
        return changed

    def caption(self, row: Row) -> Caption | None:
        from curator.captions import Caption

        return Caption.parse(row.caption_raw) if row.caption_raw is not None else None

    def vocabulary(self) -> Counter[str]:
        """Tag → number of images carrying it (the completion list and the Tags view); cached until a
        caption changes. Counting 100,000 captions takes ~0.5 s: the loader counts it in its thread, and the
        browser asks for it only when the user types a tag."""
        vocab = self._vocab
        if vocab is None:
            vocab = Counter()
            for row in self.rows:
                vocab.update(set(row.tags))
            self._vocab = vocab
        return vocab

    # ----- writes (all through the journal) ---------------------------------------------------
    def set_tags(self, row: Row, tags: list[str], description: str) -> ApplyResult | None:
        """Write ``row``'s caption with ``tags`` (its conventions kept) through the journal."""
        from curator.captions import Caption

        current = self.caption(row)
        new = current.with_tags(list(tags)) if current is not None else Caption.new(list(tags))
        after = new.to_bytes()
        if after == row.caption_raw:
            return None
        change = self._change(caption_target(row.record), row.caption_raw, after)
        return self.apply([change], "edit", description)

    @staticmethod
    def _change(path: Path, before: bytes | None, after: bytes | None) -> CaptionChange:
        from curator.tags.journal import CaptionChange

        return CaptionChange(caption_path=path, before=before, after=after)

    def apply(self, changes: list[CaptionChange], op: str, description: str) -> ApplyResult:
        """Write ``changes`` through the journal, re-read the rows they touch, announce ``CaptionsChanged``."""
        from curator.tags.journal import apply_changes

        with self._lock:
            result = apply_changes(self.dataset, changes, op, description)
        touched = self._refresh_caption_paths(c.caption_path for c in changes)
        self.changes.announce(CaptionsChanged(frozenset(r.path for r in touched)))
        return result

    def _refresh_caption_paths(self, paths: Iterable[Path]) -> list[Row]:
        """Re-read the rows whose caption files were just written; returns them."""
        wanted = {Path(p) for p in paths}
        touched: list[Row] = []
        for row in self.rows:
            if row.caption_target is None:
                row.caption_target = caption_target(row.record)
            if row.caption_target in wanted or (row.caption_path is not None and row.caption_path in wanted):
                self.read_caption(row)
                touched.append(row)
        return touched

    def undo(self) -> ApplyResult | None:
        """Undo the journal's last entry (None: nothing to undo); re-reads what changed."""
        from curator.tags.journal import undo

        with self._lock:
            result = undo(self.dataset)
        self.changed_on_disk(self.rows)
        return result

    def redo(self) -> ApplyResult | None:
        from curator.tags.journal import redo

        with self._lock:
            result = redo(self.dataset)
        self.changed_on_disk(self.rows)
        return result

    def history(self) -> list[JournalEntry]:
        from curator.tags.journal import history

        with self._lock:
            return list(history(self.dataset))

    # ----- what the user looks at (tui/state.py) -----------------------------------------------
    def matching_rows(self) -> list[Row]:
        """The rows that pass the current filter (every row without one)."""
        rows = self.rows
        return [rows[i] for i in self.state.matching(rows)]

    def selected_rows(self) -> list[Row]:
        """The selected rows, in dataset order."""
        selected = self.state.selected
        return [r for r in self.rows if r.path in selected] if selected else []

    def reveal(self, path: str) -> bool:
        """Make ``path`` the current image, clearing the filter when it hides it. False: no such image."""
        row = self.by_path.get(path)
        if row is None:
            return False
        predicate = self.state.predicate
        if predicate is not None and not predicate(row):
            self.state.set_filter("", None)
        self.state.set_current(path)
        return True

    def warm_filter(self, predicate: Predicate) -> None:
        """Evaluate ``predicate`` on every row once (from a worker thread), so that installing it as the filter
        on the UI thread only reads each row's cached query item."""
        for row in list(self.rows):
            predicate(row)

    # ----- queries ----------------------------------------------------------------------------
    def compile_filter(self, text: str) -> Predicate | None:
        """The browser's filter for query ``text`` ('' = none). Raises ``curator.tags.query.QueryError``, also
        for a value that can match nothing here (a flag kind, folder or bucket that does not exist)."""
        text = text.strip()
        if not text:
            return None
        from curator.buckets import bucket_resolutions
        from curator.tags.items import dataset_folders
        from curator.tags.query import parse_query

        settings = self.bucket_settings
        buckets = bucket_resolutions(settings) if settings is not None and not settings.no_upscale else None
        query = parse_query(text, folders=dataset_folders(self.dataset) if self.is_open else None, buckets=buckets)
        return lambda row: bool(query.matches(self.query_context(row)))

    def query_context(self, row: Row) -> QueryItem:
        """The curator's ``QueryItem`` for a row (``curator.tags.items.query_item``), from what the row already
        holds (cached per caption)."""
        key = (row.caption_raw, len(row.flags), row.bucket)
        cached = row.query_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        from curator.tags.items import query_item

        qitem = query_item(row.record, row.caption_raw, tags=row.tags, flags=row.flag_kinds, bucket=row.bucket)
        row.query_cache = (key, qitem)
        return qitem

    # ----- health -----------------------------------------------------------------------------
    def flags(self) -> list[Flag]:
        return [f for row in self.rows for f in row.flags]

    def duplicate_clusters(self) -> list[Cluster]:
        """Exact/near duplicate clusters (``curator.dupes.Cluster``: kind, keep, members); also kept in
        ``self.clusters`` for views that show them (computed once per scan by the curator)."""
        with self._lock:
            self.clusters = list(self.dataset.duplicates())
        return self.clusters

    def trash_images(self, paths: list[str], reason: str) -> TrashBatch:
        """Move ``paths`` (and their captions) to the trash; an image that changed on disk since the scan the
        user decided on (size, mtime, hash) is refused, and nothing moves."""
        from curator.trash import move_to_trash

        records = [self.by_path[p].record for p in paths if p in self.by_path]
        return move_to_trash(self.root, self.dataset.index.kiln_dir, paths, reason, expected=records)

    def journal_changes(self) -> list[Row]:
        """Rows whose captions another kiln process changed through the journal since the last call (a
        ``kiln tags`` run in another shell), re-read and announced; every row is looked at, not only the
        visible ones. Cheap when nothing happened (one ``PRAGMA``)."""
        from curator.tags.journal import JournalWatch, journal_for

        with self._lock:
            if self._dataset is None:
                return []
            if self._journal_watch is None:
                self._journal_watch = JournalWatch(journal_for(self._dataset))
                return []
            paths = set(self._journal_watch.changed())
        if not paths:
            return []
        rows = [row for row, target in zip(self.rows, _caption_targets(self.rows), strict=True) if target in paths]
        return self.changed_on_disk(rows)

    def restore_last_trash(self) -> TrashBatch | None:
        from curator.trash import restore_last

        return restore_last(self.root, self.dataset.index.kiln_dir)

    def trash_batches(self) -> list[TrashBatch]:
        from curator.trash import list_batches

        return list_batches(self.dataset.index.kiln_dir)

    # ----- bulk operations (curator.tags.ops) -------------------------------------------------
    def caption_items(self, rows: Iterable[Row]) -> list[CaptionItem]:
        """The curator's ``CaptionItem`` for rows, from the caption bytes kiln last read
        (the journal refuses to overwrite a file that changed since)."""
        from curator.tags.items import CaptionItem

        out: list[CaptionItem] = []
        for r in rows:
            target = r.caption_path or caption_target(r.record)
            out.append(CaptionItem(record=r.record, caption_file=str(target), raw=r.caption_raw,
                                   flags=frozenset(r.flag_kinds)))
        return out

    def plan(self, op: str, rows: Iterable[Row], params: PlanParams) -> list[CaptionChange]:
        """Run one ``curator.tags.ops`` operation on ``rows``; returns its ``CaptionChange`` list (nothing written).

        Raises ``curator.tags.ops.OperationError`` (bad arguments) with the curator's message.
        """
        from curator.tags import ops

        items = self.caption_items(rows)
        if op == "add":
            return ops.add_tags(items, _tags(params), position="front" if params.get("position") == "front" else "end")
        if op in ("remove", "delete"):
            return ops.remove_tags(items, _tags(params))
        if op in ("replace", "rename"):
            return ops.replace_tag(items, _text(params, "old"), _text(params, "new"), regex=bool(params.get("regex")))
        if op == "dedupe":
            return ops.dedupe(items)
        if op == "sort":
            keep = _text(params, "keep").strip()
            if keep and not keep.isdigit():
                raise ops.OperationError(f"keep first N tags: {keep!r} is not a whole number (0 or more)")
            return ops.sort_tags(items, by="freq" if params.get("by") == "freq" else "alpha",
                                 keep=int(keep) if keep else 0)
        if op == "trigger":
            return ops.set_trigger(items, _text(params, "word") or None).changes
        if op == "normalize":
            return ops.normalize(items, spaces=bool(params.get("spaces")), lower=bool(params.get("lower")),
                                 escape=bool(params.get("escape")), unescape=bool(params.get("unescape")))
        if op == "absorb":
            return ops.absorb(items, _tags(params))
        if op == "consolidate":
            from curator.tags.consolidate import consolidate, load_rules

            return consolidate(items, load_rules(), suffix_heuristic=bool(params.get("suffix"))).changes
        if op == "suggest":
            from curator.tags.suggest import suggestion_changes

            return suggestion_changes(items, _suggestions(params))
        if op == "suspects":
            from curator.tags.suspects import removal_changes

            return removal_changes(items, _suspects(params))
        raise ModelError(f"unknown operation {op!r}")

    def suggestions(self, rows: Iterable[Row]) -> list[Suggestion]:
        """``curator.tags.suggest`` consolidations and implications for rows (built-in rules)."""
        from curator.tags.consolidate import load_rules
        from curator.tags.suggest import suggest

        return suggest(self.caption_items(rows), load_rules())

    def suspects(self, rows: Iterable[Row]) -> list[Suspect]:
        """``curator.tags.suspects`` for rows: tags the autotagger was unsure of (its kept probabilities),
        contradictions (the built-in conflicts table), tags in two captions or fewer; the curator's defaults."""
        from curator.autotag.scores import load
        from curator.tags.suspects import find_suspects, load_conflicts

        items = self.caption_items(rows)
        with self._lock:
            confidences = load(self.dataset.index, [it.path for it in items])
        return find_suspects(items, confidences, load_conflicts())

    def describe(self, op: str, params: PlanParams) -> str:
        """What ``plan(op, ..., params)`` does, in the words ``kiln tags`` uses for the same operation
        (``curator.tags.describe``): the journal entry names its tags, pattern or options."""
        from curator.tags import describe as d

        if op == "add":
            return d.describe_add(_tags(params), "front" if params.get("position") == "front" else "end")
        if op in ("remove", "delete"):
            return d.describe_remove(_tags(params))
        if op in ("replace", "rename"):
            return d.describe_replace(_text(params, "old"), _text(params, "new"), regex=bool(params.get("regex")))
        if op == "dedupe":
            return d.describe_dedupe()
        if op == "sort":
            keep = _text(params, "keep").strip()
            return d.describe_sort("freq" if params.get("by") == "freq" else "alpha", int(keep) if keep.isdigit() else 0)
        if op == "trigger":
            return d.describe_trigger([_text(params, "word")])
        if op == "normalize":
            return d.describe_normalize([o for o in ("spaces", "lower", "escape", "unescape") if params.get(o)])
        if op == "absorb":
            return d.describe_absorb(_tags(params))
        if op == "consolidate":
            from curator.tags.consolidate import load_rules

            return d.describe_consolidate(load_rules().sources, suffix_heuristic=bool(params.get("suffix")))
        return op  # an operation described where it is chosen (suggestions, suspects)

    def absorb_suggestions(self, rows: Iterable[Row], min_share: float = 0.8) -> list[AbsorbCandidate]:
        from curator.tags import ops

        return ops.absorb_candidates(self.caption_items(rows), min_share=min_share)

    def diff_text(self, changes: list[CaptionChange], limit: int = 300) -> Text:
        """The preview of planned changes as Rich Text: per file, removed tags in red, added in green."""
        from rich.text import Text

        from curator.tags.ops import plan_to_diff
        from curator.textsafe import safe_text

        text = Text()
        diffs = plan_to_diff(changes[:limit])
        for d in diffs:
            try:
                name = Path(d.path).relative_to(self.root).as_posix()
            except ValueError:
                name = str(d.path)
            text.append_text(safe_text(name, style="bold"))
            if d.created:
                text.append("  (new file)", style="cyan")
            if d.deleted:
                text.append("  (file removed)", style="red")
            if d.reordered and not d.added and not d.removed:
                text.append("  reordered", style="cyan")
            text.append("\n")
            for tag in d.removed:
                text.append("  - ", style="red")
                text.append_text(safe_text(tag, style="red"))
                text.append("\n")
            for tag in d.added:
                text.append("  + ", style="green")
                text.append_text(safe_text(tag, style="green"))
                text.append("\n")
            if d.reordered:
                text.append("  → ", style="dim")
                text.append_text(safe_text(d.after_text, style="dim"))
                text.append("\n")
        if len(changes) > limit:
            text.append(f"… and {len(changes) - limit} more file(s)\n", style="dim")
        return text


def _suggestions(params: PlanParams) -> list[Suggestion]:
    """The chosen ``curator.tags.suggest`` suggestions of a ``suggest`` operation."""
    from curator.tags.suggest import Suggestion

    value = params.get("suggestions")
    if not isinstance(value, list) or not all(isinstance(s, Suggestion) for s in value):
        raise ModelError("suggest needs a list of suggestions")
    return value


def _suspects(params: PlanParams) -> list[Suspect]:
    """The chosen ``curator.tags.suspects`` suspects of a ``suspects`` (removal) operation."""
    from curator.tags.suspects import Suspect

    value = params.get("suspects")
    if not isinstance(value, list) or not all(isinstance(s, Suspect) for s in value):
        raise ModelError("suspects needs a list of suspect tags")
    return value


def _text(params: PlanParams, key: str) -> str:
    """A text input of a bulk operation ('' when absent)."""
    value = params.get(key)
    return "" if value is None else str(value)


def _tags(params: PlanParams) -> list[str]:
    """The ``tags`` input as a list: given as one, or as comma-separated text (split the curator's way)."""
    from curator.tags.ops import split_tags

    value = params.get("tags")
    if isinstance(value, list | tuple):
        return [str(t) for t in value]
    return split_tags("" if value is None else str(value))
