"""The caption journal: every caption write in kiln, recorded so it can be undone and redone across restarts.

Each operation is one entry in the dataset's index database holding every changed caption's bytes before and
after. The protocol makes a bulk operation safe against being killed at any moment:

1. the entry (all befores and afters, state ``pending``) is committed durably *before* any file is touched;
2. each file is checked against its ``before`` (a file changed on disk since kiln read it is a *conflict* and
   is left alone), then written atomically (temp file, sync, rename) or moved to ``.kiln/trash/``;
3. the per-file outcome and the state ``applied`` are committed.

A full disk is refused before step 1 when the free space is visibly too small, and otherwise stops the
operation before any file is replaced (the temporary files are written first): either way nothing changes and
the user gets one :class:`curator.faults.DiskFullError` naming the disk and the space needed. Two names for one
file (a case-insensitive filesystem, two symlinks) are written once, never twice; hard links are separate
names, each replaced by its own atomic write. A symlinked caption whose target lies outside the dataset's
folders is refused, not written through. A file another process changed since it was read is a conflict, or,
given a ``rebase``, gets the operation worked out again on its new content (merged, in the same entry). SQLite
faults ("database is locked", a full disk) reach callers as the ``OSError``s of :mod:`curator.faults`, never
as ``sqlite3`` errors. Big batches make their temporary files in ``<kiln_dir>/staging`` (see
``curator.fsutil``).

If the process dies between 1 and 3, the next journal call finds the entry still ``pending`` and recovers it
by looking at each file: holding ``after`` means applied, holding ``before`` means not applied, anything else
is a conflict. Undo and redo follow the same pattern (states ``undoing``/``redoing``). Every file is at every
moment either its before or its after, because each write is an atomic rename.

Per-change status: ``pending`` (not yet known), ``applied`` (file holds after), ``reverted`` (undone: holds
before), ``skipped`` (never applied), ``conflict`` (someone else's content is there; kiln left it).
Entry state: ``pending``, ``applied``, ``undoing``, ``undone``, ``redoing``, ``discarded`` (undone, then a new
operation was applied, so it can no longer be redone), ``failed`` (nothing could be applied).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from curator.faults import (
    DiskFullError,
    block_size,
    ensure_space,
    index_error,
    is_disk_full,
    space_for,
    write_refusal,
)
from curator.fsutil import clean_stage, fsync_dir, read_file, remove_stale_temps, write_files_atomically
from curator.tags.bulk import paused_gc
from curator.tags.cache import CaptionCache

if TYPE_CHECKING:
    from curator.dataset import Dataset
    from curator.index import Index

P = ParamSpec("P")
R = TypeVar("R")

SCHEMA = """
CREATE TABLE IF NOT EXISTS tag_journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    op TEXT NOT NULL,
    description TEXT NOT NULL,
    state TEXT NOT NULL,
    n_changes INTEGER NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS tag_journal_changes (
    entry_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    path TEXT NOT NULL,           -- posix relative to the dataset root, or absolute outside it
    before BLOB,                  -- NULL: the file did not exist
    after BLOB,                   -- NULL: the file is removed (moved to the trash)
    status TEXT NOT NULL,
    PRIMARY KEY (entry_id, seq)
);
CREATE INDEX IF NOT EXISTS tag_journal_state ON tag_journal(state);
"""

TRANSITIONAL = ("pending", "undoing", "redoing")
STAGING = "staging"  # <kiln_dir>/staging: bulk writes' temporary files (see curator.fsutil)
_DB_MARGIN = 256 * 1024  # WAL and b-tree pages beyond the blobs themselves
_UNRECORDED = (
    "the captions were written but the journal could not record it; the next kiln tags command settles the "
    "entry (undo works after that)"
)
_VERB = {"pending": "apply", "undoing": "undo", "redoing": "redo"}


@dataclass(frozen=True, slots=True)
class CaptionChange:
    """One caption file's content before and after an operation (``None``: the file does not exist)."""

    caption_path: Path
    before: bytes | None
    after: bytes | None


@dataclass(slots=True)
class ApplyResult:
    """What an apply/undo/redo did. ``conflicts``: files changed on disk since they were read, left alone;
    ``errors``: files that could not be written (path, reason); ``merged``: files changed on disk since they
    were read whose operation was worked out again on their new content (see ``rebase`` of
    :meth:`Journal.apply`)."""

    entry_id: int | None
    applied: list[Path] = field(default_factory=list)
    conflicts: list[Path] = field(default_factory=list)
    errors: list[tuple[Path, str]] = field(default_factory=list)
    op: str = ""
    description: str = ""
    merged: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.conflicts and not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "entry_id": self.entry_id,
            "op": self.op,
            "description": self.description,
            "applied": [str(p) for p in self.applied],
            "conflicts": [str(p) for p in self.conflicts],
            "errors": [{"path": str(p), "reason": r} for p, r in self.errors],
            "merged": [str(p) for p in self.merged],
        }


Rebase = Callable[[list[tuple[Path, bytes | None]]], dict[Path, bytes | None]]
"""Given files changed on disk since an operation read them, as (path, current bytes), the operation's new
content for each (a path left out, or mapped to its current bytes: nothing to change there)."""

MERGE_ROUNDS = 3  # how many times an operation is worked out again when other processes keep changing files


@dataclass(frozen=True, slots=True)
class JournalEntry:
    id: int
    created: float
    op: str
    description: str
    state: str
    n_changes: int
    note: str = ""

    @property
    def undoable(self) -> bool:
        return self.state == "applied"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created": self.created,
            "op": self.op,
            "description": self.description,
            "state": self.state,
            "files": self.n_changes,
            "note": self.note,
        }


class JournalError(RuntimeError):
    """The journal cannot do what was asked (e.g. the dataset index is unavailable)."""


_READ_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


_Current = tuple[bytes | None, str | None, tuple[int, int] | None]
_EUID = os.geteuid() if hasattr(os, "geteuid") else 0


def _read_only_reason(path: str, st: os.stat_result) -> str | None:
    """Why kiln must not replace a file it could replace by renaming over it: no write permission bit at all
    (chmod a-w, the user's "do not touch", even for root), or another user's file this user may not write
    (a rename in a shared folder would silently take it over)."""
    if not st.st_mode & 0o222:
        return "the file is read-only"
    if st.st_uid == _EUID or os.access(path, os.W_OK):
        return None
    try:
        import pwd

        owner = pwd.getpwuid(st.st_uid).pw_name
    except (ImportError, KeyError):
        owner = f"uid {st.st_uid}"
    return f"the file belongs to {owner} and is not writable by you"


def _read_current(path: str) -> _Current:
    """A file's bytes (None: missing), why kiln must not replace it (None: it may; see
    :func:`_read_only_reason`), and its identity (device, inode), which tells two names of one file apart
    from two files. One open, fstat and read."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        return None, None, None
    try:
        st = os.fstat(fd)
        read_only = _read_only_reason(path, st)
        chunks = [os.read(fd, 16384)]
        while chunks[-1]:
            chunks.append(os.read(fd, 1 << 20))
    finally:
        os.close(fd)
    # one directory entry reached by two names (a case-insensitive disk, symlinks) is one file to write; hard
    # links are separate entries, each replaced by its own atomic write (never written through into the others)
    identity = (st.st_dev, st.st_ino) if st.st_nlink == 1 else None
    return (chunks[0] if len(chunks) == 2 else b"".join(chunks)), read_only, identity


def _read_many(paths: list[str]) -> list[_Current | OSError]:
    """Current content of many files (see :func:`_read_current`; an OSError: unreadable). Serial: these
    files were just read by the operation, so they come from the page cache and threads would only add
    overhead."""
    out: list[_Current | OSError] = []
    for path in paths:
        try:
            out.append(_read_current(path))
        except OSError as exc:
            out.append(exc)
    return out


def _bulk(method: Callable[P, R]) -> Callable[P, R]:
    """Run a journal operation with the cyclic garbage collector paused (see :func:`paused_gc`); a SQLite
    fault becomes the ``OSError`` of :func:`curator.faults.index_error` (locked, full, read-only, damaged)."""

    @functools.wraps(method)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with paused_gc():
            try:
                return method(*args, **kwargs)
            except sqlite3.Error as exc:
                journal = args[0]
                assert isinstance(journal, Journal)
                raise index_error(exc, journal.index.path, f"recording {method.__name__} in the caption journal",
                                  needed=journal._needed) from exc
            except OSError as exc:
                if isinstance(exc, DiskFullError) or not is_disk_full(exc):
                    raise
                journal = args[0]
                assert isinstance(journal, Journal)
                raise DiskFullError(exc.filename or journal.root, f"the caption journal's {method.__name__}",
                                    journal._needed) from exc

    return run


class Journal:
    """The journal of one dataset (its index database + the dataset root for resolving paths)."""

    def __init__(self, index: Index, root: Path | None = None, folders: Sequence[Path] = ()) -> None:
        """``folders``: the dataset's folders besides ``root`` (a dataset TOML's image folders); caption
        writes stay inside these and ``root`` (a symlink leading out of them is refused)."""
        self.index = index
        self.conn = index.conn
        self.root = Path(root if root is not None else index.root).resolve()
        self._root_text = str(self.root)
        self._prefix = self._root_text + os.sep
        self.kiln_dir = Path(index.kiln_dir)
        self.folders = [self.root, *(Path(f) for f in folders)]
        self._cache: CaptionCache | None = None  # made on first use
        self._needed: int | None = None  # bytes the running operation needs on disk (for a full-disk message)
        self._stopped: DiskFullError | None = None  # the full disk that stopped the running operation's writes
        try:
            index.ensure_schema(SCHEMA)
        except sqlite3.Error as exc:
            raise index_error(exc, index.path, "opening the caption journal", needed=_DB_MARGIN) from exc

    # ---- paths -----------------------------------------------------------------------------------------
    def _key(self, path: Path) -> str:
        text = os.path.abspath(path)
        prefix = self._prefix
        if text.startswith(prefix):
            rel = text[len(prefix) :]
            return rel.replace(os.sep, "/") if os.sep != "/" else rel
        return text

    def _abs(self, key: str) -> Path:
        p = Path(key)
        return p if p.is_absolute() else self.root / p

    def _abs_text(self, key: str) -> str:
        """``_abs`` as a string (no ``Path`` per file in bulk operations)."""
        if os.path.isabs(key):
            return key
        if os.sep != "/":  # pragma: no cover - Windows
            key = key.replace("/", os.sep)
        return self._prefix + key

    # ---- locking / transactions --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self, wait: bool = True) -> Iterator[bool]:
        """One journal writer at a time (the TUI and a CLI command on the same dataset). Yields False when
        ``wait`` is off and another process holds the lock."""
        self.kiln_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.kiln_dir / "journal.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except ImportError:  # pragma: no cover - Windows
                pass
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _durable_tx(self) -> Iterator[sqlite3.Connection]:
        """A transaction committed with ``synchronous=FULL`` (survives a power cut, not just a kill)."""
        self.conn.execute("PRAGMA synchronous=FULL")
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                self.conn.execute("COMMIT")  # a full disk usually shows here, when the WAL is written
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        finally:
            self.conn.execute("PRAGMA synchronous=NORMAL")

    # ---- public operations -------------------------------------------------------------------------------
    @_bulk
    def apply(
        self, changes: list[CaptionChange], op: str, description: str, rebase: Rebase | None = None
    ) -> ApplyResult:
        """Record then apply ``changes`` as one entry. Changes whose before equals after are dropped.

        A file changed on disk since it was read (another process edited it) is a conflict, left alone; with
        ``rebase``, the operation is worked out again on its new content instead and that is applied, in the
        same entry (up to :data:`MERGE_ROUNDS` times), so neither process's edit is lost."""
        changes = [c for c in changes if c.before != c.after]
        keys = [self._key(c.caption_path) for c in changes]
        if len(set(keys)) != len(keys):
            seen: set[str] = set()
            for key in keys:
                if key in seen:
                    raise JournalError(f"{key} appears twice in one operation")
                seen.add(key)
        result = ApplyResult(entry_id=None, op=op, description=description)
        if not changes:
            return result
        what = f"{description} ({len(changes)} caption file(s))"
        self._check_space(changes, what)
        with self._lock():
            self._recover_locked()
            try:
                with self._durable_tx() as conn:
                    conn.execute("UPDATE tag_journal SET state = 'discarded' WHERE state = 'undone'")
                    cur = conn.execute(
                        "INSERT INTO tag_journal (created, op, description, state, n_changes) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (time.time(), op, description, "pending", len(changes)),
                    )
                    entry_id = cur.lastrowid
                    assert entry_id is not None  # set by the INSERT just above
                    conn.executemany(
                        "INSERT INTO tag_journal_changes (entry_id, seq, path, before, after, status) "
                        "VALUES (?, ?, ?, ?, ?, 'pending')",
                        [
                            (entry_id, i, key, c.before, c.after)
                            for i, (key, c) in enumerate(zip(keys, changes, strict=True))
                        ],
                    )
            except sqlite3.Error as exc:  # nothing was written: the entry is not there either
                raise index_error(exc, self.index.path, what, needed=self._needed) from exc
            result.entry_id = entry_id
            rows = [(i, key, c.before, c.after) for i, (key, c) in enumerate(zip(keys, changes, strict=True))]
            self._stopped = None
            statuses = self._transition(rows, result=result, given=[c.caption_path for c in changes])
            rounds = 0
            while rebase is not None and result.conflicts and self._stopped is None and rounds < MERGE_ROUNDS:
                rounds += 1
                statuses.update(self._rebase(entry_id, rows, statuses, result, rebase))
            ok = any(s == "applied" for s in statuses.values())
            try:
                with self._durable_tx() as conn:
                    conn.executemany(
                        "UPDATE tag_journal_changes SET status = ? WHERE entry_id = ? AND seq = ?",
                        [(s, entry_id, seq) for seq, s in statuses.items() if s != "applied"],
                    )
                    conn.execute(
                        "UPDATE tag_journal_changes SET status = 'applied' "
                        "WHERE entry_id = ? AND status = 'pending'",
                        (entry_id,),
                    )
                    conn.execute(
                        "UPDATE tag_journal SET state = ? WHERE id = ?", ("applied" if ok else "failed", entry_id)
                    )
            except sqlite3.Error as exc:  # the entry stays pending; the next journal call settles it
                note = _UNRECORDED if ok else DiskFullError.NOTHING_CHANGED
                raise index_error(exc, self.index.path, what, needed=self._needed, note=note) from exc
        if self._stopped is not None:
            raise self._stopped
        self._forget_cached([keys[seq] for seq, s in statuses.items() if s == "applied"])
        return result

    def _rebase(
        self,
        entry_id: int,
        rows: list[tuple[int, str, bytes | None, bytes | None]],
        statuses: dict[int, str],
        result: ApplyResult,
        rebase: Rebase,
    ) -> dict[int, str]:
        """Work the operation out again for the conflicted files on their current content; record the new
        before/after durably (so recovery and undo know them), then write them. Returns their statuses."""
        conflicted = {self._abs_text(key): seq for seq, key, _b, _a in rows if statuses.get(seq) == "conflict"}
        by_text = {str(p): p for p in result.conflicts}
        result.conflicts = [p for p in result.conflicts if str(p) not in conflicted]
        currents: list[tuple[Path, bytes | None]] = []
        for text in conflicted:
            try:
                currents.append((by_text.get(text, Path(text)), read_file(text)))
            except OSError as exc:
                result.errors.append((by_text.get(text, Path(text)), exc.strerror or str(exc)))
        vanished = [(p, c) for p, c in currents if c is None and rows[conflicted[str(p)]][2] is not None]
        currents = [(p, c) for p, c in currents if (p, c) not in vanished]
        done: dict[int, str] = {}
        for path, _none in vanished:  # deleted since read: not brought back by working the edit out again
            done[conflicted[str(path)]] = "conflict"
            result.conflicts.append(path)
        afters = rebase(currents) if currents else {}
        again: list[tuple[int, str, bytes | None, bytes | None]] = []
        for path, current in currents:
            seq = conflicted[str(path)]
            after = afters.get(path, current)
            result.merged.append(path)
            if after == current:  # the other edit already holds what this operation wants, or it no longer applies
                done[seq] = "skipped"
            else:
                again.append((seq, rows[seq][1], current, after))
        if again:
            with self._durable_tx() as conn:
                conn.executemany(
                    "UPDATE tag_journal_changes SET before = ?, after = ? WHERE entry_id = ? AND seq = ?",
                    [(before, after, entry_id, seq) for seq, _key, before, after in again],
                )
            for seq, key, before, after in again:
                rows[seq] = (seq, key, before, after)
            done.update(self._transition(again, result=result))
        return done

    def _space_needed(self, changes: Sequence[CaptionChange], db_factor: int) -> tuple[int, int]:
        """(bytes on the captions' disk, bytes on the index's disk) an operation needs: the new files (whole
        blocks each: they exist beside the old ones until the renames) and the journal's writes (a new entry:
        every before and after, written to the WAL and rewritten when the outcome is recorded, ``db_factor``
        3; an undo or redo rewrites the entry's rows once, 1)."""
        files = space_for([len(c.after) for c in changes if c.after is not None], block_size(self.root))
        blobs = sum(len(c.before or b"") + len(c.after or b"") + 96 for c in changes)
        return files, db_factor * blobs + _DB_MARGIN

    def _check_space(self, changes: Sequence[CaptionChange], what: str, db_factor: int = 3) -> None:
        """Refuse an operation the disk visibly cannot hold (:class:`DiskFullError`), before anything is
        written; an operation that passes and still meets a full disk is stopped by the write protocol."""
        files, db = self._space_needed(changes, db_factor)
        try:
            same_disk = os.stat(self.root).st_dev == os.stat(self.kiln_dir).st_dev
        except OSError:
            same_disk = True
        self._needed = files + db if same_disk else files
        if same_disk:
            ensure_space(self.root, files + db, what)
        else:
            ensure_space(self.root, files, what)
            ensure_space(self.kiln_dir, db, what)

    @_bulk
    def undo(self) -> ApplyResult | None:
        """Undo the newest applied entry; None when there is nothing to undo."""
        with self._lock():
            self._recover_locked()
            row = self.conn.execute(
                "SELECT id, op, description FROM tag_journal WHERE state = 'applied' ORDER BY id DESC LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            entry_id, op, description = row
            result, written = self._move(
                entry_id, "applied", "undoing", "undone", expect="after", op=op, description=description
            )
        self._forget_cached(written)
        return result

    @_bulk
    def redo(self) -> ApplyResult | None:
        """Redo the most recently undone entry; None when there is nothing to redo."""
        with self._lock():
            self._recover_locked()
            row = self.conn.execute(
                "SELECT id, op, description FROM tag_journal WHERE state = 'undone' ORDER BY id ASC LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            entry_id, op, description = row
            result, written = self._move(
                entry_id, "reverted", "redoing", "applied", expect="before", op=op, description=description
            )
        self._forget_cached(written)
        return result

    def peek(self, action: str) -> tuple[JournalEntry, list[CaptionChange]] | None:
        """What ``undo`` / ``redo`` would do next, as (entry, changes from the current to the target content),
        without doing it."""
        self.recover()
        if action == "undo":
            sql, status = "state = 'applied' ORDER BY id DESC", "applied"
        else:
            sql, status = "state = 'undone' ORDER BY id ASC", "reverted"
        row = self.conn.execute(
            "SELECT id, created, op, description, state, n_changes, note FROM tag_journal WHERE "
            + sql
            + " LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        entry = JournalEntry(*row)
        rows = self.conn.execute(
            "SELECT path, before, after FROM tag_journal_changes "
            "WHERE entry_id = ? AND status = ? ORDER BY seq",
            (entry.id, status),
        ).fetchall()
        if action == "undo":
            return entry, [CaptionChange(self._abs(p), a, b) for p, b, a in rows]
        return entry, [CaptionChange(self._abs(p), b, a) for p, b, a in rows]

    def history(self, limit: int = 50) -> list[JournalEntry]:
        """Entries newest first."""
        self.recover()
        rows = self.conn.execute(
            "SELECT id, created, op, description, state, n_changes, note FROM tag_journal "
            "ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [JournalEntry(*r) for r in rows]

    def prune(self, keep: int) -> int:
        """Forget all but the newest ``keep`` entries (their undo is no longer possible). Returns how many
        entries were removed. The database file shrinks on the next VACUUM; its pages are reused before
        that."""
        if keep < 0:
            raise JournalError("keep must be 0 or more")
        with self._lock():
            self._recover_locked()
            rows = self.conn.execute(
                "SELECT id FROM tag_journal ORDER BY id DESC LIMIT -1 OFFSET ?", (keep,)
            ).fetchall()
            ids = [(r[0],) for r in rows]
            with self._durable_tx() as conn:
                conn.executemany("DELETE FROM tag_journal_changes WHERE entry_id = ?", ids)
                conn.executemany("DELETE FROM tag_journal WHERE id = ?", ids)
        return len(ids)

    def changes(self, entry_id: int) -> list[tuple[Path, bytes | None, bytes | None, str]]:
        """(path, before, after, status) of an entry's files."""
        rows = self.conn.execute(
            "SELECT path, before, after, status FROM tag_journal_changes WHERE entry_id = ? ORDER BY seq",
            (entry_id,),
        ).fetchall()
        return [(self._abs(p), b, a, s) for p, b, a, s in rows]

    def recover(self) -> list[int]:
        """Settle entries left mid-way by a killed process (skipped while another process holds the journal
        lock). Returns the ids recovered."""
        if not self.conn.execute(
            "SELECT 1 FROM tag_journal WHERE state IN ('pending', 'undoing', 'redoing') LIMIT 1"
        ).fetchone():
            return []
        with self._lock(wait=False) as locked:
            # a busy lock means another process is applying right now: its entry is pending, not abandoned
            return self._recover_locked() if locked else []

    # ---- internals ---------------------------------------------------------------------------------------
    def _move(
        self,
        entry_id: int,
        from_status: str,
        mid_state: str,
        end_state: str,
        expect: str,
        op: str,
        description: str,
    ) -> tuple[ApplyResult, list[str]]:
        """Walk an entry's files to ``end_state``; returns the result and the keys of the files written."""
        result = ApplyResult(entry_id=entry_id, op=op, description=description)
        start_state = "applied" if end_state == "undone" else "undone"
        rows = self.conn.execute(
            "SELECT seq, path, before, after FROM tag_journal_changes "
            "WHERE entry_id = ? AND status = ? ORDER BY seq",
            (entry_id, from_status),
        ).fetchall()
        if expect == "after":  # undo: write the befores over the afters
            rows = [(seq, path, after, before) for seq, path, before, after in rows]
        verb = "undo" if end_state == "undone" else "redo"
        self._check_space(
            [CaptionChange(Path(key), old, new) for _seq, key, old, new in rows],
            f"{verb} of #{entry_id} {description} ({len(rows)} caption file(s))",
            db_factor=1,
        )
        with self._durable_tx() as conn:
            conn.execute("UPDATE tag_journal SET state = ? WHERE id = ?", (mid_state, entry_id))
        self._stopped = None
        statuses = self._transition(rows, result=result)
        if self._stopped is not None and not result.applied:  # a full disk: the entry stays as it was
            with self._durable_tx() as conn:
                conn.execute("UPDATE tag_journal SET state = ? WHERE id = ?", (start_state, entry_id))
            raise self._stopped
        done_status = "reverted" if end_state == "undone" else "applied"
        with self._durable_tx() as conn:
            # every file of the walk to done_status in one statement, then the few that were not written
            # back (one transaction: nothing in between is ever visible)
            conn.execute(
                "UPDATE tag_journal_changes SET status = ? WHERE entry_id = ? AND status = ?",
                (done_status, entry_id, from_status),
            )
            conn.executemany(
                "UPDATE tag_journal_changes SET status = ? WHERE entry_id = ? AND seq = ?",
                [
                    ("conflict" if s == "conflict" else from_status, entry_id, seq)
                    for seq, s in statuses.items()
                    if s != "applied"
                ],
            )
            conn.execute("UPDATE tag_journal SET state = ? WHERE id = ?", (end_state, entry_id))
        written = [key for seq, key, _old, _new in rows if statuses.get(seq) == "applied"]
        if self._stopped is not None:  # part of the files were written before the disk filled (recorded above)
            self._forget_cached(written)
            raise self._stopped
        return result, written

    def _transition(
        self,
        rows: list[tuple[int, str, bytes | None, bytes | None]],
        result: ApplyResult,
        given: Sequence[Path | str | None] | None = None,
    ) -> dict[int, str]:
        """Move files from ``old`` to ``new`` content (rows: seq, key, old, new). Files not holding ``old``
        are conflicts. Returns seq -> 'applied' | 'conflict' | 'skipped'. ``given``: the caller's path of
        each row, reused for the result lists when it already names the file the key resolves to."""
        statuses: dict[int, str] = {}
        writes: list[tuple[int, str, bytes]] = []
        removals: list[tuple[int, str]] = []
        texts = [self._abs_text(key) for _seq, key, _old, _new in rows]
        if given is None:
            given = [None] * len(rows)
        paths: dict[str, Path] = {}

        def as_path(text: str, mine: Path | str | None) -> Path:
            if isinstance(mine, Path) and mine.is_absolute() and str(mine) == text:
                path = mine
            else:
                path = Path(text)
            paths[text] = path
            return path

        currents = _read_many(texts)
        names: dict[tuple[int, int], str] = {}  # file identity -> the first name it was reached by
        for (seq, _key, old, new), text, mine, current in zip(rows, texts, given, currents, strict=True):
            if isinstance(current, OSError):
                statuses[seq] = "skipped"
                result.errors.append((as_path(text, mine), current.strerror or str(current)))
                continue
            data, read_only, identity = current
            first_name = names.setdefault(identity, text) if identity is not None else text
            if first_name != text:  # A.txt and a.txt on a case-insensitive disk, or two hard links
                statuses[seq] = "skipped"
                result.errors.append(
                    (as_path(text, mine), f"it is the same file as {self._rel_text(first_name)} (names that differ "
                     "only in case on this filesystem, or symlinks); changed once, through that name")
                )
                continue
            if data == new:  # already there (e.g. an earlier interrupted run)
                statuses[seq] = "applied"
                result.applied.append(as_path(text, mine))
            elif data != old:
                statuses[seq] = "conflict"
                result.conflicts.append(as_path(text, mine))
            elif data is not None and read_only:
                statuses[seq] = "skipped"  # a read-only caption is the user's way of saying "do not touch"
                result.errors.append((as_path(text, mine), read_only))
            elif new is None:
                as_path(text, mine)
                removals.append((seq, text))
            else:
                as_path(text, mine)
                writes.append((seq, text, new))
        if writes:
            outcomes = self._write_batch(writes)
            for (seq, text, _data), outcome in zip(writes, outcomes, strict=True):
                if outcome is None:
                    statuses[seq] = "applied"
                    result.applied.append(paths[text])
                else:
                    statuses[seq] = "skipped"
                    if isinstance(outcome, DiskFullError):
                        self._stopped = outcome
                    else:
                        result.errors.append((paths[text], write_refusal(outcome)))
        if self._stopped is not None:  # a full disk stopped the writes: no file was replaced, none is trashed
            for seq, _text in removals:
                statuses[seq] = "skipped"
            return statuses
        for seq, text in removals:
            path = paths[text]
            try:
                self._trash(path)
                statuses[seq] = "applied"
                result.applied.append(path)
            except OSError as exc:
                statuses[seq] = "skipped"
                result.errors.append((path, write_refusal(exc)))
        return statuses

    def _write_batch(self, writes: list[tuple[int, str, bytes]]) -> list[OSError | None]:
        """Write each file atomically, inside the dataset's folders; per write None (done) or the error (the
        same :class:`DiskFullError` for every write when the disk filled up: then none was done)."""
        outcomes = write_files_atomically(
            [(text, data) for _seq, text, data in writes],
            confine=self.folders,
            what=f"writing {len(writes)} caption file(s)",
            stage=self.kiln_dir / STAGING,
        )
        full = next((out for out in outcomes if isinstance(out, DiskFullError)), None)
        if full is not None:
            done = sum(out is None for out in outcomes)
            note = (
                f"{done} of {len(outcomes)} caption file(s) were changed before the disk filled; "
                "kiln tags undo reverts them"
                if done
                else DiskFullError.NOTHING_CHANGED
            )
            full = DiskFullError(full.path, full.what, max(self._needed or 0, full.needed or 0), note=note)
            return [full if isinstance(out, DiskFullError) else out for out in outcomes]
        return [getattr(out, "cause", out) for out in outcomes]

    def _rel_text(self, text: str) -> str:
        """A file's name for messages: relative to the dataset root when inside it."""
        return text[len(self._prefix) :] if text.startswith(self._prefix) else text

    def _trash(self, path: Path) -> Path:
        """Move a caption file to ``.kiln/trash/caption-journal/<time>/<its path>`` (never delete user data).
        The trash batches of ``curator.trash`` (folders with a manifest) are not affected."""
        key = self._key(path)
        rel = key if not Path(key).is_absolute() else Path(key).name
        base = self.kiln_dir / "trash" / "caption-journal" / time.strftime("%Y%m%d-%H%M%S")
        dest = base / rel
        n = 1
        while dest.exists():
            dest = base.with_name(f"{base.name}-{n}") / rel
            n += 1
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(path, dest)
        except OSError:
            shutil.copy2(path, dest)
            os.unlink(path)
        fsync_dir(path.parent)
        fsync_dir(dest.parent)
        return dest

    def _recover_locked(self) -> list[int]:
        clean_stage(self.kiln_dir / STAGING)  # batches a killed process left (old contents, temporary files)
        recovered = []
        rows = self.conn.execute(
            "SELECT id, state FROM tag_journal WHERE state IN ('pending', 'undoing', 'redoing') ORDER BY id"
        ).fetchall()
        for entry_id, state in rows:
            changes = self.conn.execute(
                "SELECT seq, path, before, after, status FROM tag_journal_changes WHERE entry_id = ?",
                (entry_id,),
            ).fetchall()
            updates = []
            folders = set()
            for seq, key, before, after, status in changes:
                path = self._abs(key)
                folders.add(path.parent)
                if status in ("skipped", "conflict"):
                    continue
                try:
                    current = read_file(path)
                except OSError:
                    current = b"\0unreadable"
                if current == after:
                    new = "applied"
                elif current == before:
                    new = "skipped" if state == "pending" else "reverted"
                else:
                    new = "conflict"
                if new != status:
                    updates.append((new, entry_id, seq))
            for folder in folders:
                remove_stale_temps(folder)
            statuses = {seq: status for seq, _k, _b, _a, status in changes}
            for new, _e, seq in updates:
                statuses[seq] = new
            any_applied = any(s == "applied" for s in statuses.values())
            if state == "pending":
                end = "applied" if any_applied else "failed"
            elif state == "undoing":
                end = "applied" if any_applied else "undone"
            else:
                end = "applied" if any_applied else "undone"
            with self._durable_tx() as conn:
                conn.executemany(
                    "UPDATE tag_journal_changes SET status = ? WHERE entry_id = ? AND seq = ?", updates
                )
                conn.execute(
                    "UPDATE tag_journal SET state = ?, note = ? WHERE id = ?",
                    (end, f"recovered after an interrupted {_VERB[state]}", entry_id),
                )
            recovered.append(entry_id)
        return recovered

    def _forget_cached(self, keys: list[str]) -> None:
        """Drop the caption-cache rows of the files just written (``keys``: their journal keys, which are the
        cache's keys too). Re-caching them now would be wasted work: a file modified within a second of being
        cached is not trusted (the racy-timestamp rule), so the next read re-reads it anyway. The old rows
        could not be trusted either (the files' mtimes changed); dropping them keeps the cache exact."""
        if not keys:
            return
        try:
            if self._cache is None:
                self._cache = CaptionCache(self.index, self.root)
            self._cache.forget_keys(keys)
        except (OSError, sqlite3.Error):  # the cache is an optimisation; a failure only costs a re-read later
            pass


class JournalWatch:
    """What changed through the journal since the last look, for a long-running reader (the TUI): entries
    another process added (``kiln tags``, ``kiln autotag``) and entries whose state moved (an undo, a redo, a
    recovery). :meth:`changed` costs one ``PRAGMA data_version`` when nothing happened."""

    WINDOW = 200  # the newest entries compared (older ones no longer change, save for a prune)

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._version = self._data_version()
        self._states = self._entry_states()

    def _data_version(self) -> int:
        row = self.journal.conn.execute("PRAGMA data_version").fetchone()
        return int(row[0]) if row else 0

    def _entry_states(self) -> dict[int, str]:
        rows = self.journal.conn.execute(
            "SELECT id, state FROM tag_journal ORDER BY id DESC LIMIT ?", (self.WINDOW,)
        ).fetchall()
        return {int(entry_id): str(state) for entry_id, state in rows}

    def changed(self) -> list[Path]:
        """The caption files of every entry added or moved since the previous call (another process's
        commits; this connection's own show up too, once another process has written)."""
        try:
            version = self._data_version()
            if version == self._version:
                return []
            self._version = version
            states = self._entry_states()
            moved = [i for i, state in states.items() if self._states.get(i) != state]
            self._states = states
            if not moved:
                return []
            marks = ",".join("?" * len(moved))
            rows = self.journal.conn.execute(
                f"SELECT DISTINCT path FROM tag_journal_changes WHERE entry_id IN ({marks})", moved
            ).fetchall()
        except sqlite3.Error:  # a busy or vanished index: look again at the next poll
            return []
        return [self.journal._abs(path) for (path,) in rows]


# ---- module-level API (what the TUI, the CLI and the autotagger call) --------------------------------------


_JOURNALS: weakref.WeakKeyDictionary[Dataset, Journal] = weakref.WeakKeyDictionary()


def journal_for(dataset: Dataset) -> Journal:
    """The journal of an open dataset (one per ``Dataset``, made on first use)."""
    journal = _JOURNALS.get(dataset)
    if journal is None:
        folders = [subset.image_dir for subset in dataset.layout.subsets]
        journal = _JOURNALS[dataset] = Journal(dataset.index, dataset.root, folders)
    return journal


def apply_changes(
    dataset: Dataset, changes: list[CaptionChange], op: str, description: str, rebase: Rebase | None = None
) -> ApplyResult:
    """Record ``changes`` as one journal entry and write them (atomic, conflict-checked; with ``rebase``,
    files another process changed meanwhile get the operation worked out again on their new content)."""
    return journal_for(dataset).apply(changes, op, description, rebase)


def undo(dataset: Dataset) -> ApplyResult | None:
    return journal_for(dataset).undo()


def redo(dataset: Dataset) -> ApplyResult | None:
    return journal_for(dataset).redo()


def history(dataset: Dataset, limit: int = 50) -> list[JournalEntry]:
    return journal_for(dataset).history(limit)
