"""Caption text cached in the index (bytes + size + mtime_ns), verified by ``stat`` before use.

Statistics over 10k captions must not reopen 10k files. A cached caption is trusted only while the file's size
and mtime_ns match and the file was not modified within a second of being cached (the "racy" case where a
rewrite in the same timestamp tick would go unnoticed; such files are simply re-read).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from curator.captions.caption import Caption
from curator.fsutil import read_file

if TYPE_CHECKING:
    from curator.index import Index

_P = TypeVar("_P", Path, str)

SCHEMA = """
CREATE TABLE IF NOT EXISTS caption_cache_v2 (
    path TEXT PRIMARY KEY,      -- posix relative to the dataset root (absolute outside it)
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    cached_ns INTEGER NOT NULL,
    data BLOB NOT NULL,
    sep TEXT NOT NULL,          -- the separator the keys were split with
    keys TEXT NOT NULL          -- the first line's tag keys joined by U+001F (so stats skip parsing)
);
"""
_RACY_NS = 1_000_000_000
_KEY_SEP = "\x1f"


class CaptionCache:
    def __init__(self, index: Index, root: Path | str) -> None:
        self.conn = index.conn
        self.root = Path(root).resolve()
        self._prefix = str(self.root) + os.sep
        self.keys: dict[Path | str, list[str]] = {}  # the last read_many's tag keys per existing file
        try:
            index.ensure_schema(SCHEMA)
            self.available = True
        except sqlite3.Error:  # a busy or read-only index: without its table the cache reads the files
            self.available = False

    def _key(self, path: Path | str) -> str:
        text = os.fspath(path)
        if text.startswith(self._prefix):
            text = text[len(self._prefix) :]
            return text.replace(os.sep, "/") if os.sep != "/" else text
        return text

    def read_many(self, paths: list[_P], separator: str = ",", *, with_keys: bool = True) -> dict[_P, bytes | None]:
        """Current bytes of each caption file (``None`` when it does not exist), from the cache when fresh.
        ``self.keys`` then maps each existing file to its tag keys (split with ``separator``); ``with_keys``
        False: left empty, for a caller that parses the bytes itself (the TUI's rows: 0.1 GB of key lists and
        strings less at 100,000 captions, which the allocator kept)."""
        # row: (path, size, mtime_ns, cached_ns, data, sep, keys)
        rows = (
            {
                row[0]: row
                for row in self.conn.execute(
                    f"SELECT path, size, mtime_ns, cached_ns, data, sep, {'keys' if with_keys else 'NULL'} "
                    "FROM caption_cache_v2"
                )
            }
            if self.available
            else {}
        )
        out: dict[_P, bytes | None] = {}
        keys: dict[Path | str, list[str]] = {}
        self.keys = keys
        upserts: list[tuple[str, int, int, int, bytes, str, str | bytes]] = []
        deletes: list[tuple[str]] = []
        now = time.time_ns()
        for path in paths:
            key = self._key(path)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                out[path] = None
                if key in rows:
                    deletes.append((key,))
                continue
            except OSError:
                out[path] = None
                continue
            row = rows.get(key)
            if (
                row is not None
                and row[1] == st.st_size
                and row[2] == st.st_mtime_ns
                and row[3] - row[2] > _RACY_NS
            ):
                out[path] = row[4]
                if not with_keys:
                    continue
                if row[5] == separator:
                    keys[path] = _split_keys(row[6])
                    continue
                cap = Caption.parse(row[4], separator)
                keys[path] = cap.keys
                upserts.append((key, row[1], row[2], row[3], row[4], separator, _join_keys(cap.keys)))
                continue
            try:
                data = read_file(path)
            except OSError:
                data = None
            if data is None:
                out[path] = None
                continue
            out[path] = data
            cap = Caption.parse(data, separator)
            if with_keys:
                keys[path] = cap.keys
            upserts.append((key, st.st_size, st.st_mtime_ns, now, data, separator, _join_keys(cap.keys)))
        if (upserts or deletes) and self.available:
            self._store(upserts, deletes)
        return out

    def refresh(self, paths: list[Path]) -> None:
        """Re-cache these files now."""
        self.read_many(list(paths))

    def forget(self, paths: list[Path] | list[str]) -> None:
        """Drop the rows of these files (rewritten just now; the next read caches them again)."""
        self.forget_keys([self._key(os.path.abspath(p)) for p in paths])

    def forget_keys(self, keys: list[str]) -> None:
        """:meth:`forget` by row key (posix path relative to the dataset root, absolute outside it)."""
        if self.available:
            self._store([], [(k,) for k in keys])

    def _store(
        self, upserts: list[tuple[str, int, int, int, bytes, str, str | bytes]], deletes: list[tuple[str]]
    ) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(
                "INSERT OR REPLACE INTO caption_cache_v2 (path, size, mtime_ns, cached_ns, data, sep, keys) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                upserts,
            )
            self.conn.executemany("DELETE FROM caption_cache_v2 WHERE path = ?", deletes)
            self.conn.execute("COMMIT")
        except (sqlite3.Error, ValueError):  # a locked or read-only index, a value sqlite refuses: the cache
            if self.conn.in_transaction:  # is an optimisation, skip the write (and never leave it half open)
                self.conn.execute("ROLLBACK")


def _join_keys(keys: list[str]) -> str | bytes:
    """The tag keys as stored: text, or UTF-8 bytes with the undecodable bytes of a non-UTF-8 caption kept
    (its keys hold them as surrogates, which sqlite cannot take as text)."""
    text = _KEY_SEP.join(keys)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")
    return text


def _split_keys(value: str | bytes | None) -> list[str]:
    if not value:
        return []
    text = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
    return text.split(_KEY_SEP)
