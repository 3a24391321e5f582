"""The duplicate clusters kept in the index between processes (table ``dupe_clusters``).

One row per search setting (``DupeSettings`` and the pixel limit): the clusters as JSON and the digest of
everything they were computed from (:func:`input_digest`). A row is used only while that digest is the current
one, so any change a scan records (an image new, removed or changed) or a settings change recomputes them. The
cache is an optimisation: a row that cannot be read or written is simply not used (said at debug level).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

from curator.dupes.clusters import Cluster, DupeSettings

if TYPE_CHECKING:
    from curator.index import Index
    from curator.records import ImageRecord

log = logging.getLogger(__name__)

# Bump whenever find_clusters, the keep rule, describe() or anything else that shapes the clusters changes
# (a cached result computed by the old code must never be returned by the new one).
CACHE_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS dupe_clusters (
    settings TEXT PRIMARY KEY,     -- JSON of the DupeSettings and the pixel limit: one row per setting
    digest TEXT NOT NULL,          -- input_digest() of what the clusters were computed from
    clusters TEXT NOT NULL         -- JSON list of the Cluster fields
);
"""


def settings_key(settings: DupeSettings, pixel_limit: int) -> str:
    """The row's setting: every ``DupeSettings`` field and the pixel limit (the pixel digests depend on it)."""
    return json.dumps({**asdict(settings), "pixel_limit": pixel_limit}, sort_keys=True)


def input_digest(records: Sequence[ImageRecord], index: Index) -> str:
    """A digest of what ``find_clusters`` reads: each record's path, subset, stat, sha256, probe results and
    pHash, in order; each one's features row (mirror pHash, thumbnail length: whether it is usable); and the
    versions. The thumbnail bytes are not hashed: the scan writes them together with the record from the file's
    bytes (sha256) and the pixel limit, by probe code whose changes bump ``SCHEMA_VERSION`` (hashed here)."""
    from curator.index import SCHEMA_VERSION

    features = {
        path: f"{mirror}\x1f{length}"
        for path, mirror, length in index.conn.execute("SELECT path, phash_mirror, length(thumb) FROM features")
    }
    text = "\x1e".join(
        [f"{CACHE_VERSION}\x1f{SCHEMA_VERSION}"]
        + [
            f"{r.path}\x1f{r.subset.rel_dir}\x1f{r.sha256}\x1f{r.size}\x1f{r.mtime_ns}\x1f{r.width}\x1f{r.height}"
            f"\x1f{r.format}\x1f{r.mode}\x1f{r.frames}\x1f{r.exif_rotated:d}\x1f{r.phash}\x1f{features.get(r.path)}"
            for r in records
        ]
    )
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=20).hexdigest()


def encode(clusters: Sequence[Cluster]) -> str:
    return json.dumps([asdict(c) for c in clusters], ensure_ascii=False, separators=(",", ":"))


def decode(text: str) -> list[Cluster]:
    """Clusters from :func:`encode`'s JSON; raises ``ValueError`` (or ``TypeError``/``KeyError``) when it is not."""
    items = json.loads(text)
    if not isinstance(items, list):
        raise ValueError("not a list of clusters")
    return [
        Cluster(int(c["id"]), str(c["kind"]), str(c["keep"]), [str(m) for m in c["members"]], int(c["distance"]),
                {str(p): dict(w) for p, w in c["why"].items()}, str(c["keep_reason"]))
        for c in items
    ]  # fmt: skip


def load(index: Index, setting: str, digest: str) -> list[Cluster] | None:
    """The cached clusters of ``setting`` when they were computed from ``digest``; None otherwise."""
    try:
        row = index.conn.execute(
            "SELECT clusters FROM dupe_clusters WHERE settings = ? AND digest = ?", (setting, digest)
        ).fetchone()
    except sqlite3.Error as exc:  # no table yet, or an unreadable index
        log.debug("duplicate clusters not read from the index: %s", exc)
        return None
    if row is None:
        return None
    try:
        return decode(row[0])
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        log.debug("cached duplicate clusters unusable (%s): recomputed", exc)
        return None


def store(index: Index, setting: str, digest: str, clusters: Sequence[Cluster]) -> bool:
    """Keep ``clusters`` for ``setting`` and drop the rows of other inputs (stale); False when that fails (a
    read-only, full or locked index), which never fails the caller."""
    text = encode(clusters)
    if decode(text) != list(clusters):
        log.debug("duplicate clusters do not round-trip through JSON: not cached")
        return False
    try:
        index.ensure_schema(SCHEMA)
        with index.transaction("keeping the duplicate clusters") as tx:
            tx.execute("DELETE FROM dupe_clusters WHERE digest != ?", (digest,))
            tx.execute("INSERT OR REPLACE INTO dupe_clusters (settings, digest, clusters) VALUES (?, ?, ?)",
                       (setting, digest, text))  # fmt: skip
    except (OSError, sqlite3.Error) as exc:
        log.debug("duplicate clusters not cached: %s", exc)
        return False
    return True


def forget(index: Index) -> bool:
    """Drop every kept set of clusters (the next search computes them again); False when that fails."""
    try:
        with index.transaction("forgetting the duplicate clusters") as tx:
            tx.execute("DROP TABLE IF EXISTS dupe_clusters")
    except (OSError, sqlite3.Error) as exc:
        log.debug("duplicate clusters not forgotten: %s", exc)
        return False
    return True


def cached_clusters(
    index: Index,
    records: Sequence[ImageRecord],
    settings: DupeSettings,
    pixel_limit: int,
    compute: Callable[[], list[Cluster]],
) -> list[Cluster]:
    """The clusters of ``records`` from the index when nothing they depend on changed, else ``compute()`` (kept)."""
    setting = settings_key(settings, pixel_limit)
    try:
        digest = input_digest(records, index)
    except sqlite3.Error as exc:
        log.debug("duplicate clusters not cached: %s", exc)
        return compute()
    found = load(index, setting, digest)
    if found is not None:
        return found
    clusters = compute()
    store(index, setting, digest, clusters)
    return clusters
