"""Resumable training state in ``<run>/state/``: network weights (fp32), optimizer, LR scheduler, grad scaler,
RNG states (torch, CUDA, numpy, python) and the trainer's position (step, epoch, batch in epoch, running loss);
``extra.safetensors`` holds what else a model keeps (a full fine-tune's fp32 masters and EMA).

A save is never half-done, whenever the process dies: everything is serialised in memory first, the disk is
checked for room (a full disk is a :class:`curator.faults.DiskFullError` and ``state/`` stays as it was),
the files are written and fsynced in ``state.tmp/`` with a ``COMPLETE`` marker last, and the folder is swapped
with ``state/`` atomically (``renameat2(RENAME_EXCHANGE)``; where the filesystem cannot, ``state/`` is first
renamed to ``state.old/``). :func:`latest_state` is what a resume loads: ``state/``, or ``state.old/`` when a
kill came between those two renames; never a folder without its marker.
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


COMPLETE = "COMPLETE"  # written last into a state folder: its files are all there and durable


def _torch_bytes(obj: object) -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def state_files(*, network: torch.nn.Module, optimizer: Optimizer, scheduler: LRScheduler,
                scaler: torch.amp.GradScaler | None, progress: Progress,
                extra: dict[str, torch.Tensor] | None = None) -> dict[str, bytes]:
    """Everything a resume needs, serialised: file name -> bytes (``COMPLETE`` not included)."""
    import numpy as np
    import torch
    from safetensors.torch import save

    weights = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in network.state_dict().items()}
    files = {
        "network.safetensors": save(weights),
        **({"extra.safetensors": save({k: v.contiguous() for k, v in extra.items()})} if extra else {}),
        "optimizer.pt": _torch_bytes(optimizer.state_dict()),
        "scheduler.pt": _torch_bytes(scheduler.state_dict()),
    }
    if scaler is not None:
        files["scaler.pt"] = _torch_bytes(scaler.state_dict())
    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple), "the legacy numpy state is a tuple"
    rng = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
    }
    files["rng.pt"] = _torch_bytes(rng)
    py_version, py_state, py_gauss = random.getstate()
    rng_json = {"numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
                "python": [py_version, list(py_state), py_gauss]}
    files["rng.json"] = json.dumps(rng_json).encode("utf-8")
    files["trainer.json"] = (json.dumps(asdict(progress), indent=2) + "\n").encode("utf-8")
    return files


def save_state(folder: Path, *, network: torch.nn.Module, optimizer: Optimizer, scheduler: LRScheduler,
               scaler: torch.amp.GradScaler | None, progress: Progress,
               extra: dict[str, torch.Tensor] | None = None) -> None:
    """Write everything a resume needs (see the module docstring) to ``folder``, replacing it atomically."""
    files = state_files(network=network, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                        progress=progress, extra=extra)
    write_state_folder(Path(folder), files, step=progress.step)


def write_state_folder(folder: Path, files: dict[str, bytes], step: int = 0) -> None:
    """``files`` as the state folder ``folder``, replacing the one there atomically (the module docstring)."""
    from curator.faults import DiskFullError, block_size, ensure_space, is_disk_full, space_for
    from curator.fsutil import exchange_paths, fsync_dir, write_new_file

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    old = folder.with_name(folder.name + ".old")
    what = f"saving the training state (step {step})"
    shutil.rmtree(tmp, ignore_errors=True)
    if old.exists() and has_state(folder):  # a kill between the two renames of an earlier save
        shutil.rmtree(old, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    needed = space_for([len(b) for b in files.values()], block_size(folder.parent)) + 4096
    ensure_space(folder.parent, needed, what)
    try:
        tmp.mkdir()
        for name, data in files.items():
            write_new_file(tmp / name, data)
        write_new_file(tmp / COMPLETE, f"{step}\n".encode())
        fsync_dir(tmp)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            kept = "the previous state/ is kept" if has_state(folder) else "no state was saved"
            raise DiskFullError(folder.parent, what, needed, note=kept) from exc
        raise
    if folder.exists() and exchange_paths(tmp, folder):  # one atomic step: state/ is the new one
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(folder.parent)


def has_state(folder: Path) -> bool:
    """A complete state folder: its files and, for states written by this version, its ``COMPLETE`` marker."""
    folder = Path(folder)
    if not ((folder / "trainer.json").is_file() and (folder / "network.safetensors").is_file()):
        return False
    return (folder / COMPLETE).is_file() or not folder.name.endswith((".tmp", ".old"))


def latest_state(run_dir: Path) -> Path | None:
    """The state a resume continues from: ``state/``, else ``state.old/`` (a save killed between its two
    renames), else None. ``state.tmp/`` (a save killed while writing) is never used."""
    from train.rundir import STATE_DIR

    for name in (STATE_DIR, STATE_DIR + ".old"):
        folder = Path(run_dir) / name
        if has_state(folder):
            return folder
    return None


def load_extra_state(folder: Path) -> dict[str, torch.Tensor]:
    """``extra.safetensors`` of a state folder (empty when the run kept nothing extra)."""
    from safetensors.torch import load_file

    path = Path(folder) / "extra.safetensors"
    return load_file(str(path)) if path.is_file() else {}


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
