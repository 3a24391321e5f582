"""Filesystem oddities: symlink loops, symlinks out of the dataset, names that are not UTF-8, very long names,
names that differ only in case (and two names of one file), files that vanish or change between scan and edit.

Each is planted on the real filesystem and driven through the real commands (scan, check, dupes, tags, undo,
the trash); nothing hangs, nothing crashes, nothing outside the dataset is written, nothing is lost.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from curator.dataset import Dataset
from curator.tags import journal
from curator.tags.items import load_items
from curator.tags.ops import add_tags, replace_tag
from curator.trash import TrashError, move_to_trash
from tests.faults import snapshot
from tests.test_faults_disk_full import BEFORE, build
from tui.cli import main

SUB = "10_ohwx woman"


def _kiln(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _every_command(capsys: pytest.CaptureFixture[str], root: Path) -> dict[str, object]:
    """scan, check, dupes and tags stats (JSON); each must succeed without a traceback."""
    out: dict[str, object] = {}
    for argv in (["scan", str(root), "--no-progress", "--json"], ["check", str(root), "--json"],
                 ["dupes", str(root), "--json"], ["tags", "stats", str(root), "--json"]):
        code, text, err = _kiln(capsys, *argv)
        assert code == 0 and "Traceback" not in err, (argv, err)
        out[argv[0] if argv[0] != "tags" else "stats"] = json.loads(text)
    return out


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return build(tmp_path / "ds", n=4)


def test_symlink_loops_do_not_hang_or_crash(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = root / SUB
    os.symlink("self.png", folder / "self.png")  # a link to itself
    os.symlink("b.png", folder / "a.png")  # a two-link loop
    os.symlink("a.png", folder / "b.png")
    os.symlink("loop.txt", folder / "loop.txt")  # a caption name that loops
    os.symlink("..", folder / "up")  # a folder loop
    os.symlink(".", root / "3_again")  # a subset folder that is the dataset itself
    os.symlink("5_loop", root / "5_loop")  # a subset folder that loops
    out = _every_command(capsys, root)
    assert out["scan"]["images"] == 4  # type: ignore[index]
    code, text, err = _kiln(capsys, "tags", "add", str(root), "solo", "--json")
    assert code == 0 and "Traceback" not in err, err
    assert len(json.loads(text)["applied"]) == 4
    assert os.readlink(folder / "loop.txt") == "loop.txt"


def test_symlinks_out_of_the_dataset_are_shown_not_written_through(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copyfile(root / SUB / "img000.png", outside / "photo.png")
    (outside / "photo.txt").write_bytes(BEFORE)
    (outside / "shared.txt").write_bytes(BEFORE)
    folder = root / SUB
    os.symlink(outside / "photo.png", folder / "linked.png")  # an image linked in: shown
    (folder / "img001.txt").unlink()
    os.symlink(outside / "shared.txt", folder / "img001.txt")  # a caption linked out: read, not written
    outside_before = snapshot(outside)
    out = _every_command(capsys, root)
    assert out["scan"]["images"] == 5  # type: ignore[index]
    stats = out["stats"]["frequencies"]["*"]  # type: ignore[index]
    assert stats["images"] == 5
    code, text, err = _kiln(capsys, "tags", "replace", str(root), "long hair", "short hair", "--json")
    data = json.loads(text)
    assert code == 2 and "Traceback" not in err
    assert [e["path"] for e in data["errors"]] == [str(folder / "img001.txt")]
    assert "outside the dataset" in data["errors"][0]["reason"]
    assert snapshot(outside) == outside_before  # nothing outside the dataset was written
    assert (folder / "linked.txt").exists() is False  # no caption created for the linked image (it has none)
    with Dataset.open(root, quiet=True) as ds:  # the trash moves the link, never the file it points to
        batch = move_to_trash(root, ds.index.kiln_dir, [f"{SUB}/linked.png"], "test")
        assert [f.original for f in batch.files] == [f"{SUB}/linked.png"]
    assert snapshot(outside) == outside_before and not (folder / "linked.png").exists()


def test_names_that_are_not_utf8(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = root / SUB
    raw_file = os.fsdecode(bytes(folder) + b"/caf\xe9.png")
    shutil.copyfile(folder / "img000.png", raw_file)
    with open(os.fsdecode(bytes(folder) + b"/caf\xe9.txt"), "wb") as fh:
        fh.write(BEFORE)
    bad_dir = os.fsdecode(bytes(root) + b"/5_\xff\xfe")
    os.mkdir(bad_dir)
    shutil.copyfile(folder / "img001.png", os.path.join(bad_dir, "x.png"))
    before = snapshot(root)
    out = _every_command(capsys, root)
    scan = out["scan"]
    assert scan["images"] == 4  # type: ignore[index]
    assert f"{SUB}/caf\ufffd.png" in scan["skipped_names"]  # type: ignore[index]
    code, text, err = _kiln(capsys, "scan", str(root), "--no-progress")
    assert code == 0 and "not valid UTF-8" in text + err and "\udce9" not in text + err
    code, text, err = _kiln(capsys, "tags", "add", str(root), "solo", "--json")
    assert code == 0 and len(json.loads(text)["applied"]) == 4
    now = snapshot(root)
    assert all(now[k] == v for k, v in before.items() if "caf" in k or "\udcff" in k)  # skipped files untouched


def test_very_long_names(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = root / SUB
    stem = "a-very-long-name-" + "x" * (250 - len("a-very-long-name-") - 4)  # 250 bytes with ".png"
    shutil.copyfile(folder / "img000.png", folder / f"{stem}.png")
    (folder / f"{stem}.txt").write_bytes(BEFORE)
    _every_command(capsys, root)
    code, text, _err = _kiln(capsys, "tags", "replace", str(root), "long hair", "short hair", "--json")
    assert code == 0 and str(folder / f"{stem}.txt") in json.loads(text)["applied"]
    assert (folder / f"{stem}.txt").read_bytes() == BEFORE.replace(b"long hair", b"short hair")
    assert _kiln(capsys, "tags", "undo", str(root))[0] == 0
    assert (folder / f"{stem}.txt").read_bytes() == BEFORE
    assert not [n for n in os.listdir(folder) if n.startswith(".kiln-tmp-")]


def test_names_that_differ_only_in_case(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """On a case-sensitive disk ``A.png``/``A.txt`` and ``a.png``/``a.txt`` are four files: each edit lands in
    its own caption."""
    folder = root / SUB
    shutil.copyfile(folder / "img000.png", folder / "A.png")
    shutil.copyfile(folder / "img001.png", folder / "a.png")
    (folder / "A.txt").write_bytes(b"upper, long hair\n")
    (folder / "a.txt").write_bytes(b"lower, long hair\n")
    _every_command(capsys, root)
    code, _text, _err = _kiln(capsys, "tags", "add", str(root), "solo", "--files", str(folder / "a.png"))
    assert code == 0
    assert (folder / "A.txt").read_bytes() == b"upper, long hair\n"
    assert (folder / "a.txt").read_bytes() == b"lower, long hair, solo\n"


def test_two_names_of_one_file_are_written_once(root: Path) -> None:
    """What a case-insensitive disk does with ``A.txt`` and ``a.txt`` (one file, two spellings), planted with
    two symlinks to one caption: the journal notices the two paths are one file and writes it once."""
    folder = root / SUB
    shutil.copyfile(folder / "img000.png", folder / "A.png")
    shutil.copyfile(folder / "img001.png", folder / "a.png")
    (root / "shared.txt").write_bytes(b"1girl, long hair\n")
    os.symlink("../shared.txt", folder / "A.txt")
    os.symlink("../shared.txt", folder / "a.txt")
    with Dataset.open(root, quiet=True) as ds:
        result = journal.apply_changes(ds, add_tags(load_items(ds), "solo"), "add", "x")
        errors = dict(result.errors)
        assert folder / "A.txt" in result.applied and folder / "a.txt" in errors
        assert "same file as" in errors[folder / "a.txt"] and "case" in errors[folder / "a.txt"]
        assert (root / "shared.txt").read_bytes() == b"1girl, long hair, solo\n"  # once, not "solo, solo"
        assert journal.undo(ds) is not None
    assert (root / "shared.txt").read_bytes() == b"1girl, long hair\n"


def test_hard_linked_captions_each_get_the_edit(root: Path, tmp_path: Path) -> None:
    """Hard links are separate names: each is replaced by its own atomic write, so every name in the dataset
    gets the edit, and a link to it from outside the dataset is never written through."""
    folder = root / SUB
    shutil.copyfile(folder / "img000.png", folder / "A.png")
    shutil.copyfile(folder / "img001.png", folder / "a.png")
    (folder / "A.txt").write_bytes(b"1girl, long hair\n")
    os.link(folder / "A.txt", folder / "a.txt")
    os.link(folder / "A.txt", tmp_path / "outside.txt")
    with Dataset.open(root, quiet=True) as ds:
        result = journal.apply_changes(ds, add_tags(load_items(ds), "solo"), "add", "x")
        assert {folder / "A.txt", folder / "a.txt"} <= set(result.applied) and not result.errors
        for name in ("A.txt", "a.txt"):
            assert (folder / name).read_bytes() == b"1girl, long hair, solo\n"
        assert (tmp_path / "outside.txt").read_bytes() == b"1girl, long hair\n"
        assert journal.undo(ds) is not None
    for name in ("A.txt", "a.txt"):
        assert (folder / name).read_bytes() == b"1girl, long hair\n"


def test_case_insensitive_filesystem(tmp_path: Path) -> None:
    """The same on a real case-insensitive filesystem (ext4 with casefold), where one can be made."""
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        pytest.skip("making a case-insensitive filesystem needs root and mkfs.ext4")
    image, mnt = tmp_path / "ci.img", tmp_path / "ci"
    mnt.mkdir()
    with open(image, "wb") as fh:
        fh.truncate(16 << 20)
    made = subprocess.run(["mkfs.ext4", "-q", "-O", "casefold", str(image)], capture_output=True, text=True)
    mounted = made.returncode == 0 and subprocess.run(["mount", "-o", "loop", str(image), str(mnt)],
                                                      capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("this kernel cannot mount an ext4 filesystem with casefold (no unicode support)")
    try:
        root = mnt / "ds"
        (root / SUB).mkdir(parents=True)
        subprocess.run(["chattr", "+F", str(root / SUB)], check=True)
        build(tmp_path / "src", n=1)
        shutil.copyfile(tmp_path / "src" / SUB / "img000.png", root / SUB / "Photo.png")
        (root / SUB / "photo.TXT").write_bytes(b"1girl, long hair\n")  # kohya's Photo.txt, spelled otherwise
        with Dataset.open(root, quiet=True) as ds:
            result = journal.apply_changes(ds, add_tags(load_items(ds), "solo"), "add", "x")
            assert len(result.applied) == 1 and not result.errors
        assert (root / SUB / "PHOTO.txt").read_bytes() == b"1girl, long hair, solo\n"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_caption_changed_or_vanished_between_read_and_edit(root: Path) -> None:
    folder = root / SUB
    with Dataset.open(root, quiet=True) as ds:
        items = load_items(ds)
        changes = replace_tag(items, "long hair", "short hair")
        (folder / "img000.txt").write_bytes(b"someone else's edit\n")  # changed after kiln read it
        (folder / "img001.txt").unlink()  # vanished after kiln read it
        result = journal.apply_changes(ds, changes, "replace", "x")
    assert sorted(result.conflicts) == sorted([folder / "img000.txt", folder / "img001.txt"])
    assert (folder / "img000.txt").read_bytes() == b"someone else's edit\n"
    assert not (folder / "img001.txt").exists()
    assert (folder / "img002.txt").read_bytes() == BEFORE.replace(b"long hair", b"short hair")


def test_vanished_caption_is_not_brought_back_by_a_merge(root: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import curator.tags.journal as journal_mod

    target = root / SUB / "img002.txt"
    original = journal_mod.Journal.apply

    def delete_then_apply(self, changes, op, description, rebase=None):
        target.unlink()
        return original(self, changes, op, description, rebase)

    monkeypatch.setattr(journal_mod.Journal, "apply", delete_then_apply)
    code, out, _err = _kiln(capsys, "tags", "add", str(root), "solo")
    assert code == 2 and "conflict" in out and "img002.txt" in out
    assert not target.exists()


def test_image_changed_between_scan_and_trash_is_refused(root: Path) -> None:
    folder = root / SUB
    with Dataset.open(root, quiet=True) as ds:
        records = {r.path: r for r in ds.images()}
        kiln_dir = ds.index.kiln_dir
    victim = f"{SUB}/img001.png"
    stat = (folder / "img001.png").stat()
    data = bytearray((folder / "img001.png").read_bytes())
    data[-20] ^= 0xFF  # same size, new content, same mtime: only the hash tells
    (folder / "img001.png").write_bytes(bytes(data))
    os.utime(folder / "img001.png", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    before = snapshot(root)
    with pytest.raises(TrashError, match="changed on disk since kiln scanned it"):
        move_to_trash(root, kiln_dir, [f"{SUB}/img000.png", victim], "dupes", expected=records.values())
    assert snapshot(root) == before  # nothing moved, not even the unchanged image
    (folder / "img002.png").unlink()  # vanished since the scan
    with pytest.raises(TrashError, match="not found"):
        move_to_trash(root, kiln_dir, [f"{SUB}/img002.png"], "dupes", expected=records.values())
    batch = move_to_trash(root, kiln_dir, [f"{SUB}/img000.png"], "dupes", expected=records.values())
    assert batch.images == [f"{SUB}/img000.png"]
