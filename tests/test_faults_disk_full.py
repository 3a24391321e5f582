"""A full disk (ENOSPC) during a bulk caption edit, a journal write (undo) and an index write (scan).

Each fault is planted for real and swept over the whole operation:

* the ``os``-level injector fails the N-th write of ``kiln tags replace`` for every N (any user);
* on a real small tmpfs (root only), the free space is swept page by page from nothing to enough, with kiln's
  up-front space check on and off (off: the space vanishes between the check and the writes, so SQLite and
  the caption writes meet the real ENOSPC at every stage).

After each trial: every caption is byte-identical to before (or, where the operation completed, to after),
the journal settles (no entry left pending) and undo restores every byte, the index opens and passes SQLite's
integrity check, and the user saw one line naming the disk's mount point and the space needed.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from curator.dataset import Dataset
from curator.faults import DiskFullError, mount_point
from curator.fsutil import TEMP_PREFIX
from curator.tags import journal
from tests.conftest import photo
from tests.faults import TinyDisk, WriteFaults, snapshot, tiny_disk
from tui.cli import main

N_IMAGES = 10
BEFORE = b"1girl, long hair, smile\n"
AFTER = b"1girl, short hair, smile\n"


def build(root: Path, n: int = N_IMAGES, captions: bool = True) -> Path:
    folder = root / "10_ohwx woman"
    folder.mkdir(parents=True, exist_ok=True)
    base = photo("astronaut.png", (96, 96))
    for i in range(n):
        base.crop((i, i, i + 24, i + 24)).save(folder / f"img{i:03d}.png")
        if captions:
            (folder / f"img{i:03d}.txt").write_bytes(BEFORE if i % 3 else BEFORE.replace(b"\n", b"\r\n"))
    return root


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = build(tmp_path_factory.mktemp("enospc") / "ds")
    with Dataset.open(root, quiet=True) as ds:
        ds.scan(progress=False)
        journal.journal_for(ds)  # the journal's tables exist, as after any earlier kiln tags command
    return root


def _after(raw: bytes) -> bytes:
    return raw.replace(b"long hair", b"short hair")


def _kiln(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _assert_one_disk_message(err: str, disk: Path) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "no space left on " + mount_point(disk) in lines[0], err
    assert "needs " in lines[0] and "Traceback" not in err, err


def _assert_consistent(root: Path, before: dict[str, bytes]) -> str:
    """Every caption is its before or its after; the journal settles; undo restores every byte; the index is
    sound. Returns 'none', 'partial' or 'all' (how much of the edit is on disk)."""
    now = snapshot(root)
    changed = 0
    for rel, old in before.items():
        assert now[rel] in (old, _after(old)), f"{rel}: neither before nor after: {now[rel]!r}"
        changed += now[rel] != old
    assert not [name for name in now if Path(name).name.startswith(TEMP_PREFIX)], "temporary files left"
    with Dataset.open(root, quiet=True) as ds:
        entries = journal.history(ds)
        assert all(e.state not in journal.TRANSITIONAL for e in entries), entries
        if changed:
            assert journal.undo(ds) is not None
        assert snapshot(root) == before
        assert len(ds.images()) == N_IMAGES
        assert ds.index.conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    return "none" if not changed else ("all" if changed == len([r for r in before if r.endswith(".txt")]) else "partial")


# ---- the os-level injector: every write of the operation, any user ------------------------------------------


def test_bulk_edit_enospc_at_every_write(template: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ds"
    shutil.copytree(template, root)
    before = snapshot(root)
    counter = WriteFaults(only=str(root))
    with counter.installed():
        assert _kiln(capsys, "tags", "replace", str(root), "long hair", "short hair")[0] == 0
    writes = len(counter.calls)
    assert writes >= 2 * N_IMAGES  # a temporary file and a rename per caption at least
    outcomes: dict[str, int] = {}
    for n in range(writes):
        shutil.rmtree(root)
        shutil.copytree(template, root)
        faults = WriteFaults(fail_at=n, only=str(root))
        with faults.installed():
            code, _out, err = _kiln(capsys, "tags", "replace", str(root), "long hair", "short hair")
        assert faults.planted
        kind = faults.calls[n][0]
        if code == 0:  # the fault hit something kiln may ignore (a folder's fsync)
            assert kind == "fsync" and not err, (kind, err)
        else:
            assert code == 1, (n, kind, err)
            _assert_one_disk_message(err, root)
        state = _assert_consistent(root, before)
        outcomes[state] = outcomes.get(state, 0) + 1
    assert outcomes.get("none", 0) > 0  # the faults before the renames changed nothing


def test_atomic_write_keeps_the_old_file_on_enospc(tmp_path: Path) -> None:
    from curator.fsutil import atomic_write_bytes

    target = tmp_path / "state.json"
    target.write_bytes(b"old contents\n")
    for n in range(3):  # open, write, fsync of the temporary file
        faults = WriteFaults(fail_at=n)
        with faults.installed(), pytest.raises(DiskFullError) as info:
            atomic_write_bytes(target, b"new contents\n" * 100)
        assert faults.planted and target.read_bytes() == b"old contents\n"
        assert info.value.errno == errno.ENOSPC and info.value.mount == mount_point(tmp_path)
        assert "needs 4.0 KiB" in str(info.value) and "nothing was changed" in str(info.value)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


# ---- a real full disk ------------------------------------------------------------------------------------------


@pytest.fixture()
def disk(tmp_path: Path) -> TinyDisk:
    with tiny_disk(tmp_path / "disk", "2m") as d:
        yield d


def _restore(disk: TinyDisk, template: Path) -> Path:
    disk.unfill()
    root = disk.path / "ds"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(template, root)
    return root


def _sweep(disk: TinyDisk, run, stop_after_ok: int = 3, step: int = 4096, limit: int = 1 << 20):
    """Run ``run(free)`` with the disk filled to leave ``free`` bytes, from 0 up, until it succeeded
    ``stop_after_ok`` times in a row. Yields nothing; returns the trial count."""
    trials = ok_in_row = 0
    free = 0
    while ok_in_row < stop_after_ok and free <= limit:
        ok_in_row = ok_in_row + 1 if run(free) else 0
        trials += 1
        free += step
    assert ok_in_row == stop_after_ok, f"never succeeded with up to {limit} bytes free"
    return trials


@pytest.mark.parametrize("check_first", [True, False], ids=["space-checked", "space-taken-after-check"])
def test_bulk_edit_on_a_full_disk(
    disk: TinyDisk, template: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    check_first: bool,
) -> None:
    if not check_first:  # the space check passes, then another process takes the space
        monkeypatch.setattr("curator.tags.journal.ensure_space", lambda *_a, **_k: None)
    before = snapshot(template)
    seen: set[str] = set()

    def trial(free: int) -> bool:
        root = _restore(disk, template)
        disk.fill(free)
        code, _out, err = _kiln(capsys, "tags", "replace", str(root), "long hair", "short hair")
        disk.unfill()
        if code:
            assert code == 1, err
            _assert_one_disk_message(err, disk.path)
        seen.add(_assert_consistent(root, before))
        return code == 0

    trials = _sweep(disk, trial)
    assert trials >= 5 and "none" in seen


def test_undo_on_a_full_disk(disk: TinyDisk, template: Path, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("curator.tags.journal.ensure_space", lambda *_a, **_k: None)
    before = snapshot(template)

    def trial(free: int) -> bool:
        root = _restore(disk, template)
        assert _kiln(capsys, "tags", "replace", str(root), "long hair", "short hair")[0] == 0
        applied = snapshot(root)
        disk.fill(free)
        code, _out, err = _kiln(capsys, "tags", "undo", str(root))
        disk.unfill()
        if code:
            _assert_one_disk_message(err, disk.path)
            now = snapshot(root)
            for rel in before:
                assert now[rel] in (before[rel], applied[rel])
            with Dataset.open(root, quiet=True) as ds:  # the journal settles; undo (or a re-undo) completes
                entries = journal.history(ds)
                assert all(e.state not in journal.TRANSITIONAL for e in entries)
                if entries[0].state == "applied":
                    assert journal.undo(ds) is not None
        assert snapshot(root) == before
        return code == 0

    assert _sweep(disk, trial) >= 3


def test_scan_on_a_full_disk(disk: TinyDisk, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    images = build(tmp_path / "images", n=40, captions=False)

    def trial(free: int) -> bool:
        disk.unfill()
        root = disk.path / "ds"
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(images, root)
        files = snapshot(root)
        disk.fill(free)
        code, _out, err = _kiln(capsys, "scan", str(root), "--no-progress", "--json", "--workers", "1")
        disk.unfill()
        if code:
            assert code == 1
            _assert_one_disk_message(err, disk.path)
        assert snapshot(root) == files  # a scan never writes outside .kiln/
        db = root / ".kiln" / "index.sqlite"
        if db.exists():
            conn = sqlite3.connect(db)
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            conn.close()
        with Dataset.open(root, quiet=True) as ds:  # with space again, the index opens and completes
            ds.scan(progress=False)
            assert len(ds.images()) == 40
        return code == 0

    assert _sweep(disk, trial, step=8192) >= 3


def test_full_disk_message_names_the_mount_and_the_need(disk: TinyDisk, template: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    root = _restore(disk, template)
    disk.fill(8192)
    code, _out, err = _kiln(capsys, "tags", "replace", str(root), "long hair", "short hair")
    assert code == 1
    _assert_one_disk_message(err, disk.path)
    assert f"no space left on {disk.path} " in err and "free at least" in err and "nothing was changed" in err
    disk.unfill()
    assert snapshot(root) == snapshot(template)


def test_image_unchanged_by_a_failed_open(disk: TinyDisk, tmp_path: Path) -> None:
    """A brand-new dataset on a full disk: opening it says so, and leaves no half index behind."""
    images = build(disk.path / "new", n=3, captions=False)
    disk.fill(0)
    with pytest.raises(DiskFullError) as info:
        Dataset.open(images, quiet=True)
    assert info.value.mount == str(disk.path)
    disk.unfill()
    with Dataset.open(images, quiet=True) as ds:
        assert len(ds.images()) == 3
    Image.open(images / "10_ohwx woman" / "img000.png").verify()
