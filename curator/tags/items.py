"""The images an operation works on, with their caption bytes, and the one place a query item is built.

``load_items(dataset, where=..., files=...)`` returns :class:`CaptionItem` (image record + caption file path +
current bytes). Operations in :mod:`curator.tags.ops` turn items into ``CaptionChange`` lists.
:func:`query_item` is how every caller (``kiln tags``, ``kiln autotag --where``, the TUI's filter) turns an
image into the :class:`~curator.tags.query.QueryItem` the query language looks at, and :func:`select` is
how they filter a list of items with a query.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar, overload

from curator.captions.caption import Caption
from curator.captions.files import caption_rel_paths, caption_target, caption_targets
from curator.captions.tagtext import tag_key
from curator.fsutil import read_files
from curator.records import Flag, ImageRecord
from curator.tags.bulk import paused_gc
from curator.tags.query import CAPTION_FIELDS, Query, QueryItem, parse_query

if TYPE_CHECKING:
    from curator.buckets import BucketSettings
    from curator.dataset import Dataset

_T = TypeVar("_T")


class ScopeError(ValueError):
    """A scope that cannot be applied: an explicit ``--files`` entry that is not an image (or caption) of the
    dataset, or a ``bucket:`` query on a dataset whose TOML has bucket options kohya refuses."""


class _lazy(Generic[_T]):
    """``functools.cached_property`` without its per-access lock (Python 3.11 takes an ``RLock`` on every first
    access, a measurable cost over 10k items); at worst two threads compute the same value twice."""

    def __init__(self, fn: Callable[[CaptionItem], _T]) -> None:
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> _lazy[_T]: ...

    @overload
    def __get__(self, obj: CaptionItem, objtype: type | None = None) -> _T: ...

    def __get__(self, obj: CaptionItem | None, objtype: type | None = None) -> _lazy[_T] | _T:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.fn(obj)
        return value


@dataclass
class CaptionItem:
    """One image and its caption file (``raw`` None: no caption file yet)."""

    record: ImageRecord
    caption_file: str  # the caption path (existing or to be created), as a string
    raw: bytes | None
    separator: str = ","
    flags: frozenset[str] = field(default_factory=frozenset)
    cached_keys: list[str] | None = None  # tag keys from the index cache (saves parsing for statistics)

    @property
    def keys(self) -> list[str]:
        """The caption's tag keys ([] without a caption file)."""
        if self.cached_keys is not None:
            return self.cached_keys
        return self.caption.keys if self.raw is not None else []

    @_lazy
    def caption_path(self) -> Path:
        return Path(self.caption_file)

    @_lazy
    def caption(self) -> Caption:
        if self.raw is None:
            return Caption.new([], separator=self.separator)
        return Caption.parse(self.raw, separator=self.separator)

    @property
    def exists(self) -> bool:
        return self.raw is not None

    @property
    def folder(self) -> str:
        return self.record.subset.rel_dir

    @property
    def path(self) -> str:
        return self.record.path

    def query_item(self, bucket_settings: BucketSettings | None = None) -> QueryItem:
        """This item as the query language sees it (``bucket`` only with ``bucket_settings``)."""
        rec = self.record
        bucket = None
        if bucket_settings is not None:
            from curator.buckets import record_bucket

            bucket = record_bucket(rec, bucket_settings)
        if self.raw is None:  # no caption file: no tags (and no empty Caption built per image)
            return query_item(rec, None, tags=(), flags=self.flags, bucket=bucket)
        return query_item(rec, self.raw, caption=self.caption, flags=self.flags, bucket=bucket)


# ---- query items -------------------------------------------------------------------------------------------
def query_item(
    record: ImageRecord,
    raw: bytes | None,
    *,
    caption: Caption | None = None,
    tags: Sequence[str] | None = None,
    flags: Iterable[str] = (),
    bucket: tuple[int, int] | None = None,
    separator: str = ",",
) -> QueryItem:
    """The :class:`QueryItem` of one image whose caption file holds ``raw`` (None: no caption file).

    ``caption`` or ``tags``: what the caller already parsed from ``raw`` (saves a parse; the token count still
    parses lazily, on first use). ``flags``: the image's flag kinds from ``Dataset.flags()`` (see
    :func:`flags_by_image`); the record's own file flags always count. ``bucket``: ``bucket_of(...)`` under the
    dataset's bucket settings (None: ``bucket:`` terms match nothing).
    """
    if tags is None:
        if caption is None and raw is not None:
            caption = Caption.parse(raw, separator)
        tags = caption.tags if caption is not None else []

    def tokens() -> int:
        from curator.tags.tokens import count_tokens

        parsed = caption if caption is not None else Caption.parse(raw, separator) if raw is not None else None
        return count_tokens(parsed.first_line) if parsed is not None else 0

    kinds = frozenset(flags)
    if record.flags:
        kinds = kinds.union(f.kind for f in record.flags)
    return QueryItem(
        path=record.path,
        name=record.path.rpartition("/")[2],
        folder=record.subset.rel_dir,
        tags=frozenset(tag_key(t) for t in tags),
        n_tags=len(tags),
        flags=kinds,
        width=record.width,
        height=record.height,
        bucket=bucket,
        token_count=tokens,
    )


def _query_bucket_settings(dataset: Dataset) -> BucketSettings:
    from curator.buckets import BucketSettingsError, bucket_settings_for

    try:
        return bucket_settings_for(dataset)
    except BucketSettingsError as exc:
        raise ScopeError(f"bucket: needs bucket options kohya accepts: {exc}") from None


def flags_by_image(flags: Iterable[Flag], records: Iterable[ImageRecord]) -> dict[str, list[Flag]]:
    """``flags`` (from ``Dataset.flags()``) grouped by image path; a flag raised on one of an image's caption
    files (``curator.captions.files.caption_rel_paths``) counts for the image."""
    by_path: dict[str, list[Flag]] = {}
    for flag in flags:
        by_path.setdefault(flag.path, []).append(flag)
    out: dict[str, list[Flag]] = {}
    for rec in records:
        found = list(by_path.get(rec.path, ()))
        for caption_rel in caption_rel_paths(rec.path, rec.subset.caption_extension):
            found += by_path.get(caption_rel, ())
        out[rec.path] = found
    return out


def _flag_kinds(dataset: Dataset, records: list[ImageRecord]) -> dict[str, frozenset[str]]:
    return {path: frozenset(f.kind for f in found) for path, found in flags_by_image(dataset.flags(), records).items()}


def select(
    dataset: Dataset, items: list[CaptionItem], query: Query, bucket_settings: BucketSettings | None = None
) -> list[CaptionItem]:
    """The ``items`` that ``query`` matches; raises ``QueryError`` for a ``bucket:`` the bucket settings do not
    have. Health flags (``flag:``) and buckets (``bucket:``, under
    ``bucket_settings``, default ``curator.buckets.bucket_settings_for``: the dataset's) are worked out only when
    the query asks."""
    fields = query.fields
    if not fields:
        return list(items)
    if "flag" in fields:
        kinds = _flag_kinds(dataset, [it.record for it in items])
        for it in items:
            it.flags = it.flags | kinds.get(it.path, frozenset())
    settings = None
    if "bucket" in fields:
        settings = bucket_settings if bucket_settings is not None else _query_bucket_settings(dataset)
        if not settings.no_upscale:  # with no_upscale the buckets follow the images: any size can occur
            from curator.buckets import bucket_resolutions

            query.check(buckets=bucket_resolutions(settings))
    return [it for it in items if query.matches(it.query_item(settings))]


def select_folders(records: list[ImageRecord], query: Query) -> list[ImageRecord]:
    """The ``records`` a query that looks at folders only (``query.fields == {"folder"}``) matches: every image
    of a subset answers it alike, so it is asked once per subset (what :func:`select` gives, for 100k images
    in a handful of folders)."""
    answers: dict[str, bool] = {}
    chosen = []
    for rec in records:
        folder = rec.subset.rel_dir
        hit = answers.get(folder)
        if hit is None:
            hit = answers[folder] = query.matches(QueryItem(path="", name="", folder=folder, tags=frozenset()))
        if hit:
            chosen.append(rec)
    return chosen


def dataset_folders(dataset: Dataset) -> list[str]:
    """The subset folders a ``folder:`` term can name (``rel_dir``s; '' is the dataset root)."""
    return [s.rel_dir for s in dataset.layout.subsets]


# ---- loading -----------------------------------------------------------------------------------------------
def _select_files(records: list[ImageRecord], files: Iterable[Path | str], root: Path) -> list[ImageRecord]:
    by_abs: dict[str, ImageRecord] = {}
    for rec in records:
        by_abs[os.path.abspath(rec.abs_path)] = rec
        by_abs[os.path.abspath(caption_target(rec))] = rec
    chosen: list[ImageRecord] = []
    missing: list[str] = []
    seen: set[str] = set()
    for f in files:
        p = Path(f)
        cand = os.path.abspath(p if p.is_absolute() or p.exists() else root / p)
        found = by_abs.get(cand) or by_abs.get(os.path.abspath(root / p))
        if found is None:
            missing.append(str(f))
        elif found.path not in seen:
            seen.add(found.path)
            chosen.append(found)
    if missing:
        raise ScopeError(
            "not an image or caption of this dataset: "
            + ", ".join(missing[:10])
            + (f" (and {len(missing) - 10} more)" if len(missing) > 10 else "")
        )
    return chosen


def load_items(
    dataset: Dataset,
    where: Query | str | None = None,
    files: Iterable[Path | str] | None = None,
    separator: str = ",",
    cached: bool = False,
    bucket_settings: BucketSettings | None = None,
    include_reg: bool = True,
) -> list[CaptionItem]:
    """The dataset's images with caption bytes, restricted to ``files`` and/or the ``where`` query.

    ``cached`` reads caption bytes through the index cache (stats); operations read the files themselves.
    Raises ``QueryError`` for a bad query and :class:`ScopeError` for unknown ``files``.
    """
    with paused_gc():
        return _load_items(dataset, where, files, separator, cached, bucket_settings, include_reg)


def _load_items(
    dataset: Dataset,
    where: Query | str | None,
    files: Iterable[Path | str] | None,
    separator: str,
    cached: bool,
    bucket_settings: BucketSettings | None,
    include_reg: bool,
) -> list[CaptionItem]:
    query = where if isinstance(where, Query) else parse_query(where, folders=dataset_folders(dataset))
    records = list(dataset.images())
    if not include_reg:
        records = [r for r in records if not r.subset.is_reg]
    if files is not None:
        records = _select_files(records, files, Path(dataset.root))
    image_only = bool(query.fields) and not query.fields & CAPTION_FIELDS
    kept: dict[str, frozenset[str]] = {}  # the flags worked out while choosing (flag: queries)
    if query.fields == {"folder"}:  # decided per folder: one test per subset, not one per image
        records = select_folders(records, query)
    elif image_only:  # the query looks at the images only: choose them first, read just their captions
        chosen = select(dataset, [CaptionItem(r, "", None, separator) for r in records], query, bucket_settings)
        records = [it.record for it in chosen]
        kept = {it.record.path: it.flags for it in chosen}
    paths = caption_targets(records)
    cached_keys: dict[Path | str, list[str]] = {}
    if cached:
        from curator.tags.cache import CaptionCache

        cache = CaptionCache(dataset.index, dataset.root)
        data = cache.read_many(paths, separator)
        cached_keys = cache.keys
    else:
        data = dict(zip(paths, read_files(paths), strict=True))
    items = [
        CaptionItem(r, p, data.get(p), separator, cached_keys=cached_keys.get(p))
        for r, p in zip(records, paths, strict=True)
    ]
    if image_only:
        for it in items:
            it.flags = kept.get(it.record.path, it.flags)
        return items
    return select(dataset, items, query, bucket_settings)


def refreshed_items(
    dataset: Dataset,
    items: Iterable[CaptionItem],
    currents: Iterable[tuple[Path, bytes | None]],
    where: Query | str | None = None,
) -> list[CaptionItem]:
    """The ``items`` whose caption files are in ``currents`` (caption path, bytes on disk now), holding those
    bytes, and still matching ``where`` (an operation worked out again on files another process changed)."""
    by_file = {it.caption_file: it for it in items}
    fresh = [
        CaptionItem(old.record, old.caption_file, raw, old.separator)
        for path, raw in currents
        if (old := by_file.get(str(path))) is not None
    ]
    query = where if isinstance(where, Query) else parse_query(where)
    return select(dataset, fresh, query)


def query_items(dataset: Dataset, bucket_settings: BucketSettings | None = None, cached: bool = True) -> list[QueryItem]:
    """Every image of ``dataset`` as a :class:`QueryItem` (for the TUI and the trainer to filter with
    ``parse_query(text).matches(item)``). Bucket settings default to the dataset TOML's, else kohya's."""
    items = load_items(dataset, cached=cached)
    kinds = _flag_kinds(dataset, [it.record for it in items])
    settings = bucket_settings if bucket_settings is not None else _query_bucket_settings(dataset)
    out = []
    for it in items:
        it.flags = kinds.get(it.path, frozenset())
        out.append(it.query_item(settings))
    return out
