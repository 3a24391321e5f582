"""Resumable training state in ``<run>/state/``: network weights (fp32), optimizer, LR scheduler, grad scaler,
RNG states (torch, CUDA, numpy, python) and the trainer's position (step, epoch, batch in epoch, running loss).

Written to ``state.tmp/`` and renamed over ``state/`` so a crash mid-save keeps the previous state.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LRScheduler


@dataclass
class Progress:
    """Where training is. ``batch_in_epoch`` counts batches of ``epoch`` already consumed."""

    step: int = 0
    epoch: int = 1
    batch_in_epoch: int = 0
    epoch_loss_sum: float = 0.0
    epoch_loss_count: int = 0
    saves: dict[str, list[str]] = field(default_factory=dict)
    total_steps: int = 0
    seed: int = 0

    def add_step_loss(self, loss: float) -> None:
        """Count one optimizer step's loss into the epoch's running mean."""
        self.epoch_loss_sum += loss
        self.epoch_loss_count += 1

    @property
    def epoch_avg_loss(self) -> float:
        """The mean step loss of the epoch so far (0 before its first step)."""
        return self.epoch_loss_sum / max(self.epoch_loss_count, 1)

    def next_epoch(self) -> None:
        """The epoch's plan is done: the next one starts at its first batch with a fresh running loss."""
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        self.epoch_loss_sum, self.epoch_loss_count = 0.0, 0


def save_state(folder: Path, *, network: torch.nn.Module, optimizer: Optimizer, scheduler: LRScheduler,
               scaler: torch.amp.GradScaler | None, progress: Progress) -> None:
    """Write everything a resume needs (see the module docstring) to ``folder``, replacing it atomically."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in network.state_dict().items()}
    save_file(weights, str(tmp / "network.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    if scaler is not None:
        torch.save(scaler.state_dict(), tmp / "scaler.pt")
    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple), "the legacy numpy state is a tuple"
    rng = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
    }
    torch.save(rng, tmp / "rng.pt")
    py_version, py_state, py_gauss = random.getstate()
    rng_json = {"numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
                "python": [py_version, list(py_state), py_gauss]}
    (tmp / "rng.json").write_text(json.dumps(rng_json), encoding="utf-8")
    (tmp / "trainer.json").write_text(json.dumps(asdict(progress), indent=2) + "\n", encoding="utf-8")
    for child in tmp.iterdir():
        with open(child, "rb") as fh:
            os.fsync(fh.fileno())
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def has_state(folder: Path) -> bool:
    return (Path(folder) / "trainer.json").is_file() and (Path(folder) / "network.safetensors").is_file()


def load_progress(folder: Path) -> Progress:
    data = json.loads((Path(folder) / "trainer.json").read_text(encoding="utf-8"))
    return Progress(**{k: v for k, v in data.items() if k in Progress.__dataclass_fields__})


def load_state(folder: Path, *, network: torch.nn.Module, optimizer: Optimizer, scheduler: LRScheduler,
               scaler: torch.amp.GradScaler | None) -> Progress:
    """Restore everything saved by :func:`save_state` into live objects; returns the progress."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    folder = Path(folder)
    weights = load_file(str(folder / "network.safetensors"))
    missing, unexpected = network.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise RuntimeError(
            f"state/network.safetensors does not match this network ({len(missing)} missing, "
            f"{len(unexpected)} unexpected keys): the [network] or [model] settings changed since the run started"
        )
    # Our own files, still loaded with weights_only=True: no pickled code runs.
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    if scaler is not None and (folder / "scaler.pt").exists():
        scaler.load_state_dict(torch.load(folder / "scaler.pt", weights_only=True))
    rng = torch.load(folder / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    extra = json.loads((folder / "rng.json").read_text(encoding="utf-8"))
    name, pos, has_gauss, cached = extra["numpy"]
    np.random.set_state((name, rng["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, state, gauss = extra["python"]
    random.setstate((version, tuple(state), gauss))
    return load_progress(folder)
