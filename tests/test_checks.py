"""Every health-flag kind, planted in real photographs, is found on the right file with a useful detail."""

from __future__ import annotations

from pathlib import Path

import pytest

from curator.dataset import Dataset
from curator.records import FLAG_KINDS
from curator.scan.config import ScanConfig
from tests.conftest import build_defect_dataset, photo, save_photo, write_caption


@pytest.fixture(scope="module")
def defects(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], list]:
    root = tmp_path_factory.mktemp("defects") / "ds"
    expected = build_defect_dataset(root)
    with Dataset.open(root, config=ScanConfig(workers=2)) as ds:
        ds.scan(progress=False)
        flags = ds.flags()
    return root, expected, flags


def _details(flags: list, path: str, kind: str) -> list[str]:
    return [f.detail for f in flags if f.path == path and f.kind == kind]


@pytest.mark.parametrize("kind", [k for k in FLAG_KINDS if k != "text-heavy"])  # needs a text detector:
def test_every_kind_is_found_on_its_file(defects: tuple, kind: str) -> None:  # tests/test_text_model.py plants it
    _root, expected, flags = defects
    assert kind in expected, f"the defect dataset plants no {kind}"
    assert _details(flags, expected[kind], kind), f"{kind} not reported on {expected[kind]}"


def test_clean_images_carry_no_file_flags(defects: tuple) -> None:
    _root, _expected, flags = defects
    noisy = {"5_things/original.png": {"exact-duplicate", "near-duplicate"}}
    for path, allowed in noisy.items():
        assert {f.kind for f in flags if f.path == path} <= allowed


def test_details_say_what_and_how_much(defects: tuple) -> None:
    _root, expected, flags = defects
    (encoding,) = _details(flags, expected["caption-encoding"], "caption-encoding")
    assert "offset 3" in encoding and "0xe9" in encoding  # 'caf' then the latin-1 é
    (low,) = _details(flags, expected["low-res"], "low-res")
    assert "400x300" in low and "54%" in low  # 120,000 px of 262,144
    (tiny,) = _details(flags, expected["tiny"], "tiny")
    assert "180 px" in tiny
    (wide,) = _details(flags, expected["extreme-aspect"], "extreme-aspect")
    assert "5.33:1" in wide and "1024x256" in wide
    (frames,) = _details(flags, expected["animated"], "animated")
    assert frames.startswith("3 frames")
    (bomb,) = _details(flags, expected["too-large"], "too-large")
    assert "40000x40000" in bomb
    (dup,) = _details(flags, expected["duplicate-tags"], "duplicate-tags")
    assert "'brick' ×2" in dup
    (multi,) = _details(flags, expected["multiline-caption"], "multiline-caption")
    assert "second line ignored" in multi


def test_exif_rotation_swaps_the_reported_size(defects: tuple) -> None:
    root, expected, _flags = defects
    with Dataset.open(root) as ds:
        record = ds.record(expected["exif-rotated"])
    assert record is not None and record.exif_rotated
    assert (record.width, record.height) == (600, 800)


def test_truncated_and_broken_files_lose_nothing(defects: tuple) -> None:
    """Checks never touch the files: the truncated JPEG keeps its bytes, the caption its encoding."""
    root, expected, _flags = defects
    latin = root / expected["caption-encoding"]
    assert latin.read_bytes() == "caf\xe9, coins\n".encode("latin-1")


def test_duplicate_clusters_suggest_the_best_member(defects: tuple) -> None:
    root, _expected, _flags = defects
    with Dataset.open(root) as ds:
        clusters = ds.duplicates()
    exact = [c for c in clusters if c.kind == "exact"]
    near = [c for c in clusters if c.kind == "near"]
    assert len(exact) == 1
    assert set(exact[0].members) == {"5_things/original.png", "5_things/original_copy.png", "5_things/original_resaved.png"}
    assert exact[0].keep in exact[0].members
    assert len(near) == 1 and "5_things/original_small.jpg" in near[0].members
    assert near[0].keep == exact[0].keep  # the 768² original beats the 560² copy


def test_low_res_uses_the_configured_resolution(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    save_photo(photo("coffee.png", (800, 600)), root / "coffee.jpg", quality=90)
    write_caption(root / "coffee.txt", "coffee\n")
    with Dataset.open(root, config=ScanConfig(resolution=512)) as ds:
        assert not [f for f in ds.flags() if f.kind == "low-res"]
    with Dataset.open(root, config=ScanConfig(resolution=1024)) as ds:
        (flag,) = [f for f in ds.flags() if f.kind == "low-res"]
    assert "1024²" in flag.detail and "54%" in flag.detail


def test_pixel_limit_refuses_before_decoding(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    save_photo(photo("retina.jpg", (1400, 1000)), root / "big.jpg", quality=90)
    with Dataset.open(root, config=ScanConfig(pixel_limit=1_000_000)) as ds:
        ds.scan(progress=False)
        (record,) = ds.images()
        assert [f.kind for f in record.flags] == ["too-large"] and record.phash is None
    # raising the limit probes the file again even though it did not change
    with Dataset.open(root, config=ScanConfig(pixel_limit=2_000_000)) as ds:
        summary = ds.scan(progress=False)
        (record,) = ds.images()
    assert summary.changed == 1 and record.flags == [] and record.phash is not None


def test_caption_extension_caption(tmp_path: Path) -> None:
    root = tmp_path / "ds" / "3_cat"
    save_photo(photo("chelsea.png", (640, 512)), root / "cat.png")
    write_caption(root / "cat.caption", "cat\n")
    with Dataset.open(root.parent, caption_extension=".caption") as ds:
        kinds = {f.kind for f in ds.flags()}
    assert "missing-caption" not in kinds and "orphan-caption" not in kinds
    with Dataset.open(root.parent) as ds:  # default .txt: the .caption file is not what kohya reads
        (missing,) = [f for f in ds.flags() if f.kind == "missing-caption"]
    assert "cat.caption" in missing.detail


def test_bom_and_bad_config_are_reported(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from curator.scan.config import config_error_message

    root = tmp_path / "ds"
    save_photo(photo("chelsea.png", (640, 512)), root / "cat.png")
    write_caption(root / "cat.txt", b"\xef\xbb\xbfcat, sitting\n")
    with Dataset.open(root) as ds:
        (flag,) = [f for f in ds.flags() if f.kind == "caption-encoding"]
    assert "byte-order mark" in flag.detail
    with pytest.raises(ValidationError) as info:
        ScanConfig(near_threshold=99)
    message = config_error_message(info.value)
    assert message.startswith("near_threshold:") and "99" in message


def test_toml_dataset_end_to_end(tmp_path: Path) -> None:
    """A kohya dataset TOML: subsets, its caption extension default (.caption) and its resolution drive the checks."""
    save_photo(photo("chelsea.png", (640, 512)), tmp_path / "train" / "cat.png")
    write_caption(tmp_path / "train" / "cat.caption", "cat, sitting\n")
    save_photo(photo("coffee.png", (1100, 825)), tmp_path / "reg" / "cup.jpg", quality=90)
    write_caption(tmp_path / "reg" / "cup.txt", "cup\n")
    config = tmp_path / "dataset.toml"
    config.write_text(
        '[general]\nresolution = 1024\n\n[[datasets]]\n\n  [[datasets.subsets]]\n  image_dir = "train"\n'
        '  num_repeats = 4\n\n  [[datasets.subsets]]\n  image_dir = "reg"\n  is_reg = true\n'
        '  caption_extension = ".txt"\n',
        encoding="utf-8",
    )
    with Dataset.open(config) as ds:
        assert ds.buckets.settings is not None and ds.buckets.settings.resolution == (1024, 1024)
        assert ds.buckets.source == "resolution from the dataset TOML dataset.toml; the rest kohya's defaults"
        assert ds.root == tmp_path.resolve()
        records = {r.path: r for r in ds.images()}
        flags = {(f.path, f.kind) for f in ds.flags()}
    assert records["train/cat.png"].subset.repeats == 4 and records["reg/cup.jpg"].subset.is_reg
    assert ("train/cat.png", "low-res") in flags  # 640x512 is far below 1024²
    assert ("reg/cup.jpg", "low-res") in flags  # 1100x825 is 13% below 1024²
    assert not {kind for _path, kind in flags} & {"missing-caption", "orphan-caption"}
    assert (tmp_path / ".kiln" / "index.sqlite").is_file()
