"""The pieces under `kiln runs/watch` and the TUI: tailing events, folding them, the chart, the live display,
the registry, process checks."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_runs_data import write_run
from train.rundir import read_events
from train.runs.chart import loss_chart
from train.runs.tail import EventTail, last_events
from train.runs.track import RunTracker, smooth


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_DATA_DIR", str(tmp_path / "data"))


def test_tail_reads_only_complete_new_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    tail = EventTail(path)
    assert tail.read_new() == []  # no file yet
    path.write_text('{"t": 1, "type": "phase", "phase": "a"}\n{"t": 2, "type": "ph')
    assert [e["phase"] for e in tail.read_new()] == ["a"]
    with open(path, "a") as fh:
        fh.write('ase", "phase": "b"}\nnot json\n')
    assert [e["phase"] for e in tail.read_new()] == ["b"]
    assert tail.read_new() == []
    path.write_text('{"t": 3, "type": "phase", "phase": "c"}\n')  # started over (--force): smaller file
    events = tail.read_new()
    assert tail.reset and [e["phase"] for e in events] == ["c"]


def test_last_events_reads_the_end_of_a_long_file(tmp_path: Path) -> None:
    run = write_run(tmp_path, "long", steps=300, total=300)
    events = last_events(run / "events.jsonl", max_bytes=2000)
    assert events[-1]["type"] == "end" and len(events) < 20
    assert all("type" in e for e in events)  # the cut first line was dropped


def test_tracker_folds_a_recorded_run(tmp_path: Path) -> None:
    run = write_run(tmp_path, "r", state="finished", sample=True)
    tracker = RunTracker()
    tracker.feed_all(list(read_events(run)))
    assert tracker.state == "finished" and tracker.step == 300 and tracker.total_steps == 300
    assert len(tracker.losses) == 300 and tracker.steps[:3] == [1, 2, 3]
    assert Path(tracker.last_save).name == "r.safetensors"
    assert Path(tracker.last_sample).name == "r-step00000200-00.png"
    assert tracker.mem_mb == 6144.0 and tracker.lr[1] == 5e-5
    assert any(line.kind == "end" for line in tracker.log)
    assert tracker.elapsed() == pytest.approx(4 + 300 * 0.8, abs=0.01)


def test_tracker_resume_drops_lost_steps_and_goes_on() -> None:
    tracker = RunTracker()
    step = {"type": "step", "total_steps": 10, "epoch": 1, "avg_loss": 1.0, "lr": [1e-4], "it_s": 1.0}
    tracker.feed({"t": 1, "type": "start", "name": "x", "total_steps": 10, "epochs": 1, "resumed_step": 0})
    for s in range(1, 8):
        tracker.feed({**step, "t": 1 + s, "step": s, "loss": 1.0})
    tracker.feed({"t": 9, "type": "end", "reason": "stopped", "step": 7, "outputs": []})
    assert tracker.state == "stopped"
    tracker.feed({"t": 20, "type": "phase", "phase": "loading model"})
    assert tracker.state == "starting"
    # the state saved at step 5 (say the last two steps were lost): the curve is cut back to step 5
    tracker.feed({"t": 21, "type": "start", "name": "x", "total_steps": 10, "epochs": 1, "resumed_step": 5})
    assert tracker.steps == [1, 2, 3, 4, 5] and tracker.state == "running" and tracker.step == 5
    tracker.feed({**step, "t": 22, "step": 6, "loss": 0.5})
    assert tracker.steps[-1] == 6 and tracker.losses[-1] == 0.5


def test_tracker_skips_malformed_events() -> None:
    tracker = RunTracker()
    tracker.feed({"type": "step", "loss": "x"})  # no step number
    tracker.feed({"type": "save"})
    tracker.feed({"type": "mystery", "t": 5})
    assert tracker.step == 0 and tracker.saves == [] and tracker.last_t == 5


def test_smooth_is_debiased() -> None:
    assert smooth([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])
    values = smooth([1.0, 0.0] * 50, 0.9)
    assert 0.4 < values[-1] < 0.6


def test_loss_chart_has_axes_and_fits_the_size() -> None:
    steps = list(range(1, 501))
    losses = [0.2 - 0.0002 * s + (0.02 if s % 7 == 0 else 0.0) for s in steps]
    text = loss_chart(steps, losses, width=60, height=10, total_steps=1000)
    lines = text.plain.split("\n")
    assert len(lines) == 10 and all(len(line) <= 60 for line in lines)
    assert lines[0].strip().startswith("0.219") and "┤" in lines[0]
    assert lines[-1].strip().endswith("1000")  # x axis runs to the planned total
    plotted = "".join(lines[:-1])
    assert sum(1 for ch in plotted if 0x2800 < ord(ch) <= 0x28FF) > 40
    assert "waiting" in loss_chart([], [], 60, 10).plain
    assert "too small" in loss_chart(steps, losses, 8, 2).plain


def test_live_display_as_trainer_listener(tmp_path: Path) -> None:
    """The foreground hook: the trainer calls display(event) for each event, then display.close()."""
    from rich.console import Console

    from train.runs.live import LiveDisplay

    run = write_run(tmp_path, "fg", state="finished")
    out = io.StringIO()
    display = LiveDisplay(console=Console(file=out, width=100, height=40, force_terminal=True, color_system=None))
    for event in read_events(run):
        display(event)
    display.close()
    text = out.getvalue()
    assert "fg" in text and "finished" in text and "step 300/300" in text and "fg.safetensors" in text


def test_registry_dedups_and_forgets_missing(tmp_path: Path) -> None:
    from train.runs.discover import forget_missing, registered_runs, registry_path, remember_run

    a = write_run(tmp_path / "runs", "a")
    remember_run(a, pid=4242)
    remember_run(a)  # seen again later: keeps the launch pid
    remember_run(tmp_path / "gone")
    assert {p.name: launch.pid for p, launch in registered_runs().items()} == {"a": 4242}
    assert forget_missing() == 1
    assert len(registry_path().read_text().splitlines()) == 2
    registry_path().write_text("junk\n" + registry_path().read_text())  # a damaged line is skipped
    assert list(registered_runs()) == [a.resolve()]


def test_pid_alive_rejects_zombies_and_gone_processes() -> None:
    from train.runs.state import pid_alive

    assert pid_alive(os.getpid())
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    while True:  # wait for it to exit without reaping it: a zombie
        try:
            state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            pytest.skip("no /proc")
        if state == "Z":
            break
    assert not pid_alive(proc.pid)
    proc.wait()
    assert not pid_alive(proc.pid)


def test_status_without_events_starting_then_dead(tmp_path: Path) -> None:
    """Launched, nothing written yet: 'starting' while the log is young, 'dead' once it is old."""
    from train.runs.state import read_run

    run = tmp_path / "new"
    run.mkdir()
    (run / "config.toml").write_text("")
    (run / "train.log").write_text("")
    assert read_run(run).state == "starting"
    os.utime(run / "train.log", (1_000_000, 1_000_000))
    os.utime(run / "config.toml", (1_000_000, 1_000_000))
    assert read_run(run).state == "dead"


def test_runs_json_record_is_plain_json(tmp_path: Path) -> None:
    from train.runs.state import read_run

    record = read_run(write_run(tmp_path, "j")).to_json()
    assert json.loads(json.dumps(record)) == record


def test_run_on_another_host_is_trusted_until_it_goes_quiet(tmp_path: Path) -> None:
    """A run dir on a shared disk written by another machine: its pid is not checked here."""
    import time

    from train.runs.state import read_run

    run = write_run(tmp_path, "remote", state="running", steps=10, pid=4_000_001)
    status = json.loads((run / "status.json").read_text())
    status.update(host="gpu-box-that-is-not-this-one", updated_at=time.time())
    (run / "status.json").write_text(json.dumps(status))
    assert read_run(run).state == "running"
    status["updated_at"] = time.time() - 7200
    (run / "status.json").write_text(json.dumps(status))
    info = read_run(run)
    assert info.state == "dead" and "gpu-box-that-is-not-this-one" in info.message


def test_follow_with_the_live_display_ends_on_a_dead_run(tmp_path: Path) -> None:
    from rich.console import Console

    from train.runs.live import LiveDisplay, follow

    run = write_run(tmp_path, "died", state="dead", steps=20, log_lines=["step 20/300", "Killed"])
    out = io.StringIO()
    display = LiveDisplay(console=Console(file=out, width=100, height=40, force_terminal=True, color_system=None))
    info = follow(run, display, poll=0.05, timeout=10)
    display.close()
    assert info.state == "dead"
    text = out.getvalue()
    assert "dead" in text and "Killed" in text and "step 20/300" in text


def test_the_trainer_writes_its_host_and_a_live_local_run_stays_running(tmp_path: Path) -> None:
    """status.json names the machine that wrote it, so a run dir on a shared disk is judged by the right rule:
    the pid on this machine, the age of the last update elsewhere."""
    import socket

    from train.rundir import RunDir
    from train.runs.state import read_run

    run = RunDir(tmp_path / "local")
    run.create("")
    run.update_status(state="running", step=3)
    status = json.loads(run.status_path.read_text())
    assert status["host"] == socket.gethostname() and status["pid"] == os.getpid()
    assert read_run(run.path).state == "running"  # this process, alive, on this host
