"""Issue 18, item 8: the CLI as a newcomer meets it: typos, an empty folder, symlink loops, output to a file,
cut listings and empty results, help texts, and options that mean the same everywhere."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import copy_sample, photo, save_photo, write_caption
from tui.cli import build_parser, main

REPO = Path(__file__).resolve().parent.parent


def kiln(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse errors
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_mistyped_command_names_the_nearest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = kiln(capsys, "scna", str(tmp_path))
    assert code == 2 and "unknown command 'scna'; did you mean 'kiln scan'?" in err
    assert "unrecognized arguments" not in err
    code, _, err = kiln(capsys, "tags", "stast", str(tmp_path))
    assert code == 2 and "did you mean 'stats'?" in err
    code, _, err = kiln(capsys, "buckets", str(tmp_path), "--json", "--limt", "3")
    assert code == 2 and "--limt" in err
    code, _, err = kiln(capsys, "qqqqq")
    assert code == 2 and "neither a command nor a dataset folder" in err and "scan" in err
    code, _, err = kiln(capsys, str(tmp_path / "missing"))  # a path: the curator says it is not there
    assert code == 1 and "no such dataset folder" in err


@pytest.mark.parametrize("command", [["scan"], ["check"], ["dupes"], ["buckets"], ["tags", "stats"],
                                     ["tags", "add", "_DATASET_", "x"]])
def test_a_folder_without_images_warns_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          command: list[str]) -> None:
    empty = tmp_path / "empty"
    (empty / "10_char").mkdir(parents=True)
    (empty / "notes.txt").write_text("not an image\n")
    argv = [part.replace("_DATASET_", str(empty)) for part in command]
    if "_DATASET_" not in command:
        argv.append(str(empty))
    code, _, err = kiln(capsys, *argv)
    assert code == 1 and "no images" in err and "10_char/" in err and "nothing was written" in err
    assert not (empty / ".kiln").exists()


def test_symlink_loops_are_reported_not_hidden(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ds"
    save_photo(photo("coffee.png", (512, 512)), root / "10_cup" / "cup.png")
    write_caption(root / "10_cup" / "cup.txt", "cup\n")
    (root / "10_cup" / "loop.png").symlink_to("loop.png")  # points at itself
    (root / "5_round").symlink_to("5_round")
    code, out, err = kiln(capsys, "scan", str(root), "--no-progress")
    assert code == 0
    assert "skipped (a symbolic link loop): 10_cup/loop.png" in out
    assert "5_round/: a symbolic link loop" in err
    code, out, err = kiln(capsys, "check", str(root), "--no-progress", "--json")
    assert code == 0 and "skipped 10_cup/loop.png: a symbolic link loop" in err
    code, out, _ = kiln(capsys, "scan", str(root), "--json")
    assert '"reason": "a symbolic link loop"' in out


def test_dupes_into_a_file_keeps_every_path_whole(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    folder = "10_" + "a very long concept folder name that goes on and on " * 2
    image = photo("astronaut.png", (512, 512))
    save_photo(image, root / folder / "original_with_a_long_file_name.png")
    save_photo(image, root / folder / "copy_of_the_original_with_a_long_file_name.png")
    out_file = tmp_path / "dupes.txt"
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["PYTHONPATH"] = str(REPO)
    with out_file.open("w") as handle:
        done = subprocess.run([sys.executable, "-m", "tui.cli", "dupes", str(root), "--no-progress"], stdout=handle,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    text = out_file.read_text()
    assert f"{folder}/original_with_a_long_file_name.png" in text
    assert f"{folder}/copy_of_the_original_with_a_long_file_name.png" in text
    assert "…" not in text


def test_cut_listings_and_empty_results_say_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = str(copy_sample(tmp_path / "sample"))
    code, out, _ = kiln(capsys, "tags", "stats", sample, "--limit", "2")
    assert code == 0 and "more tag(s) not shown (--limit 0 shows them all)" in out
    assert kiln(capsys, "tags", "stats", sample, "--top", "2")[1] == out  # the old spelling still works
    code, out, _ = kiln(capsys, "tags", "stats", sample, "--limit", "0")
    assert "not shown" not in out
    code, _, err = kiln(capsys, "tags", "add", sample, "x", "--where", "tag:nosuchtag")
    assert code == 1 and "no image matches --where 'tag:nosuchtag' (0 of 23 images)" in err
    code, out, _ = kiln(capsys, "tags", "add", sample, "kilnsample", "--where", "tag:kilnsample")
    assert code == 0 and "no caption needs changing in the" in out
    code, out, _ = kiln(capsys, "tags", "stats", sample, "--tag", "nosuchtag")
    assert "no image in scope has the tag 'nosuchtag'" in out
    code, out, _ = kiln(capsys, "buckets", sample, "--limit", "1")
    assert "more (--limit 0 lists them all)" in out
    assert kiln(capsys, "buckets", sample, "--all")[1] == kiln(capsys, "buckets", sample, "--limit", "0")[1]
    for n in range(3):
        assert kiln(capsys, "tags", "add", sample, f"t{n}", "--where", "name:cat.jpg")[0] == 0
    code, out, _ = kiln(capsys, "tags", "history", sample, "--limit", "2")
    assert "1 older entry not shown (--limit 0 shows them all)" in out
    code, out, _ = kiln(capsys, "tags", "history", sample, "--limit", "0")
    assert "not shown" not in out and out.count("add 't") == 3


# ------------------------------------------------------------------------------------------ help texts


def every_parser() -> list[tuple[str, argparse.ArgumentParser]]:
    found: list[tuple[str, argparse.ArgumentParser]] = []

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in action.choices.items():
                    walk(child, f"{name} {sub}")
                return
        found.append((name, parser))

    walk(build_parser(), "kiln")
    return found


def shown_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS
            and not isinstance(a, argparse._HelpAction | argparse._VersionAction)]


def test_every_option_says_its_default() -> None:
    flags = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction)
    missing = [f"{name} {'/'.join(a.option_strings)}" for name, parser in every_parser() for a in shown_options(parser)
               if not isinstance(a, flags) and not a.required and "default" not in (a.help or "").lower()]
    assert not missing, missing


SAME_EVERYWHERE = ("--caption-extension", "--no-progress", "--resolution", "--min-bucket", "--max-bucket", "--step",
                   "--no-upscale", "--train-config", "--where", "--workers", "--threshold", "--num-processes",
                   "--allow-pickle", "--files", "--config-dir")
SAME_MEANING = {"--json": "JSON", "--set": "override a config key", "--limit": "0 = all",
                "--batch-size": "train batch size", "--device": "(default auto", "--force": "refused without --force",
                "--dry-run": "change nothing"}
RENAMED = {  # command -> (new option, old spelling kept as a hidden alias)
    "kiln tags stats": ("--limit", "--top"),
    "kiln buckets": ("--limit", "--all"),
    "kiln lora info": ("--limit", "--top-tags"),
    "kiln autotag": ("--threads", "--workers"),
    "kiln autotag ": ("--tagger-batch", "--batch-size"),
    "kiln caption": ("--caption-batch", "--batch-size"),
    "kiln train": ("--no-progress", "--quiet"),
    "kiln lora grid": ("--no-progress", "--quiet"),
}


def test_an_option_has_one_name_and_one_meaning() -> None:
    helps: dict[str, set[str]] = {}
    for _name, parser in every_parser():
        for action in shown_options(parser):
            for option in action.option_strings:
                helps.setdefault(option, set()).add(action.help or "")
    differing = {o: h for o, h in helps.items() if o in SAME_EVERYWHERE and len(h) > 1}
    assert not differing, differing
    for option, meaning in SAME_MEANING.items():  # worded for each command, one meaning
        assert all(meaning in h for h in helps[option]), (option, helps[option])
    parsers = dict(every_parser())
    for command, (new, old) in RENAMED.items():
        parser = parsers[command.strip()]
        new_action = next(a for a in parser._actions if new in a.option_strings)
        old_action = next(a for a in parser._actions if old in a.option_strings)
        assert old_action.help == argparse.SUPPRESS and old_action.dest == new_action.dest, command
        assert old not in parser.format_help()


def test_a_non_utf8_tag_is_shown_by_its_byte_everywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from curator.textsafe import printable

    sample = copy_sample(tmp_path / "sample")
    cat = next(sample.rglob("cat.txt"))
    cat.write_bytes(b"caf\xe9, kilnsample")
    code, out, _ = kiln(capsys, "tags", "stats", str(sample), "--limit", "0")
    assert code == 0 and "caf\\xe9" in out and "\ufffd" not in out
    code, out, _ = kiln(capsys, "tags", "remove", str(sample), "caf*", "--dry-run")
    assert code == 0 and "- caf\\xe9, kilnsample" in out
    assert cat.read_bytes() == b"caf\xe9, kilnsample"  # a dry run
    code, out, _ = kiln(capsys, "tags", "stats", str(sample), "--json", "--limit", "0")
    assert code == 0 and '"caf\\udce9"' in out  # an escape: the document stays UTF-8 and parses back exactly
    import json

    assert "caf\udce9" in {t["tag"] for t in json.loads(out)["frequencies"]["*"]["tags"]}
    assert printable(b"caf\xe9".decode("utf-8", "surrogateescape")) == "caf\\xe9"
    assert printable("lone \ud800 surrogate") == "lone \ufffd surrogate"  # no terminal can show it
