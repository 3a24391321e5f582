"""The caption journal: apply / undo / redo across restarts, conflicts, creations, permissions, recovery."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from PIL import Image
from skimage import data as skdata

from curator.dataset import Dataset
from curator.fsutil import TEMP_PREFIX, atomic_write_bytes, atomic_write_many
from curator.tags import journal
from curator.tags.items import load_items
from curator.tags.journal import CaptionChange, Journal, JournalError
from curator.tags.ops import add_tags, replace_tag

PHOTOS = (skdata.astronaut, skdata.chelsea, skdata.coffee, skdata.rocket)


def make_dataset(root: Path, captions: dict[str, bytes | None]) -> Path:
    """Kohya folders with real photographs; ``captions`` maps 'folder/stem' -> caption bytes (None: none)."""
    for n, (key, raw) in enumerate(captions.items()):
        folder, stem = key.split("/")
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(PHOTOS[n % len(PHOTOS)]()).resize((96, 64)).save(root / folder / f"{stem}.png")
        if raw is not None:
            (root / folder / f"{stem}.txt").write_bytes(raw)
    return root


CAPTIONS = {
    "10_ohwx woman/a": b"1girl, long_hair, smile\n",
    "10_ohwx woman/b": b"1girl,long_hair,cat_ears\r\nsecond line\r\n",
    "10_ohwx woman/c": b"solo, very long hair, long hair",
    "5_sks dog/d": b"dog, grass\n",
    "5_sks dog/e": None,
}


@pytest.fixture()
def ds_path(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "ds", CAPTIONS)


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*.txt"))
        if ".kiln" not in p.parts
    }


def test_apply_undo_redo_across_restarts(ds_path: Path) -> None:
    original = snapshot(ds_path)
    with Dataset.open(ds_path) as ds:
        changes = replace_tag(load_items(ds), "long hair", "short hair")
        assert len(changes) == 3
        result = journal.apply_changes(ds, changes, "replace", "long hair -> short hair")
        assert result.ok and len(result.applied) == 3 and result.entry_id
    after = snapshot(ds_path)
    assert after["10_ohwx woman/a.txt"] == b"1girl, short_hair, smile\n"
    assert after["10_ohwx woman/b.txt"] == b"1girl,short_hair,cat_ears\r\nsecond line\r\n"
    assert after["10_ohwx woman/c.txt"] == b"solo, very long hair, short hair"

    with Dataset.open(ds_path) as ds:  # a new process would see the same thing: state is in the index
        entries = journal.history(ds)
        assert [e.state for e in entries] == ["applied"] and entries[0].n_changes == 3
        undone = journal.undo(ds)
        assert undone is not None and len(undone.applied) == 3
    assert snapshot(ds_path) == original

    with Dataset.open(ds_path) as ds:
        assert journal.undo(ds) is None
        redone = journal.redo(ds)
        assert redone is not None and len(redone.applied) == 3
        assert journal.redo(ds) is None
    assert snapshot(ds_path) == after


def test_multi_level_undo_and_new_op_discards_redo(ds_path: Path) -> None:
    original = snapshot(ds_path)
    with Dataset.open(ds_path) as ds:
        journal.apply_changes(ds, add_tags(load_items(ds), "one", create=False), "add", "one")
        s1 = snapshot(ds_path)
        journal.apply_changes(ds, add_tags(load_items(ds), "two", create=False), "add", "two")
        journal.apply_changes(ds, add_tags(load_items(ds), "three", create=False), "add", "three")
        assert journal.undo(ds) and journal.undo(ds)
        assert snapshot(ds_path) == s1
        journal.apply_changes(ds, add_tags(load_items(ds), "four", create=False), "add", "four")
        assert journal.redo(ds) is None  # the undone entries were discarded by the new operation
        states = [e.state for e in journal.history(ds)]
        assert states == ["applied", "discarded", "discarded", "applied"]
        assert journal.undo(ds) and journal.undo(ds)
        assert journal.undo(ds) is None
    assert snapshot(ds_path) == original


def test_conflict_on_apply_leaves_the_file_alone(ds_path: Path) -> None:
    with Dataset.open(ds_path) as ds:
        changes = replace_tag(load_items(ds), "1girl", "woman")
        edited = ds_path / "10_ohwx woman/a.txt"
        edited.write_bytes(b"1girl, edited by hand\n")  # someone edits after kiln read it
        result = journal.apply_changes(ds, changes, "replace", "x")
        assert result.conflicts == [edited]
        assert edited.read_bytes() == b"1girl, edited by hand\n"
        assert (ds_path / "10_ohwx woman/b.txt").read_bytes().startswith(b"woman,long_hair")
        assert journal.undo(ds) is not None
        assert edited.read_bytes() == b"1girl, edited by hand\n"
        assert (ds_path / "10_ohwx woman/b.txt").read_bytes() == CAPTIONS["10_ohwx woman/b"]


def test_conflict_on_undo_keeps_user_edit(ds_path: Path) -> None:
    with Dataset.open(ds_path) as ds:
        journal.apply_changes(ds, replace_tag(load_items(ds), "dog", "puppy"), "replace", "x")
        target = ds_path / "5_sks dog/d.txt"
        assert target.read_bytes() == b"puppy, grass\n"
        target.write_bytes(b"puppy, grass, edited\n")
        result = journal.undo(ds)
        assert result is not None and result.conflicts == [target]
        assert target.read_bytes() == b"puppy, grass, edited\n"


def test_creation_is_undone_into_trash(ds_path: Path) -> None:
    new_file = ds_path / "5_sks dog/e.txt"
    with Dataset.open(ds_path) as ds:
        changes = add_tags(load_items(ds, where="folder:5_*"), "sks dog", position="front")
        assert any(c.before is None and c.caption_path == new_file for c in changes)
        journal.apply_changes(ds, changes, "add", "trigger")
        assert new_file.read_bytes() == b"sks dog\n"
        journal.undo(ds)
        assert not new_file.exists()
        trashed = list((ds.index.kiln_dir / "trash").rglob("e.txt"))
        assert trashed and trashed[0].read_bytes() == b"sks dog\n"
        journal.redo(ds)
        assert new_file.read_bytes() == b"sks dog\n"


def test_permissions_kept(ds_path: Path) -> None:
    target = ds_path / "10_ohwx woman/a.txt"
    os.chmod(target, 0o640)
    with Dataset.open(ds_path) as ds:
        journal.apply_changes(ds, replace_tag(load_items(ds), "smile", "grin"), "replace", "x")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert not [p for p in target.parent.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_duplicate_paths_rejected(ds_path: Path) -> None:
    p = ds_path / "5_sks dog/d.txt"
    with Dataset.open(ds_path) as ds, pytest.raises(JournalError):
        journal.apply_changes(
            ds, [CaptionChange(p, p.read_bytes(), b"a"), CaptionChange(p, p.read_bytes(), b"b")], "x", "x"
        )
    assert p.read_bytes() == b"dog, grass\n"


def test_pending_entry_is_recovered(ds_path: Path) -> None:
    """Simulate a kill after the entry was committed and half the files were written."""
    original = snapshot(ds_path)
    with Dataset.open(ds_path) as ds:
        changes = replace_tag(load_items(ds), "1girl", "woman")
        j = Journal(ds.index, ds.root)
        with j._durable_tx() as conn:
            cur = conn.execute(
                "INSERT INTO tag_journal (created, op, description, state, n_changes) "
                "VALUES (0, 'replace', 'killed', 'pending', ?)",
                (len(changes),),
            )
            conn.executemany(
                "INSERT INTO tag_journal_changes (entry_id, seq, path, before, after, status) "
                "VALUES (?, ?, ?, ?, ?, 'pending')",
                [
                    (cur.lastrowid, i, j._key(c.caption_path), c.before, c.after)
                    for i, c in enumerate(changes)
                ],
            )
        atomic_write_bytes(changes[0].caption_path, changes[0].after)  # the first file made it
        (changes[1].caption_path.parent / (TEMP_PREFIX + "b.txt.xyz")).write_bytes(b"half")  # a leftover temp
    with Dataset.open(ds_path) as ds:
        entries = journal.history(ds)
        assert entries[0].state == "applied" and "recovered" in entries[0].note
        statuses = [s for _p, _b, _a, s in journal.journal_for(ds).changes(entries[0].id)]
        assert statuses == ["applied", "skipped"]
        assert not list(ds_path.rglob(TEMP_PREFIX + "*"))
        journal.undo(ds)
    assert snapshot(ds_path) == original


def test_atomic_write_many_and_single(tmp_path: Path) -> None:
    files = [(tmp_path / f"f{i}.txt", f"data {i}".encode()) for i in range(50)]
    (tmp_path / "f0.txt").write_bytes(b"old")
    os.chmod(tmp_path / "f0.txt", 0o600)
    atomic_write_many(files)
    assert all(p.read_bytes() == d for p, d in files)
    assert stat.S_IMODE((tmp_path / "f0.txt").stat().st_mode) == 0o600
    atomic_write_bytes(tmp_path / "f1.txt", b"x")
    assert (tmp_path / "f1.txt").read_bytes() == b"x"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p, _ in files)
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "missing-dir" / "x.txt", b"x")


def test_symlinked_caption_inside_the_dataset_is_written_through(ds_path: Path) -> None:
    real = ds_path / "shared.txt"  # a caption shared through a link, inside the dataset
    real.write_bytes(b"dog, grass\n")
    link = ds_path / "5_sks dog/d.txt"
    link.unlink()
    link.symlink_to(real)
    with Dataset.open(ds_path) as ds:
        result = journal.apply_changes(ds, replace_tag(load_items(ds), "grass", "sand"), "replace", "x")
        assert result.applied == [link]
        assert link.is_symlink() and real.read_bytes() == b"dog, sand\n"
        journal.undo(ds)
    assert link.is_symlink() and real.read_bytes() == b"dog, grass\n"


def test_symlinked_caption_outside_the_dataset_is_not_written_through(ds_path: Path, tmp_path: Path) -> None:
    real = tmp_path / "elsewhere.txt"
    real.write_bytes(b"dog, grass\n")
    link = ds_path / "5_sks dog/d.txt"
    link.unlink()
    link.symlink_to(real)
    with Dataset.open(ds_path) as ds:
        result = journal.apply_changes(ds, replace_tag(load_items(ds), "grass", "sand"), "replace", "x")
    assert result.applied == [] and [p for p, _r in result.errors] == [link]
    assert "outside the dataset" in result.errors[0][1] and str(real) in result.errors[0][1]
    assert link.is_symlink() and real.read_bytes() == b"dog, grass\n"


def test_read_only_caption_is_not_touched(ds_path: Path) -> None:
    target = ds_path / "5_sks dog/d.txt"
    os.chmod(target, 0o444)
    with Dataset.open(ds_path) as ds:
        result = journal.apply_changes(ds, add_tags(load_items(ds), "solo", create=False), "add", "x")
    assert [p for p, _r in result.errors] == [target] and "read-only" in result.errors[0][1]
    assert target.read_bytes() == b"dog, grass\n"
    assert len(result.applied) == 2  # a and b (c already has solo)


def test_prune_keeps_newest(ds_path: Path) -> None:
    with Dataset.open(ds_path) as ds:
        for tag in ("one", "two", "three"):
            journal.apply_changes(ds, add_tags(load_items(ds), tag, create=False), "add", tag)
        j = journal.journal_for(ds)
        assert j.prune(1) == 2
        assert [e.description for e in journal.history(ds)] == ["three"]
        assert journal.undo(ds) is not None and journal.undo(ds) is None


def test_bulk_writes_stage_outside_the_caption_folder_and_swap_in(tmp_path: Path, monkeypatch) -> None:
    """A big batch makes its temporary files in the staging folder, swaps them in atomically (the old contents
    land in the batch, which is then freed) and leaves nothing behind; where the filesystem cannot swap, it
    renames as before."""
    import curator.fsutil as fsutil
    from curator.fsutil import clean_stage, write_files_atomically

    folder, stage = tmp_path / "captions", tmp_path / ".kiln" / "staging"
    folder.mkdir()
    stage.mkdir(parents=True)
    files = [folder / f"c{i:03d}.txt" for i in range(300)]
    for i, path in enumerate(files):
        path.write_bytes(b"old %d\n" % i)
    monkeypatch.setenv("KILN_IO_BACKGROUND_FREE", "0")  # freed in this process: the test sees the end state
    created: list[str] = []
    real_create = fsutil._create_temp

    def spy(target, data, mode, sync, umask, owner=None, in_folder=None):
        tmp = real_create(target, data, mode, sync, umask, owner, in_folder)
        created.append(tmp)
        return tmp

    monkeypatch.setattr(fsutil, "_create_temp", spy)
    outcomes = write_files_atomically([(p, b"new %d\n" % i) for i, p in enumerate(files)], stage=stage)
    assert outcomes == [None] * 300
    assert all(p.read_bytes() == b"new %d\n" % i for i, p in enumerate(files))
    assert all(t.startswith(str(stage)) for t in created)  # nothing was created among the captions
    assert sorted(os.listdir(folder)) == sorted(p.name for p in files)
    (pool,) = os.listdir(stage)  # the old contents, kept as spares for the next batch (test_staging.py)
    assert pool.startswith("spare-") and len(os.listdir(stage / pool)) == 300
    monkeypatch.setattr(fsutil, "_exchange", lambda a, b: False)  # a filesystem without RENAME_EXCHANGE
    outcomes = write_files_atomically([(p, b"third %d\n" % i) for i, p in enumerate(files)], stage=stage)
    assert outcomes == [None] * 300 and files[7].read_bytes() == b"third 7\n"
    assert len(created) == 300 and os.listdir(stage) == []  # the spares were renamed into place: none left
    (stage / "batch-999999999-1").mkdir()  # left by a killed writer (no such process)
    (stage / "batch-999999999-1" / ".kiln-tmp-x").write_bytes(b"old")
    (stage / f"batch-{os.getpid()}-99").mkdir()  # a live writer's batch: kept
    assert clean_stage(stage) == 1 and os.listdir(stage) == [f"batch-{os.getpid()}-99"]
