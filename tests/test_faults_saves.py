"""Saved files under SIGKILL and a full disk: a LoRA save, a training-state save, ``kiln lora merge`` output.

* Killed at a random moment (50 trials each, a forked child saving version after version): every
  ``*.safetensors`` in the folder loads completely and holds exactly the version its metadata names; the
  state a resume picks (:func:`train.state.latest_state`) loads and is one save's, never a half one.
  (``kiln lora extract`` writes with the LoRA writer tested here; ``merge`` streams through ``atomic_write_with``.)
* Disk full at every write of a save (the ``os``-level injector, any user) and on a real small tmpfs (root):
  the previous file or state is byte-identical, nothing half-written is left, and the error is one
  :class:`curator.faults.DiskFullError` naming the disk's mount point and the space needed.
* A real ``kiln train`` SIGKILLed after its saves began: ``--resume`` continues from the newest complete state.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curator.faults import DiskFullError, mount_point
from tests.faults import REPO, WriteFaults, kill_trials, planted, timed, tiny_disk
from tests.model_fixtures import models_cache, tiny_sd1  # noqa: F401 (fixtures)

TRIALS = 50


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: forked children must not inherit a thread pool (and the tiny saves are faster)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _leftovers_ok(folder: Path, names: set[str]) -> None:
    """After a kill: the saved files, and temporary names (kiln's ``.kiln-tmp-*``, safetensors' own
    ``.tmpXXXXXX``) that are never taken for a LoRA: none ends in ``.safetensors``."""
    for name in os.listdir(folder):
        assert name in names or (name.startswith((".kiln-tmp-", ".tmp")) and not name.endswith(".safetensors")), name


def _tensors(version: int, n: int = 16, side: int = 48) -> dict:
    import torch

    return {f"lora_unet_block_{i}.lora_down.weight": torch.full((side, side), float(version)) for i in range(n)}


def _check_lora_folder(folder: Path) -> list[int]:
    """Every LoRA file in ``folder`` loads whole and holds the version its metadata says; returns them."""
    from safetensors import safe_open

    versions = []
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), "pt") as fh:
            version = int(fh.metadata()["version"])
            for key in fh.keys():  # noqa: SIM118 - safe_open has no __iter__
                assert bool((fh.get_tensor(key) == version).all()), f"{path.name}: a tensor of another save"
        versions.append(version)
    return versions


def test_lora_save_killed_at_random_moments(tmp_path: Path) -> None:
    from train.network.save import save_kohya

    folder = tmp_path / "run"
    folder.mkdir()

    def saves() -> None:
        for version in range(1, 10_000):
            tensors = _tensors(version)
            save_kohya(folder / "lora.safetensors", tensors, "fp32", {"version": str(version)})  # overwritten
            save_kohya(folder / f"lora-step{version:08d}.safetensors", tensors, "fp32", {"version": str(version)})

    save_kohya(tmp_path / "warm.safetensors", _tensors(0), "fp32", {"version": "0"})  # imports done before timing
    def three_versions() -> None:
        for v in range(3):
            save_kohya(tmp_path / "probe.safetensors", _tensors(v), "fp32", {"version": "0"})
            save_kohya(tmp_path / f"probe{v}.safetensors", _tensors(v), "fp32", {"version": "0"})

    span = 1.5 * timed(three_versions)  # kills land anywhere in the first four or so versions
    seen: set[int] = set()
    saved_in = [0]

    def check(_i: int) -> None:
        versions = _check_lora_folder(folder)
        seen.update(versions)
        saved_in[0] += bool(versions)
        steps = sorted(int(p.name[9:17]) for p in folder.glob("lora-step*.safetensors"))
        if (folder / "lora.safetensors").exists():  # the overwritten file is the newest or the one before
            assert _check_lora_folder_one(folder / "lora.safetensors") >= (steps[-1] if steps else 1)
        _leftovers_ok(folder, {p.name for p in folder.glob("*.safetensors")})
        shutil.rmtree(folder)
        folder.mkdir()

    report = kill_trials(lambda _i: None, saves, check, TRIALS, span)
    assert report.trials == TRIALS and report.killed == TRIALS and len(seen) >= 2
    assert saved_in[0] >= TRIALS // 5  # kills landed after some saves: the checks saw real files (fewer under load)


def _check_lora_folder_one(path: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        return int(fh.metadata()["version"])


def _state_objects(value: float):
    import torch

    net = torch.nn.Sequential(torch.nn.Linear(128, 128), torch.nn.Linear(128, 128))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(value)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.ones(1, 128)).sum().backward()
    opt.step()
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(value)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return net, opt, sched


def test_state_save_killed_at_random_moments(tmp_path: Path) -> None:
    import torch

    from train.state import Progress, latest_state, load_state, save_state

    run = tmp_path / "run"
    net, opt, sched = _state_objects(0.0)

    def saves() -> None:
        for step in range(1, 10_000):
            with torch.no_grad():
                for p in net.parameters():
                    p.fill_(float(step))
            save_state(run / "state", network=net, optimizer=opt, scheduler=sched, scaler=None,
                       progress=Progress(step=step, total_steps=10_000))

    save_state(tmp_path / "warm" / "state", network=net, optimizer=opt, scheduler=sched, scaler=None,
               progress=Progress(step=0))
    span = 4 * timed(lambda: save_state(tmp_path / "probe" / "state", network=net, optimizer=opt, scheduler=sched,
                                        scaler=None, progress=Progress(step=0)))
    picked: list[str] = []

    def check(_i: int) -> None:
        state = latest_state(run)
        if state is None:  # killed before the first save completed
            assert not (run / "state").exists()
        else:
            picked.append(state.name)
            fresh, fresh_opt, fresh_sched = _state_objects(-1.0)
            progress = load_state(state, network=fresh, optimizer=fresh_opt, scheduler=fresh_sched, scaler=None)
            values = {float(p.detach().flatten()[0]) for p in fresh.parameters()}
            assert values == {float(progress.step)}, (state, progress.step, values)  # one save's, never mixed
            assert (state / "COMPLETE").read_text().strip() == str(progress.step)
        shutil.rmtree(run, ignore_errors=True)

    report = kill_trials(lambda _i: None, saves, check, TRIALS, span, seed=7)
    assert report.trials == TRIALS and report.killed == TRIALS
    assert len(picked) >= TRIALS // 5 and "state" in picked  # most kills land after a first save (fewer under load)


def test_merge_output_killed_at_random_moments(tmp_path: Path) -> None:
    from train.lora.files import save_safetensors

    out = tmp_path / "out"
    out.mkdir()

    def saves() -> None:
        for version in range(1, 10_000):
            save_safetensors(out / "merged.safetensors", _tensors(version, n=48), {"version": str(version)})

    save_safetensors(tmp_path / "warm.safetensors", _tensors(0, n=48), {"version": "0"})
    span = 1.5 * timed(lambda: [save_safetensors(tmp_path / "probe.safetensors", _tensors(v, n=48), {"version": "0"})
                                for v in range(3)])
    outputs = [0]

    def check(_i: int) -> None:
        versions = _check_lora_folder(out)
        assert len(versions) <= 1  # the one output, whole (or not there yet)
        outputs[0] += bool(versions)
        _leftovers_ok(out, {"merged.safetensors"})
        shutil.rmtree(out)
        out.mkdir()

    report = kill_trials(lambda _i: None, saves, check, TRIALS, span, seed=3)
    assert report.trials == TRIALS and report.killed == TRIALS and outputs[0] >= TRIALS // 5  # fewer under load


# ---- a full disk -------------------------------------------------------------------------------------------


def _assert_disk_message(exc: DiskFullError, where: Path) -> None:
    text = str(exc)
    assert exc.mount == mount_point(where) and f"no space left on {exc.mount}" in text and "needs" in text


def test_lora_save_enospc_at_every_write(tmp_path: Path) -> None:
    from train.network.save import save_kohya

    path = tmp_path / "lora.safetensors"
    save_kohya(path, _tensors(1), "fp16", {"version": "1"})
    before = path.read_bytes()
    counter = WriteFaults(only=str(tmp_path))
    with counter.installed():
        save_kohya(tmp_path / "count.safetensors", _tensors(2), "fp16", {"version": "2"})
    (tmp_path / "count.safetensors").unlink()
    assert len(counter.calls) >= 3
    for n in range(len(counter.calls)):
        faults = WriteFaults(fail_at=n, only=str(tmp_path))
        failed: DiskFullError | None = None
        with faults.installed():
            try:
                save_kohya(path, _tensors(2), "fp16", {"version": "2"})
            except DiskFullError as exc:
                failed = exc
        if failed is not None:
            _assert_disk_message(failed, tmp_path)
            assert path.read_bytes() == before  # the previous save, byte for byte
        else:
            assert not faults.planted or faults.calls[n][0] == "fsync"  # a folder's fsync may fail unnoticed
            assert _check_lora_folder_one(path) == 2
            save_kohya(path, _tensors(1), "fp16", {"version": "1"})
            before = path.read_bytes()
        assert sorted(os.listdir(tmp_path)) == ["lora.safetensors"]


def test_state_save_enospc_at_every_write(tmp_path: Path) -> None:
    from train.state import Progress, latest_state, load_progress, save_state

    net, opt, sched = _state_objects(1.0)
    state = tmp_path / "run" / "state"
    save_state(state, network=net, optimizer=opt, scheduler=sched, scaler=None, progress=Progress(step=1))
    before = {p.name: p.read_bytes() for p in state.iterdir()}
    counter = WriteFaults(only=str(tmp_path))
    with counter.installed():
        save_state(tmp_path / "count" / "state", network=net, optimizer=opt, scheduler=sched, scaler=None,
                   progress=Progress(step=2))
    assert len(counter.calls) >= 12  # a file, its bytes and its fsync for each part
    for n in range(len(counter.calls)):
        faults = WriteFaults(fail_at=n, only=str(tmp_path / "run"))
        failed: DiskFullError | None = None
        with faults.installed():
            try:
                save_state(state, network=net, optimizer=opt, scheduler=sched, scaler=None,
                           progress=Progress(step=2))
            except DiskFullError as exc:
                failed = exc
        if failed is not None:
            _assert_disk_message(failed, tmp_path)
            assert "the previous state/ is kept" in str(failed)
            assert {p.name: p.read_bytes() for p in state.iterdir()} == before
        else:  # no fault planted (the swap is one uncounted syscall), or only a folder's fsync failed
            assert not faults.planted or faults.calls[n][0] == "fsync"
            assert load_progress(state).step == 2
            save_state(state, network=net, optimizer=opt, scheduler=sched, scaler=None, progress=Progress(step=1))
            before = {p.name: p.read_bytes() for p in state.iterdir()}
        assert latest_state(tmp_path / "run") == state and load_progress(state).step == 1
        assert sorted(os.listdir(tmp_path / "run")) == ["state"]


def test_saves_on_a_real_full_disk(tmp_path: Path) -> None:
    from train.lora.files import save_safetensors
    from train.network.save import save_kohya
    from train.state import Progress, latest_state, load_progress, save_state

    net, opt, sched = _state_objects(1.0)
    with tiny_disk(tmp_path / "disk", "4m") as disk:
        run = disk.path / "run"
        save_kohya(run / "lora.safetensors", _tensors(1), "fp32", {"version": "1"})
        save_state(run / "state", network=net, optimizer=opt, scheduler=sched, scaler=None, progress=Progress(step=1))
        save_safetensors(run / "merged.safetensors", _tensors(1), {"version": "1"})
        before = {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*") if p.is_file()}
        trials = 0
        for free in range(0, 1 << 20, 32 * 1024):  # from nothing free to more than any save needs
            disk.fill(free)
            for save in (
                lambda: save_kohya(run / "lora.safetensors", _tensors(2), "fp32", {"version": "2"}),
                lambda: save_state(run / "state", network=net, optimizer=opt, scheduler=sched, scaler=None,
                                   progress=Progress(step=2)),
                lambda: save_safetensors(run / "merged.safetensors", _tensors(2), {"version": "2"}),  # merge's
            ):
                trials += 1
                try:
                    save()
                except DiskFullError as exc:
                    _assert_disk_message(exc, disk.path)
            disk.unfill()
            now = {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*") if p.is_file()}
            for name in now:  # each file is the old save or the new one, whole
                if name.endswith(".safetensors") and "/" not in name:
                    assert _check_lora_folder_one(run / name) in (1, 2)
            assert set(now) == set(before)  # no temporary file or half folder left
            state = latest_state(run)
            assert state is not None and load_progress(state).step in (1, 2)
            if all(_check_lora_folder_one(run / n) == 2 for n in ("lora.safetensors", "merged.safetensors")) \
                    and load_progress(state).step == 2:
                break
        assert trials >= 6


@pytest.mark.slow  # a real trainer process on a tiny model, then a resume
def test_killed_training_resumes_from_the_newest_complete_state(tmp_path: Path, request, capsys) -> None:
    """A real ``kiln train`` process SIGKILLed while it saves every step; ``--resume`` finishes the run from
    whichever state was complete."""
    from tests.test_train_loop import make_dataset, tiny_models
    from train.rundir import read_events
    from train.state import latest_state, load_progress

    models = tiny_models(Path(request.config.cache.mkdir("kiln-tiny-models")), ("sd1",))
    data = make_dataset(tmp_path / "data", broken=False)
    overrides = [f"model.path={models['sd1'] / 'diffusers'}", f"dataset.path={data}", "dataset.resolution=64",
                 "dataset.min_bucket_reso=64", "dataset.max_bucket_reso=128", f"output.dir={tmp_path}",
                 "output.name=killed", "network.dim=4", "train.max_steps=6", "train.mixed_precision=no",
                 "sample.enabled=false", "output.save_every_n_steps=1", "output.save_state=true"]
    argv = [sys.executable, "-m", "tui.cli", "train", *[a for o in overrides for a in ("--set", o)]]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = tmp_path / "killed"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        saves = [e for e in read_events(run) if e["type"] == "save" and e.get("kind") == "state"] \
            if (run / "events.jsonl").exists() else []
        if len(saves) >= 2:
            break
        time.sleep(0.01)
    time.sleep(0.05)  # inside the next step or save
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    planted("SIGKILL of a real kiln train")
    state = latest_state(run)
    assert state is not None
    done = load_progress(state).step
    assert 2 <= done < 6
    if state.name == "state":  # also plant the rarer outcome: a kill between a save's two renames (state.old/)
        state.rename(run / "state.old")
    half = run / "state.tmp"  # and a save killed while writing: newer, but without its COMPLETE marker
    shutil.rmtree(half, ignore_errors=True)
    shutil.copytree(run / "state.old", half)
    (half / "COMPLETE").unlink()
    (half / "trainer.json").write_text((half / "trainer.json").read_text().replace(f'"step": {done}', '"step": 5'))
    from tui.cli import main

    code = main(["train", "--resume", str(run), "--quiet"])  # what the user types: the plan, then the loop
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"step {done} of 6" in out and "continuing from state.old/" in out
    events = list(read_events(run))
    assert [e["resumed_step"] for e in events if e["type"] == "start"][-1] == done
    assert events[-1]["type"] == "end" and events[-1]["reason"] == "finished" and events[-1]["step"] == 6
    assert (run / "killed.safetensors").is_file()


@pytest.mark.parametrize("command", ["merge", "extract"])
def test_lora_tool_output_on_a_full_disk(tiny_sd1, tmp_path: Path, capsys, command: str) -> None:
    """``kiln lora merge --into`` (a whole checkpoint) and ``kiln lora extract`` onto a full disk: one line
    naming the disk and the space needed; the previous output (replaced with --force) byte-identical."""
    from tests.test_lora_tools import _tuned_copy, lora_file
    from train.models.tiny import build_tiny
    from train.network import NetworkConfig
    from tui.cli import main

    _model, paths = tiny_sd1
    lora, _net = lora_file(tmp_path / "a.safetensors", "sd1", build_tiny("sd1", seed=1234), NetworkConfig(dim=4, alpha=4))
    with tiny_disk(tmp_path / "disk", "64m") as disk:
        out = disk.path / "out.safetensors"
        if command == "merge":
            argv = ["lora", "merge", "--into", str(paths.single_file), str(lora), "--device", "cpu", "--out", str(out),
                    "--config-dir", str(paths.config_dir)]
        else:
            tuned, _deltas, _model = _tuned_copy("sd1", tmp_path / "tuned", te_parts=("te",))
            argv = ["lora", "extract", "--base", str(paths.single_file), "--tuned", str(tuned.single_file), "--dim",
                    "4", "--device", "cpu", "--out", str(out), "--config-dir", str(paths.config_dir)]
        first = main(argv)
        first_err = capsys.readouterr().err
        assert first == 0 and out.is_file(), first_err
        before = out.read_bytes()
        disk.fill(4096)
        code = main([*argv, "--force"])
        err = capsys.readouterr().err
        disk.unfill()
        assert code == 1 and "Traceback" not in err, err
        lines = [line for line in err.splitlines() if "no space left" in line]
        assert len(lines) == 1 and f"no space left on {disk.path}" in lines[0] and "needs" in lines[0], err
        assert out.read_bytes() == before
        assert sorted(os.listdir(disk.path)) == ["out.safetensors"]
