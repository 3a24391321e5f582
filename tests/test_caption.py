"""`kiln caption` with tiny random BLIP, LLaVA-style and Florence-2 models on real photos: modes, prompts,
batching, the journal, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curator.caption.text import clean, merge
from tests.caption_models import WORDS, make_blip, make_florence, make_llava
from tests.conftest import photo, save_photo
from tui.cli import main as kiln

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")


@pytest.fixture(scope="module")
def blip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_blip(tmp_path_factory.mktemp("models") / "blip-tiny")


@pytest.fixture(scope="module")
def llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_llava(tmp_path_factory.mktemp("models") / "llava-tiny")


@pytest.fixture(scope="module")
def florence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_florence(tmp_path_factory.mktemp("models") / "florence-tiny")


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    folder = root / "10_ohwx woman"
    for n, name in enumerate(PHOTOS):
        fmt = ("jpg", "png", "webp")[n % 3]
        save_photo(photo(name, (160, 120)), folder / f"{Path(name).stem}.{fmt}")
    (folder / "astronaut.txt").write_bytes(b"\xef\xbb\xbfohwx woman, astronaut, suit\r\n")
    (folder / "chelsea.txt").write_bytes(b"cat,orange fur\n")
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.suffix in (".txt", ".caption") and ".kiln" not in p.parts}  # fmt: skip


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict, str]:
    code = kiln(["caption", *argv, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out.splitlines()[-1]), captured.err


def test_blip_writes_caption_files_and_undo_removes_them(blip: Path, dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _files(dataset)
    code, report, _err = _run([str(dataset), "--model", str(blip), "--batch-size", "2", "--max-length", "6"], capsys)
    assert code == 0 and report["family"] == "blip" and report["captioned"] == 5 and report["device"] == "cpu"
    after = _files(dataset)
    captions = {k: v for k, v in after.items() if k.endswith(".caption")}
    assert len(captions) == 5
    vocabulary = set(WORDS)
    for text in captions.values():
        line = text.decode("utf-8")
        assert line.endswith("\n") and line.count("\n") == 1
        assert line.startswith("a photo of") and set(line.split()) <= vocabulary  # BLIP keeps its prompt
    assert {k: v for k, v in after.items() if k.endswith(".txt")} == before  # the tag captions are untouched
    assert kiln(["tags", "undo", str(dataset)]) == 0
    assert _files(dataset) == before


def test_existing_files_need_force(blip: Path, dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run([str(dataset), "--model", str(blip)], capsys)[0] == 0
    code, report, err = _run([str(dataset), "--model", str(blip)], capsys)
    assert code == 1 and report["exists"] == 5 and "--force" in err
    code, report, _err = _run([str(dataset), "--model", str(blip), "--force", "--prompt", ""], capsys)
    assert code == 0 and report["captioned"] + sum(r["status"] == "unchanged" for r in report["results"]) == 5


def test_prepend_keeps_the_tag_file_conventions(blip: Path, dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report, _err = _run([str(dataset), "--model", str(blip), "--mode", "prepend", "--prefix", "ohwx woman",
                               "--where", "name:astronaut*"], capsys)  # fmt: skip
    assert code == 0 and report["captioned"] == 1
    text = (dataset / "10_ohwx woman" / "astronaut.txt").read_bytes()
    assert text.startswith(b"\xef\xbb\xbfohwx woman, a photo of") and text.endswith(b", astronaut, suit\r\n")
    sentence = report["results"][0]["text"]
    assert "," not in text.decode("utf-8-sig").split(", ")[1] and sentence.startswith("a photo of")


def test_append_after_the_tags(blip: Path, dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _report, _err = _run([str(dataset), "--model", str(blip), "--mode", "append", "--where", "name:chelsea*"], capsys)
    assert code == 0
    text = (dataset / "10_ohwx woman" / "chelsea.txt").read_bytes().decode()
    assert text.startswith("cat,orange fur,a photo of") and text.endswith("\n")  # the file's own ',' spacing


def test_dry_run_writes_nothing(blip: Path, dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _files(dataset)
    code, report, _err = _run([str(dataset), "--model", str(blip), "--dry-run"], capsys)
    assert code == 0 and report["dry_run"] and report["journal_entry"] is None and _files(dataset) == before


def test_llava_prompt_template_and_prefix_from_folder(llava: Path, dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report, _err = _run([str(dataset), "--model", str(llava), "--prefix-from-folder", "--extension", "txt2",
                               "--prompt", "Describe the image; the subject is {trigger}.", "--caption-batch", "3",
                               "--max-length", "5", "--beams", "1"], capsys)  # fmt: skip
    assert code == 0 and report["family"] == "vlm" and report["captioned"] == 5
    for path in (dataset / "10_ohwx woman").glob("*.txt2"):
        assert path.read_text().startswith("ohwx woman, ")


def test_florence2(florence: Path, dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report, _err = _run([str(dataset), "--model", str(florence), "--max-length", "5", "--beams", "1"], capsys)
    assert code == 0 and report["family"] == "florence2" and report["captioned"] == 5


def test_bad_input_is_explained(tmp_path: Path, dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _r, err = _run([str(dataset), "--model", str(tmp_path / "nope")], capsys)
    assert code == 1 and "no such model folder" in err
    code, _r, err = _run([str(dataset), "--model", "someone/not-cached-model"], capsys)
    assert code == 1 and "never downloads" in err and "hf download someone/not-cached-model" in err
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "bert"}')
    code, _r, err = _run([str(dataset), "--model", str(other)], capsys)
    assert code == 1 and "not a captioning model kiln knows" in err
    code, _r, err = _run([str(dataset), "--model", str(other), "--prompt", "hello {name}"], capsys)
    assert code == 1 and "unknown placeholder {name}" in err
    code, _r, err = _run([str(dataset), "--model", str(other), "--max-length", "0"], capsys)
    assert code == 1 and "max_new_tokens" in err


def test_text_merging() -> None:
    assert clean('  "a cat\non a\tchair"  ') == "a cat on a chair"
    assert merge(None, "a cat, sitting", "write", ["ohwx"]) == b"ohwx, a cat, sitting\n"
    assert merge(b"cat, chair\n", "a cat, sitting", "prepend", ["ohwx"]) == b"ohwx, a cat; sitting, cat, chair\n"
    assert merge(b"ohwx, cat\n", "a cat", "append", ["ohwx"]) == b"ohwx, cat, a cat\n"
    assert merge(b"cat\n", "a cat, sitting", "append", [], keep_commas=True) == b"cat, a cat, sitting\n"
