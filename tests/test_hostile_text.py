"""Text from files is data: names and captions holding Rich markup (``[bold]``, ``[/]``), terminal escapes
(``ESC[2J`` clears the screen, ``ESC]52;`` writes the clipboard), carriage returns and bidi controls reach
every output literally and harmlessly.

One dataset, every command: each CLI table, each ``--json`` document, the TUI's screen, the training run's log
and ``kiln watch``. Nothing is parsed as markup (``[bold]`` is still there, word for word), no raw control
character or escape sequence comes out, and the JSON parses back to the exact names.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import photo
from tui.cli import main

CLEAR = "\x1b[2J"
CLIPBOARD = "\x1b]52;c;aGFja2Vk\x07"
BIDI = "\u202e"
ISOLATE = "\u2066"
NAME_BITS = ["[bold]", CLEAR, CLIPBOARD, "\r", BIDI, ISOLATE, "[red on white]"]  # no "/" in a file name
CAPTION_BITS = [*NAME_BITS, "[/]", "[/bold]", "[link=http://example.com]x[/link]"]
FOLDER = "10_[bold]x" + CLEAR + BIDI
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")  # tab, newline allowed


def _names() -> list[str]:
    return [f"{bit}img{i}" for i, bit in enumerate(NAME_BITS)]


@pytest.fixture()
def hostile(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    folder = root / FOLDER
    folder.mkdir(parents=True)
    base = photo("astronaut.png", (160, 160))
    for i, name in enumerate(_names()):
        base.crop((i * 4, i * 4, i * 4 + 96, i * 4 + 96)).save(folder / f"{name}.png")
        tags = ", ".join(f"tag{bit}{i}" for bit in CAPTION_BITS[i % len(CAPTION_BITS):][:3])
        (folder / f"{name}.txt").write_text(f"{tags}, [bold]shared, long hair\n", newline="")
    shutil.copyfile(folder / f"{_names()[0]}.png", folder / f"{CLEAR}copy.png")  # an exact duplicate
    (folder / f"{BIDI}broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a flagged file
    (folder / f"{CLIPBOARD}orphan.txt").write_text("[/], orphan\n")
    return root


def _clean(output: str, where: str) -> None:
    found = RAW_CONTROL.search(output)
    assert found is None, f"{where}: raw {found.group()!r} at {found.start()}: {output[max(0, found.start() - 40):found.start() + 40]!r}"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    _clean(out.out, f"kiln {' '.join(argv[:2])} stdout")
    _clean(out.err, f"kiln {' '.join(argv[:2])} stderr")
    assert "Traceback" not in out.err
    return code, out.out, out.err


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


READING = [
    ["scan", "{ds}", "--no-progress"],
    ["check", "{ds}"],
    ["dupes", "{ds}"],
    ["buckets", "{ds}"],
    ["tags", "stats", "{ds}"],
    ["tags", "stats", "{ds}", "--by-folder", "--tokens", "--tag", "[bold]shared"],
    ["tags", "absorb", "{ds}", "--min-share", "0.1"],
    ["tags", "replace", "{ds}", "long hair", "[bold]short", "--dry-run"],
    ["tags", "consolidate", "{ds}", "--dry-run"],
    ["tags", "trigger", "{ds}", "--dry-run"],
]
WRITING = [  # each once as a table, then its --json twin on the next state
    ["tags", "add", "{ds}", "[/]added"],
    ["tags", "history", "{ds}"],
    ["tags", "history", "{ds}", "--show", "1"],
    ["tags", "undo", "{ds}"],
    ["tags", "redo", "{ds}"],
    ["tags", "remove", "{ds}", "[/]added"],
    ["tags", "undo", "{ds}", "--dry-run"],
]


def test_every_cli_command_shows_file_text_literally(hostile: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seen_markup = 0
    runs = [(a, False) for a in READING] + [(a, True) for a in READING]
    runs += [(a, json_too) for a in WRITING for json_too in (False, True)]
    for argv, as_json in runs:
        args = [a.format(ds=hostile) for a in argv] + (["--json"] if as_json else [])
        code, out, err = _run(capsys, *args)
        assert code in (0, 2) or (argv[1] in ("undo", "redo") and "nothing to" in err), (args, code, err)
        if not as_json:
            seen_markup += "[bold]" in out or "[/]" in out
            continue
        texts = _strings(json.loads(out)) if out.strip() else []
        names = [t for t in texts if any(n in t for n in _names()) or FOLDER in t]
        for text in names:  # exact, not "cleaned": the JSON holds the real names
            assert any(bit in text for bit in (CLEAR, BIDI, "\r", "[bold]", CLIPBOARD, ISOLATE, "[red on white]"))
    assert seen_markup >= 10  # the literal "[bold]" of names and tags in the tables: never eaten as markup


def test_json_keeps_every_name_exactly(hostile: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _code, out, _err = _run(capsys, "check", str(hostile), "--json")
    paths = {f["path"] for f in json.loads(out)["flags"]}
    assert f"{FOLDER}/{BIDI}broken.png" in paths
    assert f"{FOLDER}/{CLIPBOARD}orphan.txt" in paths
    assert "\\u202e" in out and "\\u001b" in out  # escaped in the document, exact once parsed
    _code, out, _err = _run(capsys, "tags", "stats", str(hostile), "--json")
    tags = {t["tag"] for t in json.loads(out)["frequencies"]["*"]["tags"]}
    assert "[bold]shared" in tags and f"tag{CLEAR.lower()}1" in tags  # tag keys are lower case


def test_error_messages_are_clean_too(hostile: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = _run(capsys, "tags", "stats", str(hostile / f"no{CLEAR}such"))
    assert code == 1 and "no\ufffd[2Jsuch" in err
    code, _out, err = _run(capsys, "tags", "stats", str(hostile), "--where", f"(tag:{CLEAR} OR")
    assert code == 1 and "bad query" in err


def _screen_clean(svg: str, where: str) -> None:
    found = RAW_CONTROL.search(svg.replace("\n", "").replace("\t", ""))
    assert found is None, f"{where}: raw {found.group()!r} reached the screen"


def test_the_tui_shows_file_text_literally(hostile: Path) -> None:
    import asyncio

    from tests.test_tui_workflows import make_app, wait_loaded

    async def run() -> None:
        app = make_app(hostile)
        async with app.run_test(size=(140, 40)) as pilot:
            await wait_loaded(pilot)
            seen_markup = False
            for key, view in (("1", "browser"), ("2", "tags"), ("3", "bulk"), ("4", "buckets"), ("5", "health")):
                await pilot.press(key)
                await pilot.pause(0.3)
                svg = app.export_screenshot()
                _screen_clean(svg, f"the {view} view")
                seen_markup |= "[bold]" in svg.replace("&#160;", " ")
            await pilot.press("1")
            for _ in range(len(_names())):  # every hostile name as the current image, in the details pane
                await pilot.press("down")
                await pilot.pause(0.05)
                _screen_clean(app.export_screenshot(), "the browser's details")
            assert seen_markup  # "[bold]" shown as written, not eaten as markup
            assert all(row.name for row in app.model.rows)

    asyncio.run(run())


@pytest.mark.slow  # trains a tiny model for two steps
def test_the_run_log_and_kiln_watch_show_file_text_literally(hostile: Path, tmp_path: Path, request,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_train_loop import tiny_models

    models = tiny_models(Path(request.config.cache.mkdir("kiln-tiny-models")), ("sd1",))
    sets = [f"model.path={models['sd1'] / 'diffusers'}", f"dataset.path={hostile}", "dataset.resolution=64",
            "dataset.min_bucket_reso=64", "dataset.max_bucket_reso=128", f"output.dir={tmp_path}",
            "output.name=hostile", "network.dim=4", "train.max_steps=2", "train.mixed_precision=no",
            "sample.enabled=false"]
    code, out, err = _run(capsys, "train", *[a for s in sets for a in ("--set", s)])  # the plain run log
    assert code == 0, err
    assert "broken.png" in out + err  # the broken file is named in the log, its bidi mark made harmless
    run = tmp_path / "hostile"
    for argv in (["watch", str(run), "--once"], ["watch", str(run), "--plain"], ["runs", str(tmp_path)],
                 ["runs", str(tmp_path), "--json"]):
        code, out, err = _run(capsys, *argv)
        assert code == 0, (argv, err)
