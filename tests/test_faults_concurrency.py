"""Two processes on one dataset: two bulk edits at once, and an index another process holds locked.

* Two ``kiln tags`` operations that read the same captions before either writes: the second finds the files
  changed and works its operation out again on their new content (merged, with a message); no edit is lost,
  one ``undo`` per operation restores every byte.
* Two real ``kiln tags`` processes started together, several rounds: whatever the interleaving, every caption
  ends with both edits.
* SQLite's "database is locked" (another process holding the index longer than kiln waits) is one line on
  stderr, exit 1, nothing changed; read-only commands keep working meanwhile (WAL readers are not blocked).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from curator.dataset import Dataset
from curator.tags import journal
from curator.tags.items import load_items, refreshed_items
from curator.tags.ops import add_tags, replace_tag
from tests.faults import REPO, snapshot
from tests.test_faults_disk_full import build
from tui.cli import main

N_IMAGES = 40


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    root = build(tmp_path / "ds", n=N_IMAGES)
    with Dataset.open(root, quiet=True) as ds:
        ds.scan(progress=False)
    return root


def _captions(root: Path) -> dict[str, bytes]:
    return {k: v for k, v in snapshot(root).items() if k.endswith(".txt")}


def test_second_edit_read_before_the_first_wrote_is_merged(root: Path) -> None:
    before = _captions(root)
    with Dataset.open(root, quiet=True) as a, Dataset.open(root, quiet=True) as b:
        items_a, items_b = load_items(a), load_items(b)  # both read the same bytes
        plan_a = replace_tag(items_a, "long hair", "short hair")
        plan_b = add_tags(items_b, "solo", position="end")
        assert journal.apply_changes(a, plan_a, "replace", "a").ok

        def rebase(currents: list[tuple[Path, bytes | None]]) -> dict[Path, bytes | None]:
            fresh = refreshed_items(b, items_b, currents)
            return {c.caption_path: c.after for c in add_tags(fresh, "solo", position="end")}

        result = journal.apply_changes(b, plan_b, "add", "b", rebase=rebase)
        assert result.ok and len(result.merged) == N_IMAGES and len(result.applied) == N_IMAGES
    now = _captions(root)
    for rel, old in before.items():
        eol = b"\r\n" if old.endswith(b"\r\n") else b"\n"
        assert now[rel] == old.rstrip(b"\r\n").replace(b"long hair", b"short hair") + b", solo" + eol
    with Dataset.open(root, quiet=True) as ds:
        assert journal.undo(ds) is not None and journal.undo(ds) is not None
    assert _captions(root) == before


DRIVER = (
    "import sys, time\n"
    "from tui.cli import main\n"
    "import curator.dataset, curator.tags.commands, curator.tags.journal, curator.tags.ops, curator.tags.items\n"
    "sys.stdout.write('ready\\n'); sys.stdout.flush()\n"
    "sys.stdin.readline()\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _ready(*argv: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, *argv], cwd=REPO, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


def test_two_cli_bulk_edits_at_once_lose_nothing(root: Path) -> None:
    before = _captions(root)
    pairs = [
        (("replace", "long hair", "short hair"), ("add", "solo")),
        (("add", "outdoors", "--front"), ("replace", "smile", "grin")),
    ]
    expected = dict(before)
    for first, second in pairs:
        procs = [_ready("tags", op[0], str(root), *op[1:]) for op in (first, second)]
        for proc in procs:  # release both at once
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
        outs = [proc.communicate(timeout=120) for proc in procs]
        for proc, (out, err) in zip(procs, outs, strict=True):
            assert proc.returncode == 0, (out.decode(), err.decode())
            assert b"Traceback" not in err
        for rel, raw in expected.items():
            expected[rel] = _apply_cli(_apply_cli(raw, first), second)
        assert _captions(root) == expected
    with Dataset.open(root, quiet=True) as ds:
        while journal.undo(ds) is not None:
            pass
    assert _captions(root) == before


def _apply_cli(raw: bytes, op: tuple[str, ...]) -> bytes:
    """What one of the operations above does to a caption (the test's own model of it)."""
    eol = b"\r\n" if raw.endswith(b"\r\n") else b"\n"
    tags = raw.rstrip(b"\r\n").decode().split(", ")
    if op[0] == "replace":
        tags = [op[2] if t == op[1] else t for t in tags]
    elif op[0] == "add":
        if op[1] not in tags:
            tags = [op[1], *tags] if "--front" in op else [*tags, op[1]]
    elif op[0] == "remove":
        tags = [t for t in tags if t != op[1]]
    return ", ".join(tags).encode() + eol


@pytest.fixture()
def locked(root: Path, monkeypatch: pytest.MonkeyPatch):
    """Another process holds a write transaction on the index (as a long scan commit would)."""
    monkeypatch.setenv("KILN_DB_TIMEOUT", "0.2")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys\n"
         f"c = sqlite3.connect({str(root / '.kiln' / 'index.sqlite')!r}, isolation_level=None)\n"
         "c.execute('BEGIN IMMEDIATE'); c.execute(\"INSERT OR REPLACE INTO meta VALUES ('held', '1')\")\n"
         "print('held', flush=True); sys.stdin.readline()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    yield root
    assert holder.stdin is not None
    holder.stdin.write("\n")
    holder.stdin.flush()
    holder.wait(timeout=30)


def test_database_locked_is_one_line_not_a_traceback(locked: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = locked
    before = snapshot(root)
    code = main(["tags", "replace", str(root), "long hair", "short hair"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "is busy" in err and "index.sqlite" in err and "KILN_DB_TIMEOUT" in err
    assert snapshot(root) == before
    # reading is not blocked by another process's write transaction
    assert main(["tags", "stats", str(root), "--json"]) == 0
    assert '"long hair"' in capsys.readouterr().out


def test_scan_while_the_index_is_locked(locked: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = locked
    folder = root / "10_ohwx woman"
    (folder / "img000.png").rename(folder / "moved.png")  # something for the scan to write
    code = main(["scan", str(root), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and "is busy" in err, err


def test_journal_lock_makes_the_second_writer_wait(root: Path) -> None:
    """Two writers in one moment: the second waits for the first's journal lock, then applies on its result."""
    before = _captions(root)
    with Dataset.open(root, quiet=True) as a:
        j = journal.journal_for(a)
        with j._lock():  # the first writer holds the journal
            done = threading.Event()

            def second() -> None:
                with Dataset.open(root, quiet=True) as b:
                    assert journal.apply_changes(b, add_tags(load_items(b), "solo"), "add", "b").ok
                done.set()

            thread = threading.Thread(target=second)
            thread.start()
            assert not done.wait(0.3)  # blocked on the lock
            assert _captions(root) == before
        thread.join(timeout=30)
        assert done.is_set()
    assert all(raw.rstrip(b"\r\n").endswith(b", solo") for raw in _captions(root).values())


def test_sqlite_error_never_escapes_the_journal(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from curator.faults import IndexBusyError

    monkeypatch.setenv("KILN_DB_TIMEOUT", "0.1")
    other = sqlite3.connect(root / ".kiln" / "index.sqlite", isolation_level=None)
    with Dataset.open(root, quiet=True) as ds:
        j = journal.journal_for(ds)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(IndexBusyError):
                j.apply(add_tags(load_items(ds), "solo"), "add", "x")
        finally:
            other.execute("ROLLBACK")
        assert not ds.index.conn.in_transaction
        assert j.apply(add_tags(load_items(ds), "solo"), "add", "x").ok  # the connection is usable again
    other.close()


def test_the_tui_picks_up_another_process_bulk_edit(tmp_path: Path) -> None:
    """The TUI open while ``kiln tags replace`` runs in another shell: every row (not only the visible ones)
    shows the new tags within a poll or two; an edit the TUI then makes on a caption the other process changed
    meanwhile is refused, never written over it."""
    import asyncio

    from tests.test_tui_workflows import make_app, wait_for, wait_loaded

    root = build(tmp_path / "ds", n=120)  # far more rows than the 100x30 screen shows

    async def run() -> None:
        app = make_app(root)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot)
            model = app.model
            assert all("long hair" in row.tags for row in model.rows)
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            done = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "tui.cli", "tags", "replace", str(root), "long hair",
                                 "short hair"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            await wait_for(pilot, lambda: all("short hair" in row.tags for row in model.rows), timeout=15)
            assert not any("long hair" in row.tags for row in model.rows)
            # the other process changes one caption again; the TUI's stale edit of it is refused
            row = model.rows[-1]
            stale = list(row.tags)
            target = root / row.path.rsplit(".", 1)[0]
            Path(str(target) + ".txt").write_bytes(b"edited elsewhere\n")
            result = await asyncio.to_thread(model.set_tags, row, [*stale, "solo"], "add solo")
            assert result is not None and result.conflicts
            assert Path(str(target) + ".txt").read_bytes() == b"edited elsewhere\n"

    asyncio.run(run())
