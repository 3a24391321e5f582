"""`kiln autotag` end to end on real photos in a kohya folder: modes, journal undo, bad input, exit codes."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import skimage

from curator.cli.autotag import register
from tests.onnx_models import make_tagger

DATA = Path(skimage.__file__).parent / "data"
TAGS = [
    ("general", 9, 0.20),
    ("sensitive", 9, 0.70),
    ("questionable", 9, 0.05),
    ("explicit", 9, 0.01),
    ("hatsune_miku", 4, 0.95),
    ("kirisame_marisa", 4, 0.30),
    ("long_hair", 0, 0.80),
    ("^_^", 0, 0.60),
    ("1girl", 0, 0.55),
    ("blue_eyes", 0, 0.40),
    ("solo", 0, 0.30),
]
DEFAULT = ["long hair", "^_^", "1girl", "blue eyes", "hatsune miku"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_tagger(tmp_path_factory.mktemp("model") / "wd-tiny", TAGS, size=32, probes=False)


@pytest.fixture
def dataset(tmp_path) -> Path:
    """A kohya dataset: 10_ohwx woman/ with four real photos (two captioned, one empty caption) and a
    corrupt JPEG."""
    root = tmp_path / "ds"
    sub = root / "10_ohwx woman"
    sub.mkdir(parents=True)
    for name in ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg"):
        shutil.copy(DATA / name, sub / name)
    (sub / "chelsea.txt").write_bytes(b"ohwx, long_hair, orange_cat\r\n")
    (sub / "coffee.txt").write_bytes(b"\xef\xbb\xbfcup,  saucer\nsecond line kept\n")
    (sub / "astronaut.txt").write_bytes(b"")
    (sub / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF not really a jpeg")
    return root


def captions(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*.txt") if ".kiln" not in p.parts}


def kiln_autotag(argv: list[str], capsys) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="kiln")
    register(parser.add_subparsers())
    args = parser.parse_args(["autotag", *argv])
    code = args.func(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def run_json(argv: list[str], capsys) -> tuple[int, dict]:
    code, out, err = kiln_autotag([*argv, "--json"], capsys)
    return code, json.loads(out)


def test_missing_mode_tags_uncaptioned_images_and_reports_the_bad_one(dataset, model, capsys):
    before = captions(dataset)
    code, report = run_json([str(dataset), "--model", str(model), "--workers", "2", "--batch-size", "2"], capsys)
    assert code == 0
    after = captions(dataset)
    sub = "10_ohwx woman"
    assert after[f"{sub}/chelsea.txt"] == before[f"{sub}/chelsea.txt"]
    assert after[f"{sub}/coffee.txt"] == before[f"{sub}/coffee.txt"]
    assert after[f"{sub}/astronaut.txt"] == b"long hair, ^_^, 1girl, blue eyes, hatsune miku\n"
    assert after[f"{sub}/rocket.txt"] == b"long hair, ^_^, 1girl, blue eyes, hatsune miku\n"
    assert f"{sub}/broken.txt" not in after
    assert report["tagged"] == 2 and report["skipped"] == 2
    assert [b["path"] for b in report["bad"]] == [f"{sub}/broken.jpg"]
    assert report["bad"][0]["error"]
    assert report["journal_entry"] is not None
    by_path = {r["path"]: r for r in report["results"]}
    assert by_path[f"{sub}/rocket.jpg"]["rating"] == "sensitive"
    assert by_path[f"{sub}/broken.jpg"]["status"] == "bad"


def test_text_output_names_the_bad_image_and_the_undo(dataset, model, capsys):
    code, out, _err = kiln_autotag([str(dataset), "--model", str(model)], capsys)
    assert code == 0
    assert "bad image skipped: 10_ohwx woman/broken.jpg" in out
    assert "kiln tags undo" in out and "tagged 2" in out


def test_append_keeps_existing_tags_and_conventions(dataset, model, capsys):
    code, report = run_json([str(dataset), "--model", str(model), "--mode", "append", "--character-first"], capsys)
    assert code == 0
    after = captions(dataset)
    sub = "10_ohwx woman"
    # underscore style file: new tags written with underscores (kaomoji as is), CRLF kept
    assert after[f"{sub}/chelsea.txt"] == b"ohwx, long_hair, orange_cat, hatsune_miku, ^_^, 1girl, blue_eyes\r\n"
    # BOM, odd spacing and the second line kept; existing tags first, in their order
    assert after[f"{sub}/coffee.txt"] == (
        b"\xef\xbb\xbfcup,  saucer,  hatsune miku,  long hair,  ^_^,  1girl,  blue eyes\nsecond line kept\n"
    )
    assert report["tagged"] == 4


def test_replace_then_undo_restores_every_caption_byte_for_byte(dataset, model, capsys):
    from curator.dataset import Dataset
    from curator.tags.journal import undo

    before = captions(dataset)
    code, report = run_json(
        [str(dataset), "--model", str(model), "--mode", "replace", "--ratings", "--exclude", "1girl"], capsys
    )
    assert code == 0
    after = captions(dataset)
    expected = "sensitive, long hair, ^_^, blue eyes, hatsune miku"
    assert after["10_ohwx woman/chelsea.txt"] == (expected + "\r\n").encode()
    # the file's own separator spacing (",  "), BOM and second line are kept
    coffee = expected.replace(", ", ",  ")
    assert after["10_ohwx woman/coffee.txt"] == b"\xef\xbb\xbf" + coffee.encode() + b"\nsecond line kept\n"
    assert after["10_ohwx woman/rocket.txt"] == (expected + "\n").encode()
    with Dataset.open(dataset, quiet=True) as ds:
        result = undo(ds)
    assert result is not None and result.entry_id == report["journal_entry"] and not result.conflicts
    assert captions(dataset) == before  # rocket.txt (created by autotag) is gone again


def test_prefix_and_folder_trigger_stay_first(dataset, model, capsys):
    code, _ = run_json([str(dataset), "--model", str(model), "--mode", "replace", "--prefix-from-folder"], capsys)
    assert code == 0
    after = captions(dataset)
    assert after["10_ohwx woman/rocket.txt"].startswith(b"ohwx woman, long hair, ")
    code, _ = run_json(
        [str(dataset), "--model", str(model), "--mode", "append", "--prefix", "zkw", "--prefix", "blue_eyes"], capsys
    )
    assert after != captions(dataset)
    # an existing tag named as prefix is moved first, keeping its spelling
    assert captions(dataset)["10_ohwx woman/rocket.txt"].startswith(b"zkw, blue eyes, ohwx woman, long hair")


def test_thresholds_mcut_and_underscores_from_the_command_line(dataset, model, capsys):
    args = [str(dataset), "--model", str(model), "--mode", "replace", "--dry-run"]
    _, report = run_json([*args, "--general", "0.5", "--character", "0.2"], capsys)
    rocket = {r["path"]: r for r in report["results"]}["10_ohwx woman/rocket.jpg"]
    assert rocket["tags"] == ["long hair", "^_^", "1girl", "hatsune miku", "kirisame marisa"]
    _, report = run_json([*args, "--mcut", "--keep-underscores"], capsys)
    rocket = {r["path"]: r for r in report["results"]}["10_ohwx woman/rocket.jpg"]
    assert rocket["tags"] == ["long_hair", "hatsune_miku"]  # general gap 0.8 | 0.6 ... ; character 0.95 | 0.30


def test_dry_run_writes_nothing(dataset, model, capsys):
    before = captions(dataset)
    code, out, _ = kiln_autotag([str(dataset), "--model", str(model), "--mode", "replace", "--dry-run"], capsys)
    assert code == 0 and captions(dataset) == before
    assert "would tag 4" in out and "10_ohwx woman/rocket.txt: long hair" in out
    assert not (dataset / ".kiln" / "trash").exists()


def test_where_limits_the_images(dataset, model, capsys):
    code, report = run_json(
        [str(dataset), "--model", str(model), "--mode", "replace", "--where", "name:rocket*", "--dry-run"], capsys
    )
    assert code == 0 and report["images"] == 1 and report["tagged"] == 1
    code, report = run_json([str(dataset), "--model", str(model), "--where", "tag:orange_cat", "--dry-run"], capsys)
    assert code == 1 and "already has a caption" in report["reason"]
    code, _out, err = kiln_autotag([str(dataset), "--model", str(model), "--where", "(tag:cat"], capsys)
    assert code == 1 and "--where" in err and "position" in err


def test_conflict_leaves_the_file_and_exits_2(dataset, model, capsys, monkeypatch):
    import curator.autotag.runner as runner

    real = runner.tag_images
    edited = dataset / "10_ohwx woman" / "chelsea.txt"

    def racing(*args, **kwargs):
        for i, result in enumerate(real(*args, **kwargs)):
            if i == 0:
                edited.write_bytes(b"edited by hand while autotag ran\n")
            yield result

    monkeypatch.setattr(runner, "tag_images", racing)
    code, report = run_json([str(dataset), "--model", str(model), "--mode", "replace"], capsys)
    assert code == 2
    assert report["conflicts"] == ["10_ohwx woman/chelsea.txt"]
    assert edited.read_bytes() == b"edited by hand while autotag ran\n"
    assert captions(dataset)["10_ohwx woman/rocket.txt"].startswith(b"long hair")


def test_nothing_to_do_and_bad_model_exit_1(dataset, model, tmp_path, capsys):
    for name in ("astronaut", "rocket"):
        (dataset / "10_ohwx woman" / f"{name}.txt").write_bytes(b"x\n")
    (dataset / "10_ohwx woman" / "broken.jpg").unlink()
    code, _out, err = kiln_autotag([str(dataset), "--model", str(model)], capsys)
    assert code == 1 and "already has a caption" in err
    code, _out, err = kiln_autotag([str(dataset), "--model", str(tmp_path / "nope")], capsys)
    assert code == 1 and "does not exist" in err
    wrong = shutil.copytree(model, tmp_path / "wrong")
    (wrong / "selected_tags.csv").write_text("name,count\nfoo,1\n")
    code, _out, err = kiln_autotag([str(dataset), "--model", str(wrong), "--mode", "replace"], capsys)
    assert code == 1 and "missing column" in err
    code, _out, err = kiln_autotag([str(dataset), "--model", str(model), "--general", "1.5", "--batch-size", "0"], capsys)
    assert code == 1 and "general_threshold = 1.5" in err and "batch_size = 0" in err


def test_every_image_bad_exits_1(tmp_path, model, capsys):
    root = tmp_path / "flat"
    root.mkdir()
    (root / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (root / "b.jpg").write_bytes(b"")
    code, report = run_json([str(root), "--model", str(model)], capsys)
    assert code == 1 and len(report["bad"]) == 2 and report["tagged"] == 0
    assert not list(root.glob("*.txt"))


def test_interrupt_writes_what_was_tagged(dataset, model, capsys, monkeypatch):
    import curator.autotag.runner as runner

    real = runner.tag_images

    def interrupted(*args, **kwargs):
        for i, result in enumerate(real(*args, **kwargs)):
            if i == 1:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(runner, "tag_images", interrupted)
    code, report = run_json([str(dataset), "--model", str(model), "--mode", "replace"], capsys)
    assert code == 130 and report["interrupted"] and report["tagged"] == 1
    assert report["journal_entry"] is not None


def test_caption_extension_option(dataset, model, capsys):
    code, _ = run_json([str(dataset), "--model", str(model), "--caption-extension", "caption"], capsys)
    assert code == 0
    made = sorted(p.name for p in (dataset / "10_ohwx woman").glob("*.caption"))
    assert made == ["astronaut.caption", "chelsea.caption", "coffee.caption", "rocket.caption"]


def test_file_names_are_shown_as_data(tmp_path, model, capsys):
    root = tmp_path / "odd"
    root.mkdir()
    shutil.copy(DATA / "coffee.png", root / "[bold red]cup\x1b[31m.png")
    (root / "[link]bad.png").write_bytes(b"not an image")
    code, out, _ = kiln_autotag([str(root), "--model", str(model), "--dry-run"], capsys)
    assert code == 0
    assert "\x1b" not in out
    assert "[bold red]cup" in out and "bad image skipped: [link]bad.png" in out


def test_registration_and_package_import_are_light():
    import subprocess
    import sys

    code = (
        "import sys, argparse\n"
        "import curator.cli.autotag as m\n"
        "p = argparse.ArgumentParser(); m.register(p.add_subparsers())\n"
        "heavy = [n for n in ('onnxruntime', 'numpy', 'PIL', 'torch', 'textual') if n in sys.modules]\n"
        "import curator.autotag\n"
        "heavy += [n for n in ('onnxruntime', 'torch', 'textual') if n in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == ""


def test_regularization_images_are_left_out_unless_asked(dataset, model, capsys):
    reg = dataset / "reg" / "1_woman"
    reg.mkdir(parents=True)
    shutil.copy(DATA / "motorcycle_left.png", reg / "moto.png")
    code, report = run_json([str(dataset), "--model", str(model), "--dry-run"], capsys)
    assert code == 0 and report["regularization_excluded"] == 1
    assert "reg/1_woman/moto.png" not in {r["path"] for r in report["results"]}
    code, report = run_json([str(dataset), "--model", str(model), "--include-reg"], capsys)
    assert code == 0 and report["regularization_excluded"] == 0
    assert (reg / "moto.txt").read_bytes() == b"long hair, ^_^, 1girl, blue eyes, hatsune miku\n"


def test_mcut_per_category_flags(dataset, model, capsys):
    args = [str(dataset), "--model", str(model), "--mode", "replace", "--dry-run", "--where", "name:rocket*"]
    _, report = run_json([*args, "--character-mcut", "--character", "0.99"], capsys)
    assert report["results"][0]["tags"] == DEFAULT  # character MCut (0.625) replaces the 0.99 threshold
    _, report = run_json([*args, "--general-mcut"], capsys)
    assert report["results"][0]["tags"] == ["long hair", "hatsune miku"]


def test_where_bucket_and_flag_select_like_kiln_tags(dataset, model, capsys):
    """`--where` sees each image the way `kiln tags --where` does: its kohya bucket (the dataset's bucket
    settings) and every health flag (also those raised on its caption file)."""
    from curator.buckets import BucketSettings, assign_bucket
    from curator.dataset import Dataset
    from curator.tags.items import load_items

    sub = "10_ohwx woman"
    w, h = assign_bucket(512, 512, BucketSettings()).bucket  # astronaut.png is 512x512; no TOML: kohya's defaults
    args = [str(dataset), "--model", str(model), "--mode", "replace", "--dry-run", "--where"]
    code, report = run_json([*args, f"bucket:{w}x{h}"], capsys)
    assert code == 0 and report["images"] == 1
    assert [r["path"] for r in report["results"]] == [f"{sub}/astronaut.png"]
    code, report = run_json([*args, "flag:multiline-caption"], capsys)  # raised on coffee.txt, not the image
    assert code == 0 and [r["path"] for r in report["results"]] == [f"{sub}/coffee.png"]
    code, report = run_json([*args, "bucket:64x4096"], capsys)  # a bucket the settings do not have
    assert code == 1 and "bucket:64x4096 matches nothing" in report["reason"] and "512x512" in report["reason"]
    code, report = run_json([*args, "tag:nosuchtag"], capsys)
    assert code == 1 and "no image matches" in report["reason"]
    for where in (f"bucket:{w}x{h}", "flag:multiline-caption", "flag:missing-caption OR flag:empty-caption"):
        with Dataset.open(dataset) as ds:
            expected = {it.path for it in load_items(ds, where=where)}
        _code, report = run_json([*args, where], capsys)
        assert {r["path"] for r in report["results"]} == expected, where


def test_where_bucket_on_a_toml_kohya_refuses_exits_1_with_the_reason(dataset, model, capsys, tmp_path):
    toml = tmp_path / "ds.toml"
    toml.write_text(
        "[general]\nresolution = 700\nbucket_reso_steps = 64\n[[datasets]]\n[[datasets.subsets]]\n"
        f'image_dir = "{(dataset / "10_ohwx woman").as_posix()}"\ncaption_extension = ".txt"\n'
    )
    before = captions(dataset)
    code, _out, err = kiln_autotag([str(toml), "--model", str(model), "--mode", "replace", "--where", "bucket:640x640"], capsys)
    assert code == 1 and "--where: bucket:" in err and "not a multiple of bucket_reso_steps 64" in err
    assert captions(dataset) == before
