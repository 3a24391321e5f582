"""The tests never depend on what a previous run left in the repository's sample dataset (issue 18, item 7).

``make run`` opens kiln on a working copy (``build/sample-dataset``), and every test copies the sample through
``tests.conftest.copy_sample``, which leaves kiln's state (``.kiln/``: index, journal, trash) behind.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from curator.cli import buckets as buckets_cli
from tests.conftest import SAMPLE, copy_sample
from tui.cli import main as kiln

REPO = Path(__file__).resolve().parent.parent


def files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_a_used_sample_copies_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    used = tmp_path / "used"
    shutil.copytree(SAMPLE, used)
    assert kiln(["scan", str(used), "--no-progress"]) == 0  # what `kiln examples/dataset` leaves: .kiln/
    assert (used / ".kiln" / "index.sqlite").is_file()
    copy = copy_sample(tmp_path / "copy", source=used)
    assert not (copy / ".kiln").exists()
    assert files(copy) == [f for f in files(SAMPLE) if not f.startswith(".kiln/")]
    # the check that failed after `make run`: bad bucket options create nothing, not even .kiln/
    capsys.readouterr()
    import argparse

    parser = argparse.ArgumentParser(prog="kiln")
    buckets_cli.register(parser.add_subparsers())
    args = parser.parse_args(["buckets", str(copy), "--resolution", "1000"])
    assert args.func(args) == 1
    assert not (copy / ".kiln").exists()


def test_make_run_opens_a_working_copy_of_the_sample() -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "-n", "run"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    kiln_lines = [line for line in out.splitlines() if "bin/kiln " in line]
    assert kiln_lines and all("examples/dataset" not in line for line in kiln_lines), out
    assert "build/sample-dataset" in kiln_lines[-1]
    assert any("cp -R examples/dataset" in line for line in out.splitlines()), out


def test_the_readme_says_where_kiln_is_and_how_long_set_up_takes() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    setup = readme[readme.index("## Set up"):readme.index("## Use")]
    make = (REPO / "Makefile").read_text(encoding="utf-8")
    sample = next(line.split(":=")[1].strip() for line in make.splitlines() if line.startswith("SAMPLE"))
    assert sample in setup and "examples/dataset)" not in setup  # what make run opens, as the Makefile has it
    assert ".venv/bin/kiln" in setup and "source .venv/bin/activate" in setup
    assert "minutes" in setup and "GB" in setup  # how long set-up and the tests take
