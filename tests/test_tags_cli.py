"""``kiln tags ...``: exit codes, --dry-run, --json, --where / --files scoping, undo/redo/history."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from skimage import data as skdata

from tui.cli import main

REPO = Path(__file__).resolve().parents[1]
CAPTIONS = {
    "10_ohwx woman/a": b"1girl, long hair, smile\n",
    "10_ohwx woman/b": b"1girl, short hair\n",
    "3_style/c": b"landscape, tree, long hair\n",
}


@pytest.fixture()
def ds(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    for n, (key, raw) in enumerate(CAPTIONS.items()):
        folder, stem = key.split("/")
        (root / folder).mkdir(parents=True, exist_ok=True)
        photo = (skdata.astronaut, skdata.chelsea, skdata.coffee)[n]()
        Image.fromarray(photo).resize((64, 64)).save(root / folder / f"{stem}.png")
        (root / folder / f"{stem}.txt").write_bytes(raw)
    return root


def captions(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.glob("*/*.txt"))}


def kiln(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_dry_run_changes_nothing_and_prints_diff(ds: Path, capsys) -> None:
    before = captions(ds)
    code, out, _ = kiln(capsys, "tags", "replace", str(ds), "long hair", "very long hair", "--dry-run")
    assert code == 0
    assert "10_ohwx woman/a.txt" in out and "3_style/c.txt" in out and "2 caption file(s) would change" in out
    assert captions(ds) == before
    code, out, _ = kiln(capsys, "tags", "add", str(ds), "solo", "--front", "--dry-run", "--json")
    data = json.loads(out)
    assert code == 0 and data["dry_run"] and data["files"] == 3
    assert data["diff"][0]["added"] == ["solo"]
    assert captions(ds) == before


def test_apply_undo_redo_history_across_processes(ds: Path, capsys) -> None:
    before = captions(ds)
    code, out, _ = kiln(
        capsys, "tags", "replace", str(ds), "long hair", "very long hair", "--where", "folder:10_*", "--json"
    )
    data = json.loads(out)
    assert code == 0 and len(data["applied"]) == 1 and data["conflicts"] == []
    assert captions(ds)["10_ohwx woman/a.txt"] == b"1girl, very long hair, smile\n"
    assert captions(ds)["3_style/c.txt"] == before["3_style/c.txt"]
    code, out, _ = kiln(capsys, "tags", "history", str(ds), "--json")
    assert code == 0 and json.loads(out)[0]["state"] == "applied"

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    undo = subprocess.run(
        [sys.executable, "-m", "tui.cli", "tags", "undo", str(ds)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert undo.returncode == 0, undo.stderr
    assert captions(ds) == before
    code, _, err = kiln(capsys, "tags", "undo", str(ds))
    assert code == 1 and "nothing to undo" in err
    code, _, _ = kiln(capsys, "tags", "redo", str(ds))
    assert code == 0 and captions(ds)["10_ohwx woman/a.txt"] == b"1girl, very long hair, smile\n"
    code, out, _ = kiln(capsys, "tags", "history", str(ds), "--show", "1")
    assert code == 0 and "very long hair" in out


def test_bad_query_and_bad_regex_exit_1_with_reason(ds: Path, capsys) -> None:
    before = captions(ds)
    code, _, err = kiln(capsys, "tags", "remove", str(ds), "smile", "--where", "tag:a AND (tag:b")
    assert code == 1 and "bad query" in err and "missing ')'" in err
    assert err.splitlines()[-1].index("^") == len("  tag:a AND (tag:b")
    code, _, err = kiln(capsys, "tags", "replace", str(ds), "(", "x", "--regex")
    assert code == 1 and "bad regular expression" in err
    code, _, err = kiln(capsys, "tags", "stats", str(ds / "missing"))
    assert code == 1 and "no such dataset" in err
    code, _, err = kiln(capsys, "tags", "remove", str(ds), "smile", "--files", "nope.png")
    assert code == 1 and "not an image or caption" in err
    assert captions(ds) == before


def test_bucket_query_on_a_toml_kohya_refuses_says_why(ds: Path, tmp_path: Path, capsys) -> None:
    """A dataset TOML whose resolution is not a multiple of its bucket step: `bucket:` cannot be worked out,
    so `kiln tags` stops with the reason (no traceback) and changes nothing."""
    toml = tmp_path / "ds.toml"
    toml.write_text(
        f'[general]\nresolution = 700\nbucket_reso_steps = 64\n[[datasets]]\n[[datasets.subsets]]\n'
        f'image_dir = "{(ds / "10_ohwx woman").as_posix()}"\ncaption_extension = ".txt"\n'
    )
    before = captions(ds)
    code, _, err = kiln(capsys, "tags", "add", str(toml), "x", "--where", "bucket:640x640")
    assert code == 1 and "bucket:" in err and "not a multiple of bucket_reso_steps 64" in err and "Traceback" not in err
    assert captions(ds) == before


def test_a_file_edited_meanwhile_is_merged_not_overwritten(ds: Path, capsys, monkeypatch) -> None:
    import curator.tags.journal as journal_mod

    target = ds / "10_ohwx woman/a.txt"
    original_apply = journal_mod.Journal.apply

    def edit_then_apply(self, changes, op, description, rebase=None):
        target.write_bytes(b"edited by another program\n")  # between kiln reading and writing
        return original_apply(self, changes, op, description, rebase)

    monkeypatch.setattr(journal_mod.Journal, "apply", edit_then_apply)
    code, out, _ = kiln(capsys, "tags", "add", str(ds), "solo")
    assert code == 0 and "merged: 1 caption file(s)" in out
    assert target.read_bytes() == b"edited by another program, solo\n"  # both edits kept
    assert captions(ds)["10_ohwx woman/b.txt"] == b"1girl, short hair, solo\n"
    monkeypatch.undo()
    assert kiln(capsys, "tags", "undo", str(ds))[0] == 0  # one entry: undo reverts to the other program's text
    assert target.read_bytes() == b"edited by another program\n"


def test_conflict_exits_2_and_lists_the_file(ds: Path, capsys) -> None:
    target = ds / "10_ohwx woman/a.txt"
    assert kiln(capsys, "tags", "add", str(ds), "solo")[0] == 0
    target.write_bytes(b"edited by another program\n")  # after kiln wrote it: undo must not clobber it
    code, out, _ = kiln(capsys, "tags", "undo", str(ds))
    assert code == 2 and "conflict" in out and "10_ohwx woman/a.txt" in out
    assert target.read_bytes() == b"edited by another program\n"
    assert captions(ds)["10_ohwx woman/b.txt"] == b"1girl, short hair\n"


def test_files_scope_trigger_keep_tokens_and_stats(ds: Path, capsys) -> None:
    code, out, _ = kiln(
        capsys, "tags", "trigger", str(ds), "--files", str(ds / "10_ohwx woman/a.png"), "--json"
    )
    data = json.loads(out)
    assert code == 0 and data["keep_tokens"] == 1 and data["trigger"] == {"10_ohwx woman": ["ohwx woman"]}
    assert captions(ds)["10_ohwx woman/a.txt"] == b"ohwx woman, 1girl, long hair, smile\n"
    assert captions(ds)["10_ohwx woman/b.txt"] == b"1girl, short hair\n"

    code, out, _ = kiln(capsys, "tags", "stats", str(ds), "--by-folder", "--json")
    freq = json.loads(out)["frequencies"]
    assert code == 0 and {t["tag"]: t["count"] for t in freq["10_ohwx woman"]["tags"]}["1girl"] == 2
    code, out, _ = kiln(capsys, "tags", "stats", str(ds), "--tag", "long hair", "--tokens", "--json")
    data = json.loads(out)
    assert data["cooccurrence"]["with"] == 2 and data["tokens"]["summary"]["captions"] == 3
    code, out, _ = kiln(capsys, "tags", "stats", str(ds))
    assert code == 0 and "long hair" in out

    code, out, _ = kiln(capsys, "tags", "absorb", str(ds), "--min-share", "1.0", "--where", "folder:10_*")
    assert code == 0 and "1girl" in out
    code, out, _ = kiln(capsys, "tags", "absorb", str(ds), "--apply", "1girl", "--where", "folder:10_*")
    assert code == 0 and b"1girl" not in captions(ds)["10_ohwx woman/b.txt"]
    for cmd in (
        ["sort", "--by", "freq", "--keep", "1"],
        ["dedupe"],
        ["normalize", "--lower"],
        ["consolidate", "--suffix-heuristic"],
    ):
        code, _, err = kiln(capsys, "tags", cmd[0], str(ds), *cmd[1:])
        assert code == 0, (cmd, err)


def test_undo_dry_run_and_prune(ds: Path, capsys) -> None:
    kiln(capsys, "tags", "remove", str(ds), "smile")
    after = captions(ds)
    code, out, _ = kiln(capsys, "tags", "undo", str(ds), "--dry-run")
    assert code == 0 and "would revert #1" in out and "smile" in out and "nothing written" in out
    assert captions(ds) == after
    code, out, _ = kiln(capsys, "tags", "undo", str(ds), "--dry-run", "--json")
    assert json.loads(out)["diff"][0]["added"] == ["smile"]
    code, out, _ = kiln(capsys, "tags", "history", str(ds), "--prune", "0", "--dry-run")
    assert code == 0 and "would forget 1 of 1" in out
    code, out, _ = kiln(capsys, "tags", "history", str(ds), "--prune", "0")
    assert code == 0 and "forgot 1 journal entry" in out
    code, _, err = kiln(capsys, "tags", "undo", str(ds))
    assert code == 1 and "nothing to undo" in err
