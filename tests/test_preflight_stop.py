"""Stopping before the first step, measured on real `kiln train` processes: a signal while the dataset is
scanned, or `kiln stop` while latents are cached, ends the run within 2 s, keeps what was finished on disk
(index rows, cached latents), says so, and the next run reuses it."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from train.rundir import read_events

pytestmark = pytest.mark.slow  # real processes on a few hundred images

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train_loop import tiny_models  # noqa: E402

STOP_WITHIN_S = 2.0


@pytest.fixture(scope="module")
def models(request: pytest.FixtureRequest) -> dict[str, Path]:
    return tiny_models(Path(request.config.cache.mkdir("kiln-tiny-models")), archs=("sd1",))


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def trainer(model: Path, dataset: Path, out: Path, name: str, *extra: str) -> list[str]:
    sets = [f"model.path={model}", f"dataset.path={dataset}", "dataset.resolution=64", "dataset.min_bucket_reso=64",
            "dataset.max_bucket_reso=256", f"output.dir={out}", f"output.name={name}", "network.dim=4",
            "train.mixed_precision=no", "train.learning_rate=1e-3", "sample.enabled=false", "train.max_steps=1",
            *extra]
    return [sys.executable, "-m", "train.cli", *[a for s in sets for a in ("--set", s)], "--quiet"]


def wait_for(predicate: object, timeout: float, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


def indexed(dataset: Path) -> int:
    db = dataset / ".kiln" / "index.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM images").fetchone()[0])
    except sqlite3.Error:
        return 0


def end_event(run: Path) -> dict[str, object]:
    ends = [e for e in read_events(run) if e["type"] == "end"]
    assert ends, list(read_events(run))
    return ends[-1]


def test_sigint_while_scanning_stops_within_2s_and_keeps_the_indexed_part(models, tmp_path) -> None:
    from PIL import Image
    from skimage import data

    from curator.dataset import Dataset

    folder = tmp_path / "ds" / "1_astronaut"
    folder.mkdir(parents=True)
    Image.fromarray(data.astronaut()).save(folder / "a0000.png")  # 512x512: each takes a moment to read
    total = 600
    for i in range(1, total):
        shutil.copy(folder / "a0000.png", folder / f"a{i:04d}.png")
    dataset = tmp_path / "ds"
    run = tmp_path / "scan"
    proc = subprocess.Popen(trainer(models["sd1"] / "diffusers", dataset, tmp_path, "scan"), cwd=ROOT, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: indexed(dataset) >= 64, 120, proc)  # the first commit: scanning is under way
    sent = time.time()
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    exited = time.time() - sent
    end = end_event(run)
    took = float(end["t"]) - sent  # type: ignore[arg-type]
    print(f"\nSIGINT while scanning: end event after {took:.2f} s, process gone after {exited:.2f} s")
    assert proc.returncode == 0, output[-2000:]
    assert end["reason"] == "stopped" and took <= STOP_WITHIN_S, (took, end)
    kept = indexed(dataset)
    assert 0 < kept < total, kept
    message = str(end["message"])
    assert message.startswith("stopped by SIGINT while scanning the dataset (") and "nothing was trained" in message
    assert "are kept in the dataset index" in message and "the next run reads only the rest" in message
    assert "stopped by SIGINT while scanning" in output  # and the terminal says it too
    assert not any(e.get("phase") == "loading model" for e in read_events(run))
    summary = Dataset.open(dataset).scan(progress=False)  # the next scan reads only what was not indexed
    assert summary.new == total - kept and summary.unchanged == kept


def test_kiln_stop_while_caching_latents_keeps_them_for_the_next_run(models, tmp_path) -> None:
    import numpy as np
    from PIL import Image

    folder = tmp_path / "ds" / "1_noise"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    total = 100
    for i in range(total):  # distinct images: each is its own latent (128 px: ~0.3 s each on one CPU thread)
        Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(folder / f"n{i:04d}.png")
    dataset = tmp_path / "ds"
    run = tmp_path / "cache"
    args = trainer(models["sd1"] / "diffusers", dataset, tmp_path, "cache", "dataset.resolution=128",
                   "dataset.cache_latents_to_disk=true")
    proc = subprocess.Popen(args, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    latents = dataset / ".kiln" / "latents"

    def caching() -> bool:
        return any(e.get("phase") == "caching latents" and int(e.get("done") or 0) >= 8 for e in read_events(run))

    wait_for(caching, 240, proc)
    stop = subprocess.run([sys.executable, "-m", "tui.cli", "stop", str(run)], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0, stop.stderr
    sent = float((run / "stop.request").read_text())  # when `kiln stop` made the request (it writes the time)
    output, _ = proc.communicate(timeout=120)
    end = end_event(run)
    took = float(end["t"]) - sent  # type: ignore[arg-type]
    print(f"\nkiln stop while caching latents: end event after {took:.2f} s")
    assert proc.returncode == 0 and end["reason"] == "stopped", output[-2000:]
    assert took <= STOP_WITHIN_S, took
    kept = len(list(latents.rglob("*.safetensors")))
    assert 0 < kept < total, kept
    message = str(end["message"])
    assert message.startswith("stopped by stop.request while caching latents (") and "nothing was trained" in message
    assert f"the {kept} encoded latents stay in {latents}" in message and "the next run reuses them" in message
    assert not list(run.glob("*.safetensors"))  # nothing trained, nothing saved

    again = subprocess.run([*args, "--set", "output.name=cache2"], cwd=ROOT, env=env(), capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    for path, todo in ((run, total), (tmp_path / "cache2", total - kept)):  # the second run encodes only the rest
        first = next(e for e in read_events(path) if e.get("phase") == "caching latents")
        assert (first["done"], first["total"]) == (0, todo)
    assert end_event(tmp_path / "cache2")["reason"] == "finished"
