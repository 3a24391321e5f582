"""Real `kiln train` processes: SIGTERM saves a LoRA and a state and exits 0, `--resume` continues from it,
and two CPU processes (gloo) give the same weights as one process with the doubled batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from train.rundir import read_events, read_status

pytestmark = pytest.mark.slow  # trains tiny models on the CPU

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train_loop import make_dataset, tiny_models  # noqa: E402


@pytest.fixture(scope="module")
def models(request: pytest.FixtureRequest) -> dict[str, Path]:
    return tiny_models(Path(request.config.cache.mkdir("kiln-tiny-models")))


def cli_args(model: Path, dataset: Path, out: Path, name: str, *extra: str) -> list[str]:
    sets = [f"model.path={model}", f"dataset.path={dataset}", "dataset.resolution=64", "dataset.min_bucket_reso=64",
            "dataset.max_bucket_reso=128", f"output.dir={out}", f"output.name={name}", "network.dim=4",
            "train.mixed_precision=no", "train.learning_rate=1e-3", "output.save_precision=float",
            "sample.enabled=false", *extra]
    return [sys.executable, "-m", "train.cli", *[a for s in sets for a in ("--set", s)], "--quiet"]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def test_sigterm_saves_lora_and_state_then_resume_finishes(models, tmp_path) -> None:
    dataset = make_dataset(tmp_path, broken=False)
    model = models["sd1"] / "diffusers"
    proc = subprocess.Popen(cli_args(model, dataset, tmp_path, "term", "train.max_steps=500"), cwd=ROOT, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run = tmp_path / "term"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if any(e["type"] == "step" for e in read_events(run)):
            break
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output[-3000:]
    events = list(read_events(run))
    end = events[-1]
    assert end["type"] == "end" and end["reason"] == "stopped" and "--resume" in end["message"]
    stopped_at = end["step"]
    assert stopped_at >= 1 and (run / f"term-step{stopped_at:08d}.safetensors").is_file()
    assert json.loads((run / "state" / "trainer.json").read_text())["step"] == stopped_at
    assert read_status(run)["state"] == "stopped"

    resumed = subprocess.run([sys.executable, "-m", "train.cli", "--resume", str(run), "--set",
                              f"train.max_steps={stopped_at + 1}", "--quiet"],
                             cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert (run / "term.safetensors").is_file()
    steps = [e["step"] for e in read_events(run) if e["type"] == "step"]
    assert steps[-1] == stopped_at + 1 and steps.count(stopped_at + 1) == 1
    assert read_status(run)["state"] == "finished"


def test_two_gloo_processes_match_one_process_with_double_batch(models, tmp_path) -> None:
    from safetensors.torch import load_file

    dataset = make_dataset(tmp_path, broken=False)
    model = models["sd1"] / "diffusers"
    common = ("train.max_steps=3", "dataset.shuffle_caption=true", "dataset.flip_aug=true")
    one = subprocess.run(cli_args(model, dataset, tmp_path, "one", "train.batch_size=2", *common),
                         cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stdout[-2000:] + one.stderr[-2000:]
    two = subprocess.run([*cli_args(model, dataset, tmp_path, "two", "train.batch_size=1", *common),
                          "--num-processes", "2"], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=400)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    start = next(e for e in read_events(tmp_path / "two") if e["type"] == "start")
    assert start["num_processes"] == 2 and start["batch_size"] == 1
    a = load_file(str(tmp_path / "one" / "one.safetensors"))
    b = load_file(str(tmp_path / "two" / "two.safetensors"))
    assert a.keys() == b.keys() and len(a) > 10
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-5, worst
    losses_one = [e["loss"] for e in read_events(tmp_path / "one") if e["type"] == "step"]
    losses_two = [e["loss"] for e in read_events(tmp_path / "two") if e["type"] == "step"]
    assert losses_one == pytest.approx(losses_two, abs=1e-5)
    # the weights really moved (a test that cannot fail is no test)
    assert max(v.abs().max().item() for k, v in a.items() if "lora_up" in k) > 0


def test_check_detach_stop_request_and_existing_run_refusal(models, tmp_path) -> None:
    dataset = make_dataset(tmp_path)
    model = models["sd1"] / "tiny-sd1.safetensors"
    args = cli_args(model, dataset, tmp_path, "bg", f"model.config_dir={models['sd1'] / 'config'}",
                    "train.max_steps=500")
    check = subprocess.run([*args, "--check"], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    assert "config OK" in check.stdout and "sd1 (single_file" in check.stdout
    assert "3 training, 0 regularization (6 with repeats), 1 skipped" in check.stdout
    assert "steps:    500" in check.stdout and "broken.png" in check.stderr
    assert not (tmp_path / "bg").exists()  # --check trains nothing and creates no run

    detached = subprocess.run([*args, "--detach"], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=60)
    assert detached.returncode == 0 and "kiln watch" in detached.stdout and str(tmp_path / "bg") in detached.stdout
    run = tmp_path / "bg"
    deadline = time.time() + 240
    while time.time() < deadline and not any(e["type"] == "step" for e in read_events(run)):
        time.sleep(0.5)
    (run / "stop.request").write_text("")
    while time.time() < deadline and (read_status(run) or {}).get("state") not in ("stopped", "failed", "finished"):
        time.sleep(0.5)
    status = read_status(run)
    assert status["state"] == "stopped", (run / "train.log").read_text()[-2000:]
    assert (run / "train.log").stat().st_size > 0 and (run / "state" / "trainer.json").is_file()

    again = subprocess.run(args, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "--resume" in again.stderr and "already holds a run" in again.stderr


def test_check_and_two_processes_agree_on_the_step_count(models, tmp_path) -> None:
    """`--check --num-processes 2` prints the steps the two processes then run (each batch holds batch_size
    samples per process: 2 x 2 here)."""
    dataset = make_dataset(tmp_path, broken=False)  # 3 photos x 2 repeats, all in the 64x64 bucket
    model = models["sd1"] / "diffusers"
    args = [*cli_args(model, dataset, tmp_path, "agree", "train.batch_size=2", "train.max_epochs=2"),
            "--num-processes", "2"]
    check = subprocess.run([*args, "--check"], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    # ceil(6 / (2 x 2)) = 2 batches per epoch (with the per-process batch it would be ceil(6 / 2) = 3)
    assert "buckets:  64x64:6" in check.stdout
    assert "steps:    4 (2 per epoch, 2 epochs, batch 2 x 2 processes)" in check.stdout, check.stdout
    trained = subprocess.run(args, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=400)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    events = list(read_events(tmp_path / "agree"))
    start = next(e for e in events if e["type"] == "start")
    assert (start["total_steps"], start["steps_per_epoch"], start["epochs"]) == (4, 2, 2)
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2, 3, 4]
    assert [e["epoch"] for e in events if e["type"] == "epoch"] == [1, 2]
