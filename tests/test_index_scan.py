"""The persistent index: incremental re-scan, parallel scan, read-only datasets, records."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import curator.index as index_module
from curator.dataset import Dataset
from curator.scan.config import ScanConfig
from tests.conftest import PHOTOS, photo, save_photo, write_caption


def _paths(ds: Dataset) -> set[str]:
    return {r.path for r in ds.images()}


def test_first_scan_indexes_every_image_with_its_facts(kohya_dataset: Path) -> None:
    with Dataset.open(kohya_dataset) as ds:
        summary = ds.scan(progress=False)
        records = {r.path: r for r in ds.images()}
        assert ds.index.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert (summary.images, summary.new, summary.changed, summary.removed) == (8, 8, 0, 0)
    assert (kohya_dataset / ".kiln" / "index.sqlite").is_file()
    chelsea = records["10_sks dog/chelsea.png"]
    assert (chelsea.width, chelsea.height, chelsea.format, chelsea.mode, chelsea.frames) == (640, 512, "PNG", "RGB", 1)
    assert chelsea.size == (kohya_dataset / "10_sks dog" / "chelsea.png").stat().st_size
    assert len(chelsea.sha256) == 64 and chelsea.phash is not None and chelsea.flags == []
    assert chelsea.subset.repeats == 10 and records["reg/1_dog/moon.png"].subset.is_reg
    # distinct photographs have distant perceptual hashes
    hashes = [r.phash for r in records.values()]
    assert min((a ^ b).bit_count() for n, a in enumerate(hashes) for b in hashes[n + 1 :]) > 12


def test_rescan_reads_only_what_changed(kohya_dataset: Path) -> None:
    sub = kohya_dataset / "10_sks dog"
    with Dataset.open(kohya_dataset) as ds:
        ds.scan(progress=False)
    # a fresh open with nothing changed re-reads nothing
    with Dataset.open(kohya_dataset) as ds:
        assert len(ds.images()) == 8 and ds.last_summary.probed == 0
    old = {r.path: r for r in Dataset.open(kohya_dataset).images()}
    # edit one image (new content), touch another (same bytes, new mtime), add one, delete one
    save_photo(photo("coins.png", (640, 512)), sub / "chelsea.png")
    stat = (sub / "coffee.webp").stat()
    os.utime(sub / "coffee.webp", ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    save_photo(photo("camera.png", (600, 600)), sub / "new.jpg", quality=90)
    (sub / "rocket.jpg").unlink()
    with Dataset.open(kohya_dataset) as ds:
        summary = ds.scan(progress=False)
        records = {r.path: r for r in ds.images()}
        rows = ds.index.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    assert (summary.new, summary.changed, summary.removed, summary.unchanged) == (1, 2, 1, 5)
    assert rows == 8 and "10_sks dog/rocket.jpg" not in records and "10_sks dog/new.jpg" in records
    assert records["10_sks dog/chelsea.png"].sha256 != old["10_sks dog/chelsea.png"].sha256
    assert (records["10_sks dog/chelsea.png"].phash ^ old["10_sks dog/chelsea.png"].phash).bit_count() > 12
    assert records["10_sks dog/coffee.webp"].sha256 == old["10_sks dog/coffee.webp"].sha256


def test_parallel_scan_matches_in_process_scan(tmp_path: Path) -> None:
    root = tmp_path / "many" / "2_mix"
    for n in range(30):
        name = PHOTOS[n % len(PHOTOS)]
        image = photo(name, (160 + 8 * n, 128 + 4 * n))
        save_photo(image, root / f"p{n:02d}.{('jpg', 'png', 'webp')[n % 3]}")
    with Dataset.open(root.parent, config=ScanConfig(workers=2)) as ds:
        parallel = {r.path: (r.sha256, r.phash, r.width, r.height) for r in ds.images()}
    shutil.rmtree(root.parent / ".kiln")
    with Dataset.open(root.parent, config=ScanConfig(workers=1)) as ds:
        serial = {r.path: (r.sha256, r.phash, r.width, r.height) for r in ds.images()}
    assert len(parallel) == 30 and parallel == serial


def test_scan_writes_nothing_but_kiln(kohya_dataset: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in kohya_dataset.rglob("*")}
    with Dataset.open(kohya_dataset) as ds:
        ds.flags()
    after = {p: p.stat().st_mtime_ns for p in kohya_dataset.rglob("*") if ".kiln" not in p.parts}
    assert after == before


def _make_read_only(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """chmod the dataset read-only; as root (where chmod does not stop writes) make .kiln creation fail."""
    if os.geteuid() == 0:

        def refuse(folder: Path) -> Path:
            raise PermissionError(13, "Read-only file system", str(folder / ".kiln"))

        monkeypatch.setattr(index_module, "_make_kiln_dir", refuse)
    for path in [root, *root.rglob("*")]:
        if path.is_dir():
            path.chmod(0o555)


def test_read_only_dataset_keeps_its_index_in_the_user_cache(
    kohya_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(index_module, "_announced", set())
    _make_read_only(kohya_dataset, monkeypatch)
    try:
        with Dataset.open(kohya_dataset) as ds:
            assert ds.index.in_cache and str(ds.index.kiln_dir).startswith(str(tmp_path / "cache"))
            assert ds.scan(progress=False).images == 8
            assert ds.flags() is not None
        with Dataset.open(kohya_dataset) as ds:  # same cache index found again, said only once
            assert len(ds.images()) == 8 and ds.last_summary.probed == 0
        err = capsys.readouterr().err
        assert err.count("is read-only; its index lives in") == 1
        assert not (kohya_dataset / ".kiln").exists()
    finally:
        for path in [kohya_dataset, *kohya_dataset.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)


def test_unreadable_dataset_folder(tmp_path: Path) -> None:
    from curator.layout import LayoutError

    with pytest.raises(LayoutError, match="no such dataset"):
        Dataset.open(tmp_path / "missing")


def test_records_know_their_caption(kohya_dataset: Path) -> None:
    from curator.captions.files import caption_candidates, caption_path, caption_target

    write_caption(kohya_dataset / "10_sks dog" / "chelsea.caption", "other\n")
    with Dataset.open(kohya_dataset) as ds:
        record = ds.record("10_sks dog/chelsea.png")
    assert record is not None
    assert caption_path(record) == kohya_dataset / "10_sks dog" / "chelsea.txt"
    assert caption_target(record).name == "chelsea.txt"
    assert [p.suffix for p in caption_candidates(record.abs_path)] == [".txt", ".caption"]


def test_caption_targets_batch_form_agrees_with_kohyas_splitext(tmp_path: Path) -> None:
    """The fast string form used for 10k rows (TUI, `kiln tags`) names the same file as `caption_target`,
    which is kohya's `os.path.splitext(image)[0] + caption_extension`, for awkward names too."""
    import os

    from hypothesis import given
    from hypothesis import strategies as st

    from curator.captions.files import caption_rel_paths, caption_target, caption_targets
    from curator.layout import Subset
    from curator.records import ImageRecord

    subsets = [
        Subset(image_dir=tmp_path / "10_ohwx woman", rel_dir="10_ohwx woman", caption_extension=".caption"),
        Subset(image_dir=tmp_path, rel_dir="", caption_extension=".txt"),
    ]

    def record(name: str, subset: Subset) -> ImageRecord:
        path = f"{subset.rel_dir}/{name}" if subset.rel_dir else name
        return ImageRecord(path, subset, 1, 0, "", 8, 8, "PNG", "RGB", 1, False, None)

    names = st.text(alphabet=st.sampled_from("ab. _é"), min_size=1, max_size=8).map(lambda s: s + ".png")

    @given(st.lists(st.tuples(names, st.sampled_from(subsets)), max_size=6))
    def agree(pairs: list[tuple[str, Subset]]) -> None:
        records = [record(n, s) for n, s in pairs]
        for rec, fast in zip(records, caption_targets(records), strict=True):
            assert fast == str(caption_target(rec))
            stem = os.path.splitext(os.path.join(rec.subset.image_dir, rec.path.rpartition("/")[2]))[0]
            assert fast == stem + rec.subset.caption_extension

    agree()
    assert caption_targets([record("..png", subsets[1])]) == [str(tmp_path / "..png.txt")]  # no extension to cut
    assert caption_rel_paths("10_ohwx woman/a.b.png", ".caption") == (
        "10_ohwx woman/a.b.caption",
        "10_ohwx woman/a.b.txt",
    )
    assert caption_rel_paths("x.png", ".tags") == ("x.tags", "x.txt", "x.caption")


def _as_schema_2(root: Path) -> None:
    """Make a scanned index what kiln wrote with schema 2: no edge bitmaps, version 2."""
    import sqlite3

    conn = sqlite3.connect(root / ".kiln" / "index.sqlite")
    conn.execute("ALTER TABLE features DROP COLUMN edges")
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.execute("CREATE TABLE IF NOT EXISTS journal_probe (x)")  # another module's table, to be kept
    conn.commit()
    conn.close()


def test_an_index_of_schema_2_is_upgraded_in_place(kohya_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from curator.index import SCHEMA_VERSION
    from curator.scan.edges import EDGE_BYTES

    with Dataset.open(kohya_dataset) as ds:
        ds.scan(progress=False)
        before = {r.path: (r.sha256, r.phash) for r in ds.images()}
        edges = dict(ds.index.conn.execute("SELECT path, edges FROM features"))
    _as_schema_2(kohya_dataset)
    capsys.readouterr()
    with Dataset.open(kohya_dataset) as ds:
        err = capsys.readouterr().err
        assert "upgraded from schema 2 to 3" in err and "edge map" in err
        assert ds.index.get_meta("schema_version") == str(SCHEMA_VERSION)
        rows = {p: (sha, phash) for p, sha, phash in ds.index.conn.execute("SELECT path, sha256, phash FROM images")}
        assert rows.keys() == before.keys() and all(rows[p][0] == before[p][0] for p in rows)  # the rows are kept
        summary = ds.scan(progress=False)
        assert (summary.new, summary.changed, summary.unchanged) == (0, len(before), 0)  # each read once more
        assert {r.path: (r.sha256, r.phash) for r in ds.images()} == before
        upgraded = dict(ds.index.conn.execute("SELECT path, edges FROM features"))
        assert upgraded == edges and all(len(blob) == EDGE_BYTES for blob in upgraded.values())
        assert ds.index.conn.execute("SELECT name FROM sqlite_master WHERE name = 'journal_probe'").fetchone()
        assert ds.scan(progress=False).changed == 0  # once only
    with Dataset.open(kohya_dataset):
        assert capsys.readouterr().err == ""  # said once, at the upgrade


def test_two_processes_upgrading_at_once_alter_the_index_once(kohya_dataset: Path) -> None:
    """A second opener that read schema 2 before the first upgraded it finds the upgrade done once it has the lock."""
    import sqlite3

    from curator.index import Index

    with Dataset.open(kohya_dataset) as ds:
        ds.scan(progress=False)
    _as_schema_2(kohya_dataset)
    first = Index.open(kohya_dataset, quiet=True)  # upgrades
    late = Index(first.root, first.kiln_dir, sqlite3.connect(first.path, isolation_level=None), in_cache=False)
    late.get_meta = lambda key: "2"  # type: ignore[method-assign]  # what it read before the first one upgraded
    late._migrate(quiet=True)  # no "duplicate column name: edges"
    columns = [row[1] for row in first.conn.execute("PRAGMA table_info(features)")]
    assert columns.count("edges") == 1
    late.close()
    first.close()


def test_an_index_of_an_unknown_schema_is_rebuilt_with_a_message(
    kohya_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    with Dataset.open(kohya_dataset) as ds:
        ds.scan(progress=False)
    conn = sqlite3.connect(kohya_dataset / ".kiln" / "index.sqlite")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    capsys.readouterr()
    with Dataset.open(kohya_dataset) as ds:
        assert "schema 1 is not this kiln's (3): rebuilt" in capsys.readouterr().err
        assert ds.images() and ds.scan(progress=False).new == 0  # images() scanned the emptied index again
