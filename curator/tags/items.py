"""The images an operation works on, with their caption bytes: scoping by query or by an explicit file list.

``load_items(dataset, where=..., files=...)`` returns :class:`CaptionItem` (image record + caption file path +
current bytes). Operations in :mod:`curator.tags.ops` turn items into ``CaptionChange`` lists.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curator.captions.caption import Caption
from curator.fsutil import read_files
from curator.tags.bulk import paused_gc
from curator.tags.query import Query, QueryItem, parse_query


class ScopeError(ValueError):
    """An explicit ``--files`` entry that is not an image (or caption) of the dataset."""


def caption_target(record: Any) -> Path:
    """Where the record's caption is or would be written (the subset's caption extension)."""
    try:
        from curator.captions.files import caption_target as target

        return target(record)
    except ImportError:  # pragma: no cover - the dataset helper's module is missing
        stem, _ext = os.path.splitext(str(record.abs_path))
        return Path(stem + record.subset.caption_extension)


def _caption_files(records: list[Any]) -> list[str]:
    """``caption_target`` of each record as a string, without pathlib overhead (10k records): each subset's
    folder is turned into a string once (``record.abs_path`` is ``subset.image_dir / <name>``), the stem is
    cut the way ``os.path.splitext`` cuts it (a name's leading dots do not start an extension)."""
    dirs: dict[int, tuple[str, str]] = {}
    out = []
    for rec in records:
        subset = rec.subset
        folder = dirs.get(id(subset))
        if folder is None:
            text = os.fspath(subset.image_dir)
            folder = dirs[id(subset)] = (text if text.endswith(os.sep) else text + os.sep, subset.caption_extension)
        name = rec.path.rpartition("/")[2]
        dot = name.rfind(".")
        if dot > 0 and name[:dot].strip("."):
            name = name[:dot]
        out.append(folder[0] + name + folder[1])
    return out


class _lazy:
    """``functools.cached_property`` without its per-access lock (Python 3.11 takes an ``RLock`` on every first
    access, a measurable cost over 10k items); at worst two threads compute the same value twice."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.fn(obj)
        return value


@dataclass
class CaptionItem:
    """One image and its caption file (``raw`` None: no caption file yet)."""

    record: Any
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


def bucket_settings_for(dataset: Any) -> Any:
    """The ``BucketSettings`` a ``bucket:WxH`` query uses: the dataset TOML's bucket options, else kohya's
    defaults (``curator.buckets.BucketSettings()``)."""
    return _bucket_settings(dataset)


def _bucket_settings(dataset: Any) -> Any:
    from curator.buckets import settings_from_toml

    return settings_from_toml(getattr(dataset.layout, "toml_settings", None))


def query_item(item: CaptionItem, bucket_settings: Any = None) -> QueryItem:
    """The :class:`QueryItem` view of a caption item (token count computed lazily)."""
    from curator.captions.tagtext import tag_key
    from curator.tags.tokens import count_tokens

    rec = item.record
    caption = item.caption
    bucket = None
    if bucket_settings is not None and rec.width and rec.height:
        from curator.buckets import assign_bucket

        bucket = tuple(assign_bucket(rec.width, rec.height, bucket_settings).bucket)
    return QueryItem(
        path=rec.path,
        name=Path(rec.path).name,
        folder=rec.subset.rel_dir,
        tags=frozenset(tag_key(t) for t in caption.tags),
        n_tags=len(caption.tags),
        flags=item.flags | frozenset(f.kind for f in getattr(rec, "flags", []) or []),
        width=rec.width,
        height=rec.height,
        bucket=bucket,  # type: ignore[arg-type]
        token_count=lambda: count_tokens(caption.first_line),
    )


def _flags_by_image(dataset: Any, records: list[Any]) -> dict[str, frozenset[str]]:
    """Flag kinds per image path; flags raised on a caption file count for its image."""
    by_path: dict[str, set[str]] = {}
    for flag in dataset.flags():
        by_path.setdefault(flag.path, set()).add(flag.kind)
    out: dict[str, frozenset[str]] = {}
    for rec in records:
        kinds = set(by_path.get(rec.path, ()))
        stem = os.path.splitext(rec.path)[0]
        for ext in (".txt", ".caption", rec.subset.caption_extension):
            kinds |= by_path.get(stem + ext, set())
        out[rec.path] = frozenset(kinds)
    return out


def _select_files(records: list[Any], files: Iterable[Path | str], root: Path) -> list[Any]:
    by_abs: dict[str, Any] = {}
    for rec in records:
        by_abs[os.path.abspath(rec.abs_path)] = rec
        by_abs[os.path.abspath(caption_target(rec))] = rec
    chosen, missing, seen = [], [], set()
    for f in files:
        p = Path(f)
        cand = os.path.abspath(p if p.is_absolute() or p.exists() else root / p)
        rec = by_abs.get(cand) or by_abs.get(os.path.abspath(root / p))
        if rec is None:
            missing.append(str(f))
        elif rec.path not in seen:
            seen.add(rec.path)
            chosen.append(rec)
    if missing:
        raise ScopeError(
            "not an image or caption of this dataset: "
            + ", ".join(missing[:10])
            + (f" (and {len(missing) - 10} more)" if len(missing) > 10 else "")
        )
    return chosen


def load_items(
    dataset: Any,
    where: Query | str | None = None,
    files: Iterable[Path | str] | None = None,
    separator: str = ",",
    cached: bool = False,
    bucket_settings: Any = None,
    include_reg: bool = True,
) -> list[CaptionItem]:
    """The dataset's images with caption bytes, restricted to ``files`` and/or the ``where`` query.

    ``cached`` reads caption bytes through the index cache (stats); operations read the files themselves.
    Raises ``QueryError`` for a bad query and :class:`ScopeError` for unknown ``files``.
    """
    with paused_gc():
        return _load_items(dataset, where, files, separator, cached, bucket_settings, include_reg)


def _load_items(
    dataset: Any,
    where: Query | str | None,
    files: Iterable[Path | str] | None,
    separator: str,
    cached: bool,
    bucket_settings: Any,
    include_reg: bool,
) -> list[CaptionItem]:
    query = where if isinstance(where, Query) else parse_query(where)
    records = list(dataset.images())
    if not include_reg:
        records = [r for r in records if not r.subset.is_reg]
    if files is not None:
        records = _select_files(records, files, Path(dataset.root))
    paths = _caption_files(records)
    if cached:
        from curator.tags.cache import CaptionCache

        cache = CaptionCache(dataset.index, dataset.root)
        data = cache.read_many(paths, separator)
        cached_keys = cache.keys
    else:
        cached_keys = {}
        data = dict(zip(paths, read_files(paths), strict=True))
    fields = query.fields
    flags = _flags_by_image(dataset, records) if "flag" in fields else {}
    items = [
        CaptionItem(r, p, data.get(p), separator, flags.get(r.path, frozenset()), cached_keys.get(p))
        for r, p in zip(records, paths, strict=True)
    ]
    if not fields:
        return items
    if "bucket" in fields and bucket_settings is None:
        bucket_settings = _bucket_settings(dataset)
    return [
        it for it in items if query.matches(query_item(it, bucket_settings if "bucket" in fields else None))
    ]


def query_items(dataset: Any, bucket_settings: Any = None, cached: bool = True) -> list[QueryItem]:
    """Every image of ``dataset`` as a :class:`QueryItem` (for the TUI and the trainer to filter with
    ``parse_query(text).matches(item)``). Bucket settings default to the dataset TOML's, else kohya's."""
    items = load_items(dataset, cached=cached)
    flags = _flags_by_image(dataset, [it.record for it in items])
    settings = bucket_settings if bucket_settings is not None else _bucket_settings(dataset)
    out = []
    for it in items:
        it.flags = flags.get(it.path, frozenset())
        out.append(query_item(it, settings))
    return out
