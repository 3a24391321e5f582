"""Recorded run directories for the runs tests (deterministic: fixed times, seeded losses).

``write_run(folder, name, state=...)`` writes what the trainer would have written: config.toml, events.jsonl,
status.json, train.log, saved .safetensors, and (optionally) a real sample photo.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

T0 = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC


def _free_pid() -> int:
    """A pid that no process has (for dead runs)."""
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def write_run(folder: Path, name: str, *, state: str = "finished", steps: int = 300, total: int = 300,
              pid: int | None = None, sample: bool = False, seed: int = 1, t0: float = T0,
              log_lines: list[str] | None = None) -> Path:
    """A run directory in ``folder/name``. ``state``: finished | stopped | failed | running | dead."""
    run = folder / name
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.toml").write_text(f'[output]\nname = "{name}"\n', encoding="utf-8")
    rng = random.Random(seed)
    events: list[dict] = []
    t = t0

    def emit(event_type: str, /, **fields) -> None:
        events.append({"t": round(t, 3), "type": event_type, **fields})

    real_pid = pid if pid is not None else (_free_pid() if state == "dead" else 12345)
    emit("phase", phase="scanning dataset")
    emit("phase", phase="loading model")
    t += 4
    steps_per_epoch = 30
    emit("start", name=name, run_dir=str(run), total_steps=total, epochs=math.ceil(total / steps_per_epoch),
         pid=real_pid, resumed_step=0, images=15, batch_size=2, num_processes=1, steps_per_epoch=steps_per_epoch,
         device="cuda:0", mixed_precision="bf16", config={"arch": "sd1"})
    outputs: list[str] = []
    avg_sum = 0.0
    loss = 0.0
    for step in range(1, steps + 1):
        t += 0.8
        epoch = (step - 1) // steps_per_epoch + 1
        if (step - 1) % steps_per_epoch == 0:
            avg_sum, n = 0.0, 0
        loss = 0.08 + 0.1 * math.exp(-step / 90) + rng.uniform(-0.03, 0.03)
        avg_sum += loss
        n = (step - 1) % steps_per_epoch + 1
        emit("step", step=step, total_steps=total, epoch=epoch, loss=loss, avg_loss=avg_sum / n,
             lr=[1e-4 * (1 - step / (total + 1)), 5e-5], it_s=1.25, eta_s=round((total - step) / 1.25, 1),
             mem_mb=6144.0)
        if step % steps_per_epoch == 0:
            emit("epoch", epoch=epoch, step=step, avg_loss=avg_sum / n)
        if step % 100 == 0 and step < total:
            path = run / f"{name}-step{step:08d}.safetensors"
            path.write_bytes(b"\0" * 16)
            outputs.append(str(path))
            emit("save", path=str(path), step=step, epoch=epoch, kind="step")
            if sample:
                from tests.conftest import photo

                sample_path = run / "samples" / f"{name}-step{step:08d}-00.png"
                sample_path.parent.mkdir(exist_ok=True)
                photo("astronaut.png", (128, 128)).save(sample_path)
                emit("sample", path=str(sample_path), step=step, epoch=epoch)
    status = {"format": 1, "state": "running", "pid": real_pid, "step": steps, "total_steps": total,
              "phase": "training", "epoch": (steps - 1) // steps_per_epoch + 1, "epochs": math.ceil(total / 30),
              "loss": loss, "updated_at": round(t, 3)}
    if state in ("finished", "stopped", "failed"):
        reason = {"finished": "finished", "stopped": "stopped", "failed": "error"}[state]
        message = {"finished": "", "stopped": f"stopped by stop.request; resume with: kiln train --resume {run}",
                   "failed": "out of GPU memory. Options that cut memory: lower train.batch_size"}[state]
        if state == "failed":
            emit("error", message=message)
        final = run / (f"{name}.safetensors" if state == "finished" else f"{name}-step{steps:08d}.safetensors")
        final.write_bytes(b"\0" * 16)
        outputs.append(str(final))
        emit("save", path=str(final), step=steps, epoch=status["epoch"], kind="final" if state == "finished" else "step")
        if state == "stopped":
            (run / "state").mkdir(exist_ok=True)
            (run / "state" / "progress.json").write_text("{}", encoding="utf-8")
            emit("save", path=str(run / "state"), step=steps, epoch=status["epoch"], kind="state")
        emit("end", reason=reason, outputs=outputs, step=steps, message=message, duration_s=round(t - t0, 1))
        status.update(state=state, outputs=outputs, message=message)
    if state == "running" and pid is None:
        status["updated_at"] = round(t, 3)
    with open(run / "events.jsonl", "w", encoding="utf-8") as fh:
        for e in events:
            fh.write(json.dumps(e) + "\n")
    (run / "status.json").write_text(json.dumps(status, indent=2) + "\n", encoding="utf-8")
    lines = log_lines if log_lines is not None else [f"step {s}/{total} loss 0.1" for s in range(1, 4)]
    (run / "train.log").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for path in outputs:  # outputs are listed by mtime: make their order fixed
        index = outputs.index(path)
        os.utime(path, (t0 + index, t0 + index))
    return run
