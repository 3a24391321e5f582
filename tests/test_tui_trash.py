"""curator.trash: restorable removal of images (with their captions) into .kiln/trash/."""

from __future__ import annotations

from pathlib import Path

import pytest

from curator.trash import TrashError, list_batches, move_to_trash, restore, restore_last
from tests.conftest import photo, save_photo


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "ds"
    folder = root / "10_cat"
    for i, name in enumerate(("chelsea.png", "coffee.png", "astronaut.png")):
        save_photo(photo(name, (128, 128)), folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"tag{i}, shared\n")
    (folder / "img0.caption").write_text("other caption\n")
    kiln = root / ".kiln"
    kiln.mkdir()
    return root, kiln


def test_move_then_restore_round_trip_keeps_bytes(dataset) -> None:
    root, kiln = dataset
    originals = {p: p.read_bytes() for p in (root / "10_cat").iterdir()}
    batch = move_to_trash(root, kiln, ["10_cat/img0.png", "10_cat/img1.png"], "duplicates of img2")
    assert batch.images == ["10_cat/img0.png", "10_cat/img1.png"]
    # image and its caption files left the dataset, the third image stayed
    assert not (root / "10_cat/img0.png").exists() and not (root / "10_cat/img0.txt").exists()
    assert not (root / "10_cat/img0.caption").exists()
    assert (root / "10_cat/img2.png").exists()
    stored = kiln / "trash" / batch.batch_id / "files" / "10_cat" / "img0.png"
    assert stored.read_bytes() == originals[root / "10_cat/img0.png"]
    assert list_batches(kiln)[0].batch_id == batch.batch_id

    restored = restore(root, kiln, batch.batch_id)
    assert set(restored) >= {"10_cat/img0.png", "10_cat/img0.txt", "10_cat/img0.caption", "10_cat/img1.png"}
    assert {p: p.read_bytes() for p in (root / "10_cat").iterdir()} == originals
    assert list_batches(kiln)[0].restored
    with pytest.raises(TrashError, match="already restored"):
        restore(root, kiln, batch.batch_id)


def test_restore_refuses_to_overwrite_a_file_that_came_back(dataset) -> None:
    root, kiln = dataset
    batch = move_to_trash(root, kiln, ["10_cat/img1.png"], "test")
    (root / "10_cat/img1.png").write_bytes(b"new file by the user")
    with pytest.raises(TrashError, match="exist again"):
        restore(root, kiln, batch.batch_id)
    assert (root / "10_cat/img1.png").read_bytes() == b"new file by the user"
    assert (kiln / "trash" / batch.batch_id / "files/10_cat/img1.png").exists()


def test_missing_file_moves_nothing(dataset) -> None:
    root, kiln = dataset
    with pytest.raises(TrashError, match="not found"):
        move_to_trash(root, kiln, ["10_cat/img0.png", "10_cat/nope.png"], "test")
    # all or nothing: img0 (moved first) is back where it was
    assert (root / "10_cat/img0.png").exists() and (root / "10_cat/img0.txt").exists()


@pytest.mark.parametrize("bad", ["../outside.png", "/etc/passwd", ""])
def test_paths_outside_the_dataset_are_refused(dataset, bad: str) -> None:
    root, kiln = dataset
    with pytest.raises(TrashError):
        move_to_trash(root, kiln, [bad], "test")


def test_restore_last_picks_the_newest_unrestored_batch(dataset) -> None:
    root, kiln = dataset
    assert restore_last(root, kiln) is None
    move_to_trash(root, kiln, ["10_cat/img0.png"], "first")
    second = move_to_trash(root, kiln, ["10_cat/img1.png"], "second")
    assert restore_last(root, kiln).batch_id == second.batch_id
    assert (root / "10_cat/img1.png").exists() and not (root / "10_cat/img0.png").exists()
    restore_last(root, kiln)
    assert (root / "10_cat/img0.png").exists()
