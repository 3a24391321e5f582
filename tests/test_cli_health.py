"""`kiln scan`, `kiln check`, `kiln dupes`: JSON contracts, tables, exit codes, safe output."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from curator.cli import health
from tests.conftest import photo, save_photo, write_caption


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="kiln")
    health.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def messy(kohya_dataset: Path) -> Path:
    sub = kohya_dataset / "10_sks dog"
    shutil.copyfile(sub / "chelsea.png", sub / "chelsea_copy.png")
    save_photo(photo("astronaut.png", (200, 200)), sub / "small.jpg", quality=90)
    write_caption(sub / "small.txt", "a, b, a\nsecond\n")
    (sub / "junk.png").write_text("not an image")
    return kohya_dataset


def test_scan_json_and_exit_zero_with_flags(messy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run(["scan", str(messy), "--json"], capsys)
    assert code == 0
    summary = json.loads(out)
    assert summary["images"] == 11 and summary["new"] == 11 and summary["layout"] == "kohya"
    assert summary["flags_by_kind"] == {"not-image": 1}
    assert {s["folder"]: s["images"] for s in summary["subsets"]} == {"10_sks dog": 9, "reg/1_dog": 2}
    code, out, err = run(["scan", str(messy), "--json"], capsys)
    assert json.loads(out)["unchanged"] == 11
    code, out, err = run(["scan", str(messy)], capsys)  # piped (not a terminal): no progress bar
    assert code == 0 and "scanning" not in err and "files/s" not in err


def test_check_json_contract(messy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run(["check", str(messy), "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert set(report) == {"images", "flags"} and report["images"] == 11
    assert all(set(f) in ({"path", "kind", "detail"}, {"path", "kind", "detail", "score"}) for f in report["flags"])
    from curator.records import IMAGE_QUALITY_KINDS

    scored = {"alpha", *IMAGE_QUALITY_KINDS}  # quality findings carry a score 0..1, the rest none
    assert all(("score" in f) == (f["kind"] in scored) for f in report["flags"])
    assert all(0 <= f["score"] <= 1 for f in report["flags"] if "score" in f)
    found = {(f["path"], f["kind"]) for f in report["flags"]}
    sub = "10_sks dog/"
    expected = {
        (sub + "junk.png", "not-image"),
        (sub + "junk.png", "missing-caption"),
        (sub + "small.jpg", "low-res"),
        (sub + "small.jpg", "tiny"),
        (sub + "small.txt", "duplicate-tags"),
        (sub + "small.txt", "multiline-caption"),
        (sub + "chelsea.png", "exact-duplicate"),
        (sub + "chelsea_copy.png", "exact-duplicate"),
        (sub + "chelsea_copy.png", "missing-caption"),
    }
    assert expected <= found
    code, out, _err = run(["check", str(messy), "--json", "--kind", "tiny"], capsys)
    assert [f["kind"] for f in json.loads(out)["flags"]] == ["tiny"]


def test_check_resolution_option(messy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _code, out, _err = run(["check", str(messy), "--json", "--resolution", "1024", "--kind", "low-res"], capsys)
    low = {f["path"] for f in json.loads(out)["flags"]}
    assert "10_sks dog/chelsea.png" in low  # 640x512 is below 1024²


def test_dupes_json_contract(messy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run(["dupes", str(messy), "--json"], capsys)
    assert code == 0
    clusters = json.loads(out)["clusters"]
    keys = {"kind", "keep", "members", "distance", "keep_reason", "why"}
    assert all(set(c) == keys and c["keep"] in c["members"] for c in clusters)
    for c in clusters:  # every member but the kept one says what it matched, how and how far
        assert set(c["why"]) == set(c["members"]) - {c["keep"]}
        assert all({"matched", "how", "transform", "distance"} <= set(w) for w in c["why"].values())
    exact = [c for c in clusters if c["kind"] == "exact"]
    near = [c for c in clusters if c["kind"] == "near"]
    assert [set(c["members"]) for c in exact] == [{"10_sks dog/chelsea.png", "10_sks dog/chelsea_copy.png"}]
    # small.jpg is the astronaut at 200x200: a near duplicate, and the 640x512 original is the one to keep
    assert [(c["keep"], set(c["members"])) for c in near] == [
        ("10_sks dog/astronaut.jpg", {"10_sks dog/astronaut.jpg", "10_sks dog/small.jpg"})
    ]
    assert near[0]["why"]["10_sks dog/small.jpg"]["transform"].startswith("resized 640x512 -> 200x200")
    assert near[0]["keep_reason"].startswith("largest resolution")


def test_human_tables(messy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run(["scan", str(messy)], capsys)
    assert code == 0 and "10_sks dog" in out and "11 images" in out
    code, out, _err = run(["check", str(messy)], capsys)
    assert code == 0 and "not-image" in out and "by kind" in out
    code, out, _err = run(["dupes", str(messy)], capsys)
    assert code == 0 and "keep" in out and "chelsea_copy.png" in out


def test_file_names_are_data_not_markup_or_escapes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ds"
    save_photo(photo("coffee.png", (200, 200)), root / "[bold]x[red].jpg", quality=90)
    save_photo(photo("chelsea.png", (200, 200)), root / "evil\x1b[31mred.jpg", quality=90)
    code, out, _err = run(["check", str(root)], capsys)
    assert code == 0
    assert "[bold]x[red].jpg" in out.replace("\n", "").replace("│", "").replace(" ", "")
    assert "\x1b[31m" not in out


@pytest.mark.parametrize("command", ["scan", "check", "dupes"])
def test_missing_dataset_exits_1_with_a_message(tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run([command, str(tmp_path / "nope")], capsys)
    assert code == 1 and out == "" and "no such dataset" in err


def test_bad_option_value_names_the_field(messy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(["dupes", str(messy), "--threshold", "99"], capsys)
    assert code == 1 and "near_threshold" in err and "99" in err
    code, _out, err = run(["check", str(messy), "--kind", "smudged"], capsys)
    assert code == 1 and "unknown kind 'smudged'" in err and "blurry" in err  # the message lists the kinds


def test_commands_write_nothing_in_the_dataset_but_kiln(messy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = {p: p.read_bytes() for p in messy.rglob("*") if p.is_file()}
    for command in ("scan", "check", "dupes"):
        run([command, str(messy), "--json"], capsys)
    after = {p: p.read_bytes() for p in messy.rglob("*") if p.is_file() and ".kiln" not in p.parts}
    assert after == before


def test_register_adds_the_commands_lazily() -> None:
    import subprocess
    import sys

    code = (
        "import argparse, sys\n"
        "import curator.cli\n"
        "p = argparse.ArgumentParser(); curator.cli.register(p.add_subparsers())\n"
        "heavy = [m for m in ('numpy', 'PIL', 'sqlite3', 'curator.dataset', 'torch') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
