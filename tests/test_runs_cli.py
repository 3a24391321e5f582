"""`kiln runs`, `kiln watch`, `kiln stop`, `kiln resume` on recorded run directories: finished, stopped,
failed, running (a live pid) and dead (status says running, the pid does not exist)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.test_runs_data import write_run
from tui.cli import main as kiln


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KILN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "data"


@pytest.fixture
def sleeper():
    """A live process standing in for a trainer."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def running_run(folder: Path, name: str, pid: int) -> Path:
    run = write_run(folder, name, state="running", steps=50, total=100, pid=pid, t0=time.time() - 60)
    status = json.loads((run / "status.json").read_text())
    status["updated_at"] = time.time()
    (run / "status.json").write_text(json.dumps(status))
    return run


def run_json(capsys, *args: str) -> list[dict]:
    capsys.readouterr()
    assert kiln(["runs", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_runs_json_lists_every_state(tmp_path: Path, capsys, sleeper) -> None:
    runs = tmp_path / "runs"
    write_run(runs, "done", state="finished")
    write_run(runs, "paused", state="stopped", steps=120)
    write_run(runs, "oom", state="failed", steps=10)
    write_run(runs, "gone", state="dead", steps=40, log_lines=["step 40/300", "Killed"])
    running_run(runs, "going", sleeper.pid)
    data = {r["name"]: r for r in run_json(capsys, str(runs))}
    assert {k: v["state"] for k, v in data.items()} == {
        "done": "finished", "paused": "stopped", "oom": "failed", "gone": "dead", "going": "running"}
    done = data["done"]
    assert set(done) >= {"name", "dir", "state", "step", "total_steps", "loss", "outputs"}
    assert (done["step"], done["total_steps"]) == (300, 300)
    assert [Path(p).name for p in done["outputs"]] == [
        "done-step00000100.safetensors", "done-step00000200.safetensors", "done.safetensors"]
    assert data["paused"]["resumable"] is True and data["done"]["resumable"] is False
    assert data["gone"]["log_tail"] == ["step 40/300", "Killed"]
    assert data["going"]["step"] == 50 and abs(data["going"]["loss"] - 0.1) < 0.1


def test_runs_default_dirs_and_registry(tmp_path: Path, capsys) -> None:
    """Without DIR: ./runs plus the registry (a run started elsewhere is found from here)."""
    from train.runs.discover import remember_run

    write_run(tmp_path / "runs", "local")
    elsewhere = write_run(tmp_path / "far" / "away", "remote")
    remember_run(elsewhere)
    remember_run(tmp_path / "deleted-later")  # a folder that is gone is skipped
    names = sorted(r["name"] for r in run_json(capsys))
    assert names == ["local", "remote"]


def test_runs_table_shows_dead_runs_with_their_log(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    write_run(runs, "fine", state="finished")
    write_run(runs, "crashed", state="dead", log_lines=["loading model", "Segmentation fault (core dumped)"])
    assert kiln(["runs", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "NAME" in out and "fine" in out and "finished" in out and "300/300 100%" in out
    assert "crashed is dead" in out and "Segmentation fault (core dumped)" in out


def test_runs_bad_input(tmp_path: Path, capsys) -> None:
    assert kiln(["runs", str(tmp_path / "nope")]) == 1
    assert "no such folder" in capsys.readouterr().err
    run = write_run(tmp_path / "runs", "mangled", state="finished")
    (run / "status.json").write_text("{not json")
    with open(run / "events.jsonl", "a") as fh:
        fh.write("garbage line\n{\"t\": 1, \"type\": \"end\", \"reason\": \"fini")  # torn last line
    (data,) = run_json(capsys, str(tmp_path / "runs"))
    assert data["state"] == "finished"  # from the end event, despite the broken status.json
    assert data["total_steps"] == 300


def test_dead_when_pid_was_recycled(tmp_path: Path, capsys) -> None:
    """Status says running with a live pid that started after the run's last status write: not our trainer."""
    run = write_run(tmp_path / "runs", "old", state="running", steps=10, pid=os.getpid())
    (data,) = run_json(capsys, str(run))
    assert data["state"] == "dead"


def test_watch_once_finished_and_dead(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    write_run(runs, "done", state="finished", sample=True)
    write_run(runs, "gone", state="dead", log_lines=["RuntimeError: CUDA error: an illegal memory access"])
    assert kiln(["watch", "done", "--once"]) == 0  # by name, found in ./runs
    out = capsys.readouterr().out
    assert "finished" in out and "step 300/300" in out and "done.safetensors" in out
    assert "done-step00000200-00.png" in out  # the last sample
    assert "┤" in out and "└" in out  # the loss chart's axes
    assert kiln(["watch", str(runs / "gone"), "--once"]) == 1
    out = capsys.readouterr().out
    assert "dead" in out and "illegal memory access" in out


def test_watch_follows_a_running_run_until_it_ends(tmp_path: Path, capsys, sleeper) -> None:
    run = running_run(tmp_path / "runs", "going", sleeper.pid)

    def finish() -> None:
        time.sleep(1.0)
        with open(run / "events.jsonl", "a") as fh:
            for step in (51, 52):
                fh.write(json.dumps({"t": time.time(), "type": "step", "step": step, "total_steps": 100, "epoch": 2,
                                     "loss": 0.09, "avg_loss": 0.1, "lr": [1e-4], "it_s": 1.0, "eta_s": 5.0,
                                     "mem_mb": None}) + "\n")
            fh.write(json.dumps({"t": time.time(), "type": "end", "reason": "finished", "step": 52,
                                 "outputs": [str(run / "going.safetensors")], "message": ""}) + "\n")
        status = json.loads((run / "status.json").read_text())
        status.update(state="finished", step=52)
        (run / "status.json").write_text(json.dumps(status))

    thread = threading.Thread(target=finish)
    thread.start()
    started = time.monotonic()
    code = kiln(["watch", str(run), "--plain"])
    thread.join()
    assert code == 0
    assert time.monotonic() - started < 20
    out = capsys.readouterr().out
    assert "finished at step 52" in out
    assert not (run / "stop.request").exists()  # watching never touches the run


def test_watch_unknown_run(tmp_path: Path, capsys) -> None:
    write_run(tmp_path / "runs", "known")
    assert kiln(["watch", "nosuchrun", "--once"]) == 1
    err = capsys.readouterr().err
    assert "no such run directory or run name" in err and "known" in err
    (tmp_path / "plain").mkdir()
    assert kiln(["watch", str(tmp_path / "plain")]) == 1
    assert "not a run directory" in capsys.readouterr().err


def test_watch_name_shared_by_two_runs_asks_for_the_dir(tmp_path: Path, capsys) -> None:
    from train.runs.discover import remember_run

    write_run(tmp_path / "runs", "twin")
    remember_run(write_run(tmp_path / "other", "twin"))
    assert kiln(["watch", "twin", "--once"]) == 1
    assert "several runs have this name" in capsys.readouterr().err


def test_stop_and_save_now(tmp_path: Path, capsys, sleeper) -> None:
    run = running_run(tmp_path / "runs", "going", sleeper.pid)
    assert kiln(["stop", "going", "--save-now"]) == 0
    assert (run / "save.request").exists() and not (run / "stop.request").exists()
    assert kiln(["stop", "going"]) == 0
    assert (run / "stop.request").exists()
    assert "saves its LoRA and state" in capsys.readouterr().out
    data = run_json(capsys, str(run))
    assert data[0]["stop_requested"] is True


def test_stop_refuses_runs_that_are_not_going(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    write_run(runs, "gone", state="dead")
    write_run(runs, "done", state="finished")
    for name, state in (("gone", "dead"), ("done", "finished")):
        assert kiln(["stop", name]) == 1
        assert f"is {state}: nothing to stop" in capsys.readouterr().err
        assert not (runs / name / "stop.request").exists()


def test_resume_refusals(tmp_path: Path, capsys, sleeper) -> None:
    runs = tmp_path / "runs"
    write_run(runs, "done", state="finished")
    write_run(runs, "gone", state="dead")
    running_run(runs, "going", sleeper.pid)
    assert kiln(["resume", "done"]) == 1
    assert "finished" in capsys.readouterr().err
    assert kiln(["resume", "gone"]) == 1
    assert "no saved state/" in capsys.readouterr().err
    assert kiln(["resume", "going"]) == 1
    assert "already going" in capsys.readouterr().err


def test_resume_reports_the_trainer_error(tmp_path: Path, capsys) -> None:
    """A stopped run whose config no longer validates: the trainer's message comes back, nothing starts."""
    run = write_run(tmp_path / "runs", "paused", state="stopped")
    (run / "config.toml").write_text("[train]\nlearning_rate = -1\n")
    assert kiln(["resume", "paused"]) == 1
    err = capsys.readouterr().err
    assert "learning_rate" in err
    assert json.loads((run / "status.json").read_text())["state"] == "stopped"
