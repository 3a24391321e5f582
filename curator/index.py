"""The persistent index: ``<dataset>/.kiln/index.sqlite`` (WAL), or the user cache when the folder is read-only.

Tables owned here: ``meta`` (key/value), ``images`` (one row per image file: stat, hashes, probe results),
``features`` (per image: the 64x64 grey thumbnail, the mirror pHash, the quality statistics and the 128x128 edge
bitmap, read only by the duplicate search and the quality checks, so listing images stays light) and ``flags``
(the last full check). An index of schema 2 is upgraded in place (the scan then reads each image once more for
what the new schema adds); any other version is rebuilt.
Other modules add their own tables through :meth:`Index.ensure_schema`.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import sys
from pathlib import Path

from curator.faults import INDEX_MIN_NEEDS, DiskFullError, busy_timeout, index_error, is_disk_full

KILN_DIR = ".kiln"
INDEX_NAME = "index.sqlite"
SCHEMA_VERSION = 3  # 2: imagehash pHash of the stored thumbnail, the features table, flag scores; 3: edge bitmaps
UPGRADABLE = {2: ("ALTER TABLE features ADD COLUMN edges BLOB",)}  # version -> statements bringing it to the next
OPEN_NEEDS = INDEX_MIN_NEEDS  # opening a WAL database creates its -shm (32 KiB) and -wal files

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS images (
    path TEXT PRIMARY KEY,         -- posix, relative to the dataset root
    subset TEXT NOT NULL,          -- the subset's rel_dir
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    width INTEGER NOT NULL,        -- after EXIF rotation
    height INTEGER NOT NULL,
    format TEXT NOT NULL,
    mode TEXT NOT NULL,
    frames INTEGER NOT NULL,
    exif_rotated INTEGER NOT NULL,
    phash INTEGER,                 -- 64-bit perceptual hash stored as signed int64
    pixel_sha TEXT,                -- hash of the decoded pixels, computed only when needed
    flags TEXT NOT NULL            -- JSON [[kind, detail], ...] found by the probe
);
CREATE INDEX IF NOT EXISTS images_sha ON images(sha256);
CREATE TABLE IF NOT EXISTS features (
    path TEXT PRIMARY KEY,         -- the image (images.path)
    phash_mirror INTEGER,          -- pHash of the mirrored image, signed int64
    thumb BLOB,                    -- 64x64 grey uint8, row-major (curator.scan.hashing.THUMB_SIDE)
    stats TEXT NOT NULL,           -- JSON of curator.scan.quality.ImageStats
    edges BLOB                     -- 128x128 edge bitmap, 1 bit per pixel (curator.scan.edges); NULL: not yet
);
CREATE TABLE IF NOT EXISTS flags (
    path TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL, score REAL
);
CREATE INDEX IF NOT EXISTS flags_path ON flags(path);
"""

_announced: set[str] = set()


class IndexOpenError(OSError):
    """The index could be opened neither in the dataset nor in the user cache."""


def cache_index_dir(root: Path) -> Path:
    """Where the index of a read-only dataset lives: the user cache, one folder per dataset path."""
    from platformdirs import user_cache_dir

    digest = hashlib.sha256(str(root).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    safe_name = "".join(c if c.isalnum() or c in "-_." else "_" for c in root.name)[:40] or "root"
    return Path(user_cache_dir("kiln")) / "indexes" / f"{safe_name}-{digest}"


def _make_kiln_dir(root: Path) -> Path:
    """Create ``<root>/.kiln``; raises OSError when the dataset folder is read-only."""
    kiln_dir = root / KILN_DIR
    kiln_dir.mkdir(exist_ok=True)
    if not os.access(kiln_dir, os.W_OK):
        raise PermissionError(13, "not writable", str(kiln_dir))
    return kiln_dir


_CREATED = re.compile(r"CREATE\s+(?:TABLE|INDEX)\s+IF\s+NOT\s+EXISTS\s+(\w+)", re.IGNORECASE)


def _create_missing(conn: sqlite3.Connection, sql: str) -> None:
    """Run a ``CREATE ... IF NOT EXISTS`` script unless everything it creates exists already: even a no-op
    CREATE takes the write lock, which would make every reader wait while another process writes."""
    wanted = set(_CREATED.findall(sql))
    if wanted:
        have = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        if wanted <= have:
            return
    conn.executescript(sql)


def _connect(db_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db_path, timeout=busy_timeout(), isolation_level=None, check_same_thread=False)
    try:
        if conn.execute("PRAGMA journal_mode").fetchone() != ("wal",):  # asking costs no write lock
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA temp_store=MEMORY")
        _create_missing(conn, _SCHEMA)  # fails here when the file system is read-only
    except sqlite3.Error:
        conn.close()
        raise
    return conn


class Index:
    """An open index. ``conn`` is an autocommit sqlite3 connection (use ``with index.transaction():``)."""

    def __init__(self, root: Path, kiln_dir: Path, conn: sqlite3.Connection, in_cache: bool) -> None:
        self.root = root
        self.kiln_dir = kiln_dir
        self.conn = conn
        self.in_cache = in_cache

    @property
    def path(self) -> Path:
        return self.kiln_dir / INDEX_NAME

    @staticmethod
    def exists(root: Path | str) -> bool:
        """True when the dataset at ``root`` already has an index (in ``.kiln/`` or in the user cache)."""
        root = Path(root).resolve()
        return (root / KILN_DIR / INDEX_NAME).exists() or (cache_index_dir(root) / INDEX_NAME).exists()

    @classmethod
    def open(cls, root: Path | str, *, quiet: bool = False) -> Index:
        """Open (creating if needed) the index of the dataset at ``root``.

        A read-only dataset gets its index in the user cache (said once on stderr). A full disk is not a
        reason to go there: the dataset's own index holds its caption journal, so a full disk raises
        :class:`curator.faults.DiskFullError`; so does a busy or damaged index (``curator.faults``)."""
        root = Path(root).resolve()
        db_path = root / KILN_DIR / INDEX_NAME
        try:
            kiln_dir = _make_kiln_dir(root)
            conn = _connect(kiln_dir / INDEX_NAME)
            index = cls(root, kiln_dir, conn, in_cache=False)
        except (OSError, sqlite3.Error) as first:
            if is_disk_full(first, db_path):
                raise DiskFullError(db_path, "opening the dataset index", OPEN_NEEDS) from first
            if isinstance(first, sqlite3.Error) and not _is_read_only(first):
                raise index_error(first, db_path, "opening the dataset index") from first
            kiln_dir = cache_index_dir(root)
            try:
                kiln_dir.mkdir(parents=True, exist_ok=True)
                conn = _connect(kiln_dir / INDEX_NAME)
            except (OSError, sqlite3.OperationalError) as exc:
                raise IndexOpenError(f"cannot create an index in {root / KILN_DIR} ({first}) nor in {kiln_dir} ({exc})") from exc
            if not quiet and str(root) not in _announced:
                _announced.add(str(root))
                print(f"kiln: {root} is read-only; its index lives in {kiln_dir}", file=sys.stderr)
            index = cls(root, kiln_dir, conn, in_cache=True)
        try:
            index._migrate(quiet)
        except sqlite3.Error as exc:
            index.close()
            raise index_error(exc, index.path, "opening the dataset index", needed=OPEN_NEEDS) from exc
        return index

    def _migrate(self, quiet: bool) -> None:
        version = self.get_meta("schema_version")
        if version is None:
            self.set_meta("schema_version", str(SCHEMA_VERSION))
            return
        found = int(version) if version.isdigit() else -1
        if found == SCHEMA_VERSION:
            return
        if found in UPGRADABLE and all(v in UPGRADABLE for v in range(found, SCHEMA_VERSION)):
            with self.transaction("upgrading the dataset index") as tx:
                now = tx.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if now is not None and now[0] == str(SCHEMA_VERSION):
                    return  # another process upgraded it while this one waited for the lock
                for step in range(found, SCHEMA_VERSION):
                    for statement in UPGRADABLE[step]:
                        self.conn.execute(statement)
                self.conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
            self._say(quiet, f"upgraded from schema {found} to {SCHEMA_VERSION}; the next scan reads each image "
                      "once more for its edge map (the watermark check)")  # fmt: skip
            return
        # An index is a cache of the files: an unknown version is rebuilt, never trusted. Other modules'
        # tables (the caption journal, caches) are kept.
        with self.transaction("rebuilding the dataset index"):
            for table in ("images", "features", "flags"):
                self.conn.execute(f"DROP TABLE IF EXISTS {table}")
        self.conn.executescript(_SCHEMA)
        self.set_meta("schema_version", str(SCHEMA_VERSION))
        self._say(quiet, f"schema {version} is not this kiln's ({SCHEMA_VERSION}): rebuilt, the next scan reads "
                  "every image again (the caption journal is kept)")  # fmt: skip

    def _say(self, quiet: bool, message: str) -> None:
        if not quiet:
            from curator.textsafe import printable

            print(f"kiln: the index {printable(str(self.path))}: {message}", file=sys.stderr)

    def ensure_schema(self, sql: str) -> None:
        """Run ``CREATE TABLE IF NOT EXISTS ...`` statements for a module's own tables (nothing is written, no
        lock taken, when they all exist)."""
        _create_missing(self.conn, sql)

    def transaction(self, what: str = "updating the dataset index", needed: int | None = None) -> _Transaction:
        """``with index.transaction() as tx:`` one write transaction; a SQLite fault in it is rolled back and
        raised as the ``OSError`` of :func:`curator.faults.index_error` (``what`` names the operation,
        ``needed`` the bytes it needs, for a full disk's message)."""
        return _Transaction(self.conn, self.path, what, needed)

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        try:
            self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
        except sqlite3.Error as exc:
            raise index_error(exc, self.path, "updating the dataset index") from exc

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_read_only(exc: sqlite3.Error) -> bool:
    """SQLite could not write (or create) the file: the dataset folder or its disk is read-only."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    return code in (8, 14) or "readonly" in str(exc) or "unable to open" in str(exc)  # READONLY, CANTOPEN


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error, a failed ``COMMIT`` included) on an autocommit
    connection; SQLite faults leave as :func:`curator.faults.index_error`'s ``OSError``."""

    def __init__(self, conn: sqlite3.Connection, db_path: Path, what: str, needed: int | None) -> None:
        self.conn = conn
        self.db_path = db_path
        self.what = what
        self.needed = needed

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise index_error(exc, self.db_path, self.what, needed=self.needed) from exc
        return self.conn

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        try:
            if exc_type is None:
                self.conn.execute("COMMIT")  # a full disk usually shows here, when the WAL is written
                return
        except sqlite3.Error as failed:
            exc = failed
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise index_error(exc, self.db_path, self.what, needed=self.needed) from exc


def to_signed64(value: int | None) -> int | None:
    """An unsigned 64-bit hash as sqlite's signed INTEGER."""
    if value is None:
        return None
    return value - (1 << 64) if value >= (1 << 63) else value


def to_unsigned64(value: int | None) -> int | None:
    if value is None:
        return None
    return value + (1 << 64) if value < 0 else value
