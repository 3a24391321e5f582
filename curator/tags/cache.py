"""Caption text cached in the index (bytes + size + mtime_ns), verified by ``stat`` before use.

Statistics over 10k captions must not reopen 10k files. A cached caption is trusted only while the file's size
and mtime_ns match and the file was not modified within a second of being cached (the "racy" case where a
rewrite in the same timestamp tick would go unnoticed; such files are simply re-read).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS caption_cache (
    path TEXT PRIMARY KEY,      -- posix relative to the dataset root (absolute outside it)
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    cached_ns INTEGER NOT NULL,
    data BLOB NOT NULL
);
"""
_RACY_NS = 1_000_000_000


class CaptionCache:
    def __init__(self, index: Any, root: Path | str) -> None:
        self.conn = index.conn
        self.root = Path(root).resolve()
        index.ensure_schema(SCHEMA)

    def _key(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def read_many(self, paths: list[Path]) -> dict[Path, bytes | None]:
        """Current bytes of each caption file (``None`` when it does not exist), from the cache when fresh."""
        rows = {p: (s, m, c, d) for p, s, m, c, d in self.conn.execute(
            "SELECT path, size, mtime_ns, cached_ns, data FROM caption_cache")}
        out: dict[Path, bytes | None] = {}
        upserts: list[tuple[str, int, int, int, bytes]] = []
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
            if row is not None and row[0] == st.st_size and row[1] == st.st_mtime_ns and row[2] - row[1] > _RACY_NS:
                out[path] = row[3]
                continue
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
            except OSError:
                out[path] = None
                continue
            out[path] = data
            upserts.append((key, st.st_size, st.st_mtime_ns, now, data))
        if upserts or deletes:
            self._store(upserts, deletes)
        return out

    def refresh(self, paths: list[Path]) -> None:
        """Re-cache these files (called after the journal wrote them)."""
        self.read_many(list(paths))

    def _store(self, upserts: list[tuple[str, int, int, int, bytes]], deletes: list[tuple[str]]) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(
                "INSERT OR REPLACE INTO caption_cache (path, size, mtime_ns, cached_ns, data) VALUES (?, ?, ?, ?, ?)",
                upserts,
            )
            self.conn.executemany("DELETE FROM caption_cache WHERE path = ?", deletes)
            self.conn.execute("COMMIT")
        except Exception:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
