"""Save and sample scheduling: when a run saves a LoRA or a full fine-tune's checkpoint (and its resumable state) and renders samples, and doing
it. Only the main process writes; on the others every call does nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from train.rundir import SAMPLES_DIR, STATE_DIR, RunLog
from train.state import Progress, save_state

if TYPE_CHECKING:
    import torch
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LRScheduler

    from train.config import OutputSection, SampleSection
    from train.finetune.model import FullModel
    from train.models.loading import BaseModel
    from train.network.network import Network
    from train.prompts import Prompt
    from train.staging import DeviceStaging

SaveKind = Literal["epoch", "step", "request", "final"]


@dataclass(frozen=True)
class SaveSchedule:
    """When to save and sample, from ``[output]`` and ``[sample]``. Step and epoch saves skip the end of the
    run (the final file is saved then)."""

    output: OutputSection
    sample: SampleSection

    @property
    def samples(self) -> bool:
        return self.sample.enabled and bool(self.sample.prompts or self.sample.prompt_file)

    def sample_at_first(self, step: int) -> bool:
        """kohya's ``sample_at_first``: samples of the untrained LoRA before the first step (not on resume)."""
        return self.samples and self.sample.at_first and step == 0

    def save_at_step(self, step: int, *, last: bool) -> bool:
        n = self.output.save_every_n_steps
        return n is not None and step % n == 0 and not last

    def sample_at_step(self, step: int) -> bool:
        n = self.sample.every_n_steps
        return self.samples and n is not None and step % n == 0

    def save_at_epoch(self, epoch: int) -> bool:
        n = self.output.save_every_n_epochs
        return n is not None and epoch % n == 0

    def sample_at_epoch(self, epoch: int) -> bool:
        n = self.sample.every_n_epochs
        return self.samples and n is not None and epoch % n == 0

    def sample_at_end(self) -> bool:
        """Samples of the final LoRA when no sample frequency is set."""
        return self.samples and not (self.sample.every_n_steps or self.sample.every_n_epochs)


class Saver:
    """Writes the LoRA named for what triggered the save, and the resumable ``state/``; reports each as a
    ``save`` event and adds the LoRA to ``outputs``. ``metadata()``: the ``ss_*`` keys at this moment."""

    def __init__(self, output: OutputSection, *, run: RunLog, run_path: Path, enabled: bool, network: Network | FullModel,
                 optimizer: Optimizer, scheduler: LRScheduler, scaler: torch.amp.GradScaler | None,
                 progress: Progress,
                 metadata: Callable[[], dict[str, str]], v_prediction: bool, outputs: list[str],
                 extra_state: Callable[[], dict[str, torch.Tensor]] | None = None) -> None:
        self.output, self.run, self.run_path, self.enabled = output, run, run_path, enabled
        self.extra_state = extra_state
        self.network, self.optimizer, self.scheduler, self.scaler = network, optimizer, scheduler, scaler
        self.progress, self.metadata, self.v_prediction, self.outputs = progress, metadata, v_prediction, outputs

    def save(self, kind: SaveKind, *, with_state: bool) -> None:
        """Save ``<name>-<epoch>`` / ``<name>-step<step>`` / ``<name>`` (final); keep the last
        ``output.save_last_n`` intermediate ones; with ``with_state`` also ``state/``. A schedule-free
        optimizer's evaluation weights are what the LoRA file holds; ``state/`` keeps its training weights.
        Every process calls this (the optimizer's mode switches on all of them alike); the main one writes."""
        from train.optim import evaluation_weights

        if not self.enabled:
            with evaluation_weights(self.optimizer):
                return
        from train.outputs import epoch_file, final_file, prune, step_file
        from train.precision import save_dtype

        progress, name = self.progress, self.output.name
        if kind == "epoch":
            filename = epoch_file(name, progress.epoch)
        elif kind == "final":
            filename = final_file(name)
        else:
            filename = step_file(name, progress.step)
        path = str(self.run_path / filename)
        with evaluation_weights(self.optimizer):
            self.network.save(path, dtype=save_dtype(self.output.save_precision), metadata=self.metadata(),
                              v_prediction=self.v_prediction)
        if kind in ("epoch", "step"):
            kept = progress.saves.setdefault(kind, [])
            if path not in kept:
                kept.append(path)
            progress.saves[kind] = prune(kept, self.output.save_last_n)
        self.run.emit("save", path=path, step=progress.step, epoch=progress.epoch, kind=kind)
        self.outputs.append(path)
        if with_state:
            state = self.run_path / STATE_DIR
            save_state(state, network=self.network, optimizer=self.optimizer, scheduler=self.scheduler,
                       scaler=self.scaler, progress=progress,
                       extra=self.extra_state() if self.extra_state is not None else None)
            self.run.emit("save", path=str(state), step=progress.step, epoch=progress.epoch, kind="state")


class Sampler:
    """Renders the ``[sample]`` prompts with the network applied, the VAE and text encoders brought to the
    device for the moment; reports each image as a ``sample`` event."""

    def __init__(self, sample: SampleSection, *, run: RunLog, run_path: Path, enabled: bool, base: BaseModel,
                 network: Network | FullModel, staging: DeviceStaging, resolution: tuple[int, int], dtype: torch.dtype,
                 progress: Progress, optimizer: Optimizer | None = None, prompts: list[Prompt] | None = None,
                 clip_skip: int = 1, max_token_length: int = 75) -> None:
        self.sample, self.run, self.samples_dir, self.enabled = sample, run, run_path / SAMPLES_DIR, enabled
        self.base, self.network, self.staging = base, network, staging
        self.resolution, self.dtype, self.progress = resolution, dtype, progress
        self.optimizer, self.prompts, self.clip_skip = optimizer, prompts or [], clip_skip
        self.max_token_length = max_token_length

    def render(self, stem: str) -> None:
        """``<stem>-NN.png`` for every prompt, with a schedule-free optimizer's evaluation weights. Every
        process calls this (the optimizer's mode switches on all of them alike); the main one renders."""
        from train.optim import evaluation_weights
        from train.sample import render_samples

        if not self.enabled:
            with evaluation_weights(self.optimizer):
                return
        with self.staging.for_sampling(self.base), evaluation_weights(self.optimizer):
            self.network.eval()
            try:
                paths = render_samples(self.base, self.sample, self.prompts, resolution=self.resolution,
                                       out_dir=self.samples_dir, stem=stem, device=self.staging.device,
                                       dtype=self.dtype, clip_skip=self.clip_skip,
                                       max_token_length=self.max_token_length)
            finally:
                self.network.train()
        for p in paths:
            self.run.emit("sample", path=str(p), step=self.progress.step, epoch=self.progress.epoch)
