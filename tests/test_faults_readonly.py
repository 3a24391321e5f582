"""Read-only caption files and folders, a dataset on a read-only mount, files owned by another user.

Writes are denied for real: ``chmod a-w`` for a normal user, ``chattr +i`` for root (permission bits do not
stop root), a read-only bind mount in a private mount namespace (``unshare``) for EROFS, and a command run
as another user (``nobody``) for files owned by someone else. Where a method cannot be planted the test is
skipped with the reason.

Every case: the reading commands (scan, check, dupes, tags stats) work; an edit fails for exactly the denied
files, each with a clear reason, and changes nothing else (the other files get the edit, or nothing changes at
all where nothing may be written); no traceback.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from curator.dataset import Dataset
from tests.faults import REPO, deny_writes, read_only_mount_skip_reason, run_on_read_only_mount, snapshot
from tests.test_faults_disk_full import _after, build
from tui.cli import main

N_IMAGES = 6


@pytest.fixture()
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # where a read-only dataset's index goes
    return build(tmp_path / "ds", n=N_IMAGES)


def _kiln(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _reading_commands_work(capsys: pytest.CaptureFixture[str], root: Path) -> None:
    for argv in (["scan", str(root), "--no-progress", "--json"], ["check", str(root), "--json"],
                 ["dupes", str(root), "--json"], ["tags", "stats", str(root), "--json"]):
        code, out, err = _kiln(capsys, *argv)
        assert code == 0, (argv, err)
        assert "Traceback" not in err
        json.loads(out)


def test_read_only_caption_files(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = root / "10_ohwx woman"
    denied = [folder / "img001.txt", folder / "img004.txt"]
    before = snapshot(root)
    with deny_writes(*denied) as how:
        _reading_commands_work(capsys, root)
        code, out, err = _kiln(capsys, "tags", "replace", str(root), "long hair", "short hair", "--json")
    data = json.loads(out)
    assert code == 2 and "Traceback" not in err, err
    assert sorted(e["path"] for e in data["errors"]) == sorted(str(p) for p in denied), (how, data)
    assert all("read-only" in e["reason"] or "permission denied" in e["reason"] for e in data["errors"])
    now = snapshot(root)
    for rel, old in before.items():
        if rel.endswith(".txt"):
            expected = old if root / rel in denied else _after(old)
            assert now[rel] == expected, rel
        else:
            assert now[rel] == old
    assert not [n for n in os.listdir(folder) if n.startswith(".kiln-tmp-")]


def test_read_only_dataset_folder(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = root / "10_ohwx woman"
    before = snapshot(root)
    with deny_writes(root, folder):
        _reading_commands_work(capsys, root)
        code, out, err = _kiln(capsys, "tags", "replace", str(root), "long hair", "short hair", "--json")
        assert not (root / ".kiln").exists()  # the index went to the user cache
    data = json.loads(out)
    assert code == 2 and "Traceback" not in err
    assert len(data["errors"]) == N_IMAGES and not data["applied"]
    assert all("permission denied" in e["reason"] for e in data["errors"]), data["errors"]
    assert snapshot(root) == before


def test_dataset_on_a_read_only_mount(root: Path, tmp_path: Path) -> None:
    why = read_only_mount_skip_reason()
    if why:
        pytest.skip(why)
    with Dataset.open(root, quiet=True) as ds:  # indexed while writable: .kiln/ exists on the mount too
        ds.scan(progress=False)
    before = snapshot(root, skip_kiln=False)
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    kiln = [sys.executable, "-m", "tui.cli"]
    for argv in (["scan", str(root), "--json", "--no-progress"], ["check", str(root), "--json"],
                 ["tags", "stats", str(root), "--json"]):
        done = run_on_read_only_mount(root, kiln + argv, env)
        assert done.returncode == 0, done.stderr
        json.loads(done.stdout)
        assert "Traceback" not in done.stderr
    done = run_on_read_only_mount(root, [*kiln, "tags", "replace", str(root), "long hair", "short hair", "--json"],
                                  env)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    data = json.loads(done.stdout)
    assert len(data["errors"]) == N_IMAGES and not data["applied"]
    assert all("mounted read-only" in e["reason"] for e in data["errors"]), data["errors"]
    assert snapshot(root, skip_kiln=False) == before  # not a byte changed, the index included


def _nobody() -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user to own the files")
    return entry.pw_uid, entry.pw_gid


def test_files_owned_by_another_user(root: Path, tmp_path: Path) -> None:
    """Another user's files (nobody's, 0644) in a folder this user may write: renaming a copy over them would
    take them over, so kiln refuses them. Planted as root without the capabilities that override file
    permissions (setpriv), so the kernel really denies the writes."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("planting another user's files needs root (chown) and setpriv to drop CAP_DAC_OVERRIDE")
    uid, gid = _nobody()
    folder = root / "10_ohwx woman"
    theirs = [folder / "img000.txt", folder / "img003.txt"]
    for path in theirs:
        os.chown(path, uid, gid)
        path.chmod(0o644)
    before = snapshot(root)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", sys.executable, "-m", "tui.cli"]
    probe = subprocess.run([*argv[:3], "sh", "-c", f"echo x >> {shlex.quote(str(theirs[0]))}"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("dropping CAP_DAC_OVERRIDE did not stop writes here")
    scanned = subprocess.run([*argv, "scan", str(root), "--json", "--no-progress"], env=env, capture_output=True,
                             text=True, timeout=120, cwd=REPO)
    assert scanned.returncode == 0, scanned.stderr
    done = subprocess.run([*argv, "tags", "replace", str(root), "long hair", "short hair", "--json"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    data = json.loads(done.stdout)
    assert sorted(e["path"] for e in data["errors"]) == sorted(str(p) for p in theirs)
    assert all("belongs to nobody and is not writable by you" in e["reason"] for e in data["errors"]), data
    now = snapshot(root)
    for rel, old in before.items():
        expected = old if (root / rel) in theirs or not rel.endswith(".txt") else _after(old)
        assert now[rel] == expected, rel
    for path in theirs:  # still nobody's
        assert (path.stat().st_uid, path.stat().st_gid) == (uid, gid)


def test_root_editing_a_users_caption_keeps_its_owner(root: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")
    uid, gid = _nobody()
    target = root / "10_ohwx woman" / "img002.txt"
    os.chown(target, uid, gid)
    target.chmod(0o640)
    assert main(["tags", "replace", str(root), "long hair", "short hair"]) == 0
    st = target.stat()
    assert b"short hair" in target.read_bytes()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (uid, gid, 0o640)
