"""The duplicate clusters kept in the index between processes (``curator.dupes.cache``): used only while nothing
they depend on changed, recomputed otherwise, and never a reason for a command to fail."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

import curator.dupes
from curator.dataset import Dataset
from curator.dupes import Cluster, find_clusters
from curator.dupes.cache import input_digest
from curator.scan.config import ScanConfig
from tests.conftest import photo, save_photo
from tests.faults import deny_writes
from tui.cli import main

SUB = "1_set/"


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Real photos: an exact pair, near copies (resized, re-encoded, mirrored), two unrelated photos."""
    folder = tmp_path / "ds" / "1_set"
    astro = photo("astronaut.png", (640, 640))
    save_photo(astro, folder / "astro.png")
    shutil.copyfile(folder / "astro.png", folder / "astro_bytes.png")
    save_photo(astro.resize((400, 400), Image.Resampling.LANCZOS), folder / "astro_small.jpg", quality=80)
    save_photo(astro.transpose(Image.Transpose.FLIP_LEFT_RIGHT), folder / "astro_flip.webp", quality=85)
    cat = photo("chelsea.png")
    save_photo(cat, folder / "cat.png")
    save_photo(cat.resize((300, 240)), folder / "cat_small.jpg", quality=85)
    save_photo(photo("coffee.png", (600, 400)), folder / "coffee.jpg", quality=90)
    save_photo(photo("rocket.jpg", (400, 600)), folder / "rocket.jpg", quality=90)
    return tmp_path / "ds"


class Calls:
    """``curator.dupes.find_clusters`` counted (what ``Dataset.duplicates`` calls when it computes)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0

        def counted(*args: object, **kwargs: object) -> list[Cluster]:
            self.count += 1
            return find_clusters(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(curator.dupes, "find_clusters", counted)


def _forbid_search(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_args: object, **_kwargs: object) -> list[Cluster]:
        raise AssertionError("the clusters were computed again")

    monkeypatch.setattr(curator.dupes, "find_clusters", fail)


def _clusters(root: Path, config: ScanConfig | None = None, threshold: int | None = None) -> list[Cluster]:
    with Dataset.open(root, config=config) as ds:
        return ds.duplicates(threshold)


def _fresh(root: Path, config: ScanConfig | None = None, threshold: int | None = None) -> list[Cluster]:
    """The clusters computed from scratch, the cache out of the way."""
    from curator.dupes.cache import forget

    with Dataset.open(root, config=config) as ds:
        assert forget(ds.index)
        return ds.duplicates(threshold)


def _rows(root: Path) -> int:
    with sqlite3.connect(root / ".kiln" / "index.sqlite") as conn:
        return int(conn.execute("SELECT COUNT(*) FROM dupe_clusters").fetchone()[0])


def _members(clusters: list[Cluster]) -> list[tuple[str, set[str]]]:
    return sorted((c.kind, set(c.members)) for c in clusters)  # type: ignore[type-var]


def test_a_fresh_dataset_returns_the_kept_clusters_without_searching(dataset: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    computed = _clusters(dataset)
    assert {c.kind for c in computed} == {"exact", "near"}  # the set has both, with reasons to round-trip
    assert all(c.why for c in computed)
    assert _rows(dataset) == 1
    _forbid_search(monkeypatch)
    cached = _clusters(dataset)
    assert cached == computed  # dataclass equality: ids, keep, members, distances, why, keep_reason
    assert [c.to_dict() for c in cached] == [c.to_dict() for c in computed]


def test_forgotten_clusters_are_computed_again(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``cache.forget`` (what the scale bench runs before the TUI's first open): the next search computes them."""
    computed = _clusters(dataset)
    calls = Calls(monkeypatch)
    assert _clusters(dataset) == computed and calls.count == 0
    assert _fresh(dataset) == computed and calls.count == 1 and _rows(dataset) == 1
    assert _clusters(dataset) == computed and calls.count == 1


@pytest.mark.parametrize("change", ["replace", "remove", "add"])
def test_a_change_the_scan_records_recomputes(dataset: Path, monkeypatch: pytest.MonkeyPatch, change: str) -> None:
    before = _clusters(dataset)
    folder = dataset / "1_set"
    if change == "replace":  # cat_small becomes another photo: the cat cluster is gone
        (folder / "cat_small.jpg").unlink()
        save_photo(photo("motorcycle_left.png", (300, 240)), folder / "cat_small.jpg", quality=85)
    elif change == "remove":
        (folder / "astro_small.jpg").unlink()
    else:  # a copy of the coffee photo: a new cluster
        save_photo(photo("coffee.png", (450, 300)), folder / "coffee_small.webp", quality=80)
    calls = Calls(monkeypatch)
    after = _clusters(dataset)
    assert calls.count == 1
    assert after != before
    assert after == _fresh(dataset)
    members = _members(after)
    if change == "replace":
        assert all(SUB + "cat_small.jpg" not in m for _kind, m in members)
    elif change == "remove":
        assert all(SUB + "astro_small.jpg" not in m for _kind, m in members)
    else:
        assert ("near", {SUB + "coffee.jpg", SUB + "coffee_small.webp"}) in members
    assert _rows(dataset) == 1  # the stale row was replaced
    _forbid_search(monkeypatch)
    assert _clusters(dataset) == after


def test_a_settings_change_recomputes_and_each_setting_keeps_its_row(dataset: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    default = _clusters(dataset)
    calls = Calls(monkeypatch)
    strict = _clusters(dataset, threshold=0)
    assert calls.count == 1
    plain_config = ScanConfig(geometric=False)
    plain = _clusters(dataset, config=plain_config)
    assert calls.count == 2
    limited = _clusters(dataset, config=ScanConfig(pixel_limit=2_000_000))
    assert calls.count == 3
    assert strict != default  # the resized and mirrored copies are beyond 0 bits
    assert _rows(dataset) == 4
    _forbid_search(monkeypatch)
    assert _clusters(dataset) == default
    assert _clusters(dataset, threshold=0) == strict
    assert _clusters(dataset, config=plain_config) == plain
    assert _clusters(dataset, config=ScanConfig(pixel_limit=2_000_000)) == limited
    monkeypatch.undo()
    assert strict == _fresh(dataset, threshold=0) and plain == _fresh(dataset, config=plain_config)


@pytest.mark.parametrize("stored", ["{not json", '{"a": 1}', '[{"id": 1}]', "[1, 2]"])
def test_an_unreadable_row_is_recomputed(dataset: Path, monkeypatch: pytest.MonkeyPatch, stored: str) -> None:
    computed = _clusters(dataset)
    with sqlite3.connect(dataset / ".kiln" / "index.sqlite") as conn:
        conn.execute("UPDATE dupe_clusters SET clusters = ?", (stored,))
    calls = Calls(monkeypatch)
    assert _clusters(dataset) == computed
    assert calls.count == 1
    _forbid_search(monkeypatch)
    assert _clusters(dataset) == computed  # and it was written back


def test_an_index_that_refuses_writes_still_gives_the_clusters(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Dataset.open(dataset) as ds:
        ds.images()
        ds.index.conn.execute("PRAGMA query_only = ON")  # every write fails as on a read-only database
        refused = ds.duplicates()
    with Dataset.open(dataset) as ds:
        assert ds.index.conn.execute("SELECT name FROM sqlite_master WHERE name = 'dupe_clusters'").fetchone() is None
    monkeypatch.setenv("KILN_DB_TIMEOUT", "0")
    locker = sqlite3.connect(dataset / ".kiln" / "index.sqlite", isolation_level=None)
    try:
        with Dataset.open(dataset) as ds:
            ds.images()
            locker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            locked = ds.duplicates()
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert refused == locked == _fresh(dataset)


def test_a_read_only_dataset_keeps_its_clusters_in_the_user_cache(dataset: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    computed = _clusters(dataset)
    kiln = dataset / ".kiln"
    with deny_writes(dataset, dataset / "1_set", kiln, *kiln.iterdir()):
        calls = Calls(monkeypatch)
        first = _clusters(dataset)  # its index now lives in the user cache: computed once there
        second = _clusters(dataset)
        assert calls.count == 1
    assert first == second == computed
    assert list((tmp_path / "cache").rglob("index.sqlite"))


def test_kiln_dupes_json_is_byte_identical_cold_and_warm(dataset: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["dupes", str(dataset), "--json", "--no-progress"]) == 0
    cold = capsys.readouterr().out
    assert json.loads(cold)["clusters"]
    _forbid_search(monkeypatch)
    assert main(["dupes", str(dataset), "--json", "--no-progress"]) == 0
    warm = capsys.readouterr().out
    assert warm.encode() == cold.encode()


@pytest.mark.parametrize(
    "field, value",
    [("path", "1_set/other.png"), ("sha256", "0" * 64), ("size", 1), ("mtime_ns", 1), ("width", 1), ("height", 1),
     ("format", "GIF"), ("mode", "L"), ("frames", 2), ("exif_rotated", True), ("phash", 12345)],
)  # fmt: skip
def test_every_field_the_search_reads_is_in_the_digest(dataset: Path, field: str, value: object) -> None:
    with Dataset.open(dataset) as ds:
        records = ds.images()
        before = input_digest(records, ds.index)
        changed = [dataclasses.replace(records[0], **{field: value}), *records[1:]]
        assert input_digest(changed, ds.index) != before
        assert input_digest(list(records), ds.index) == before


def test_the_features_rows_are_in_the_digest(dataset: Path) -> None:
    with Dataset.open(dataset) as ds:
        records = ds.images()
        before = input_digest(records, ds.index)
        ds.index.conn.execute("UPDATE features SET thumb = NULL WHERE path = ?", (records[0].path,))
        without_thumb = input_digest(records, ds.index)
        ds.index.conn.execute("UPDATE features SET phash_mirror = 7 WHERE path = ?", (records[1].path,))
        other_mirror = input_digest(records, ds.index)
    assert len({before, without_thumb, other_mirror}) == 3


def test_the_kept_rows_do_not_grow(dataset: Path) -> None:
    for n in range(3):
        save_photo(photo("rocket.jpg", (200 + n, 300)), dataset / "1_set" / f"new{n}.jpg", quality=90)
        _clusters(dataset)
        _clusters(dataset, threshold=4)
        assert _rows(dataset) == 2
    assert os.path.exists(dataset / ".kiln" / "index.sqlite")
