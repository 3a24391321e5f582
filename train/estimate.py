"""``kiln train CONFIG --estimate``: peak memory, time per step, total time and disk before a run starts, and
what the memory levers would save.

The estimate is measured, not modelled: a dry run trains the config itself for a few steps (same model,
dataset scan, caching, network, optimizer and device) in a child process, in a temporary run directory, with
no intermediate saves, samples or validation passes. From its events and its process accounting:

* peak memory: the child's peak resident memory (``wait4``'s ``ru_maxrss``: host RAM, what a CPU run needs)
  and, on CUDA, the trainer's peak allocated GPU memory (``setup_mem_mb`` and the steps' ``mem_mb``);
* time per step: the median gap between the step events after the first (the first carries one-off work)
  within an epoch; a gap across an epoch's end, less a step, is what each epoch's end adds;
* setup: from the child's launch to its first step (imports, scan, model load, caching), less one step;
* the end: the final validation and save, and the process's exit.

The total is setup + steps x time per step + epochs x the epoch's end + the end + each intermediate validation and save the full run
would do (valued at the measured final ones). Sample previews are not rendered by the dry run and are not in
the total (the estimate says how many the run renders). Disk is the pre-flight's estimate
(:func:`train.preflight.storage.estimate_disk`).

Levers: every memory-saving option the config does not use yet (gradient checkpointing, cached latents,
cached text-encoder outputs, half the batch with twice the accumulation, and on CUDA mixed precision and the
8-bit AdamW) gets a shorter dry run of its own; the estimate lists how much each brings the peak down.

The dry run updates the dataset's index and, with ``cache_latents_to_disk``, its latent cache, as the real
run would (the real run then skips that work; its setup is shorter than estimated).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from train.config import TrainConfig
    from train.preflight.storage import DiskNeed

DRY_STEPS = 4  # the first is a warm-up; the median of the other gaps is the time per step
LEVER_STEPS = 2  # a lever's dry run: enough for the optimizer state and a full step's activations
DRY_RUN_NAME = "estimate"


class EstimateError(RuntimeError):
    """A dry run that could not run (its message says why, with the child's last lines)."""


@dataclass(frozen=True)
class DryRun:
    """What one dry run measured."""

    peak_rss_mb: float  # the child process's peak resident memory (MiB)
    peak_cuda_mb: float | None  # peak allocated CUDA memory (MiB), None off CUDA
    setup_s: float  # launch to the first step, less one step
    step_s: float  # median seconds per optimizer step
    epoch_s: float  # what an epoch's end adds (its event, the per-image record, the next epoch's plan)
    validation_s: float  # the final validation pass (0 without a split)
    save_s: float  # the final save and the process's exit
    steps: int
    device: str

    @property
    def peak_mb(self) -> float:
        """The figure that limits the run: GPU memory on CUDA, else host memory."""
        return self.peak_cuda_mb if self.peak_cuda_mb is not None else self.peak_rss_mb


@dataclass(frozen=True)
class Lever:
    """One memory-saving option: the ``--set`` lines, what it is, and its dry run's peak (None: it failed)."""

    sets: tuple[str, ...]
    what: str
    peak_mb: float | None = None
    problem: str = ""


@dataclass
class Estimate:
    """The whole estimate of a config."""

    run: DryRun
    total_steps: int
    epochs: int
    validations: int
    saves: int
    samples: int
    disk: DiskNeed | None
    levers: list[Lever] = field(default_factory=list)

    @property
    def total_s(self) -> float:
        r = self.run
        return (r.setup_s + self.total_steps * r.step_s + max(self.epochs - 1, 0) * r.epoch_s
                + r.validation_s * self.validations + r.save_s * self.saves)

    def lines(self) -> list[str]:
        from train.preflight.storage import human
        from train.runs.track import fmt_duration

        r = self.run
        where = "GPU memory (peak allocated)" if r.peak_cuda_mb is not None else "host memory (peak RSS)"
        lines = [f"estimate from a {r.steps}-step dry run on {r.device}:",
                 f"  peak memory:   {fmt_mb(r.peak_mb)} {where}"
                 + (f"; host memory {fmt_mb(r.peak_rss_mb)}" if r.peak_cuda_mb is not None else ""),
                 f"  time per step: {r.step_s:.3f} s ({self.total_steps} steps, {self.epochs} epochs)",
                 f"  total time:    {fmt_duration(self.total_s)} (setup {fmt_duration(r.setup_s)}, training "
                 f"{fmt_duration(self.total_steps * r.step_s + max(self.epochs - 1, 0) * r.epoch_s)}"
                 + (f", {self.validations} validations x {r.validation_s:.1f} s" if self.validations else "")
                 + f", {self.saves} saves x {r.save_s:.1f} s)"]
        if self.samples:
            lines.append(f"                 not counted: {self.samples} sample preview(s)")
        if self.disk is not None:
            lines.append(f"  disk:          ~{human(sum(self.disk.by_folder.values()))} "
                         f"({'; '.join(self.disk.parts)})")
        if self.levers:
            lines.append("  memory levers (each measured by its own dry run):")
            for lever in self.levers:
                sets = " ".join(f"--set {s}" for s in lever.sets)
                if lever.peak_mb is None:
                    lines.append(f"    {lever.what}: not measured ({lever.problem})")
                    continue
                saved = r.peak_mb - lever.peak_mb
                change = f"-{fmt_mb(saved)}" if saved >= 0 else f"+{fmt_mb(-saved)}"
                lines.append(f"    {change:>10} -> {fmt_mb(lever.peak_mb)}  {lever.what}  ({sets})")
        return lines


def fmt_mb(mb: float) -> str:
    return f"{mb / 1024:.2f} GiB" if mb >= 1024 else f"{mb:.0f} MiB"


# ---------------------------------------------------------------------------------------------- dry runs
def dry_run_raw(cfg: TrainConfig, out_dir: Path, steps: int, sets: tuple[str, ...] = ()) -> dict[str, Any]:
    """The config of a dry run: ``cfg`` (plus ``sets``) for ``steps`` steps into ``out_dir``, without
    intermediate saves, samples, validation intervals or phases."""
    from train.config import apply_overrides, dump_config

    raw = tomllib.loads(dump_config(cfg))
    apply_overrides(raw, list(sets))
    t = raw.setdefault("train", {})
    for key in ("max_epochs", "validate_every_n_steps", "validate_every_n_epochs"):
        t.pop(key, None)
    t["max_steps"], t["phases"] = steps, []
    out = raw.setdefault("output", {})
    for key in ("save_every_n_steps", "save_every_n_epochs"):
        out.pop(key, None)
    out.update(dir=str(out_dir), name=DRY_RUN_NAME, save_state=False)
    raw.setdefault("sample", {})["enabled"] = False
    return raw


def dry_run(cfg: TrainConfig, steps: int = DRY_STEPS, sets: tuple[str, ...] = (),
            timeout_s: float | None = None) -> DryRun:
    """Train ``cfg`` for ``steps`` steps in a child process and measure it (see the module's docstring)."""
    from curator.fsutil import atomic_write_bytes
    from train.config import ConfigError, validate_raw
    from train.rundir import read_events

    with tempfile.TemporaryDirectory(prefix="kiln-estimate-") as tmp:
        folder = Path(tmp)
        raw = dry_run_raw(cfg, folder / "runs", steps, sets)
        try:
            validate_raw(raw, "the dry run's config")  # a lever the config cannot take fails here, clearly
        except ConfigError as exc:
            raise EstimateError("; ".join(exc.lines)) from None
        config_file = folder / "estimate.toml"
        atomic_write_bytes(config_file, _toml(raw).encode("utf-8"))
        started = time.time()
        proc = subprocess.Popen([sys.executable, "-m", "train.estimate", str(config_file)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ})
        try:
            output, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise EstimateError(f"the dry run took longer than {timeout_s:.0f} s") from None
        ended = time.time()
        # communicate() reaped the child; its resource usage is in RUSAGE_CHILDREN only as a maximum over
        # all children, so the child reports its own peak on its last line instead
        events = list(read_events(folder / "runs" / DRY_RUN_NAME))
        return _measure(events, output.decode("utf-8", "replace"), proc.returncode, started, ended)


def _measure(events: list[dict[str, Any]], output: str, returncode: int, started: float, ended: float) -> DryRun:
    peak_rss = next((float(line.split()[1]) for line in reversed(output.splitlines())
                     if line.startswith("peak_rss_mb ")), None)
    end = next((e for e in events if e["type"] == "end"), None)
    if returncode != 0 or end is None or end.get("reason") != "finished" or peak_rss is None:
        message = end.get("message") if end else None
        tail = "\n".join(output.strip().splitlines()[-8:])
        raise EstimateError(f"the dry run failed: {message or tail or f'exit code {returncode}'}")
    start = next(e for e in events if e["type"] == "start")
    steps = [e for e in events if e["type"] == "step"]
    times = [float(e["t"]) for e in steps]
    # gaps inside an epoch are steps; a gap across an epoch's end also holds the epoch's end and the next plan
    within = [b - a for a, b, ea, eb in zip(times, times[1:], steps, steps[1:], strict=False)
              if ea["epoch"] == eb["epoch"]]
    across = [b - a for a, b, ea, eb in zip(times, times[1:], steps, steps[1:], strict=False)
              if ea["epoch"] != eb["epoch"]]
    gaps = within or across
    step_s = statistics.median(gaps) if gaps else times[0] - float(start["t"])
    epoch_s = max(0.0, statistics.mean(across) - step_s) if within and across else 0.0
    validation = next((e for e in reversed(events) if e["type"] == "validation"), None)
    after_steps = float(validation["t"]) if validation else times[-1]
    cuda = [float(v) for v in [start.get("setup_mem_mb"), *(e.get("mem_mb") for e in steps)] if v is not None]
    return DryRun(peak_rss_mb=peak_rss, peak_cuda_mb=max(cuda) if cuda else None,
                  setup_s=max(0.0, times[0] - started - step_s), step_s=step_s, epoch_s=epoch_s,
                  validation_s=after_steps - times[-1], save_s=max(0.0, ended - after_steps), steps=len(steps),
                  device=str(start.get("device", "?")))


def _toml(raw: dict[str, Any]) -> str:
    from train.config import commented_config

    return commented_config(raw, title="kiln train --estimate dry run")


# ---------------------------------------------------------------------------------------------- the estimate
def memory_levers(cfg: TrainConfig, cuda: bool) -> list[Lever]:
    """The memory-saving options ``cfg`` does not use yet (only those its rules allow)."""
    d, t = cfg.dataset, cfg.train
    levers: list[Lever] = []
    if not t.gradient_checkpointing:
        levers.append(Lever(("train.gradient_checkpointing=true",), "gradient checkpointing (slower steps)"))
    if not d.cache_latents and not d.random_crop:
        levers.append(Lever(("dataset.cache_latents=true",), "cached latents (the VAE leaves the device)"))
    if not d.cache_text_encoder_outputs and not cfg.trains_text_encoder and not d.shuffle_caption \
            and not d.caption_dropout_rate and not d.caption_tag_dropout_rate and not d.caption_dropout_every_n_epochs:
        levers.append(Lever(("dataset.cache_text_encoder_outputs=true",),
                            "cached text-encoder outputs (the text encoders leave the device)"))
    if t.batch_size > 1:
        half = t.batch_size // 2
        levers.append(Lever((f"train.batch_size={half}",
                             f"train.gradient_accumulation_steps={t.gradient_accumulation_steps * t.batch_size // half}"),
                            "half the batch, twice the accumulation (same effective batch)"))
    if cuda and t.mixed_precision == "no":
        levers.append(Lever(("train.mixed_precision=bf16",), "bf16 mixed precision"))
    if cuda and t.optimizer == "AdamW":
        levers.append(Lever(("train.optimizer=AdamW8bit",), "8-bit AdamW (bitsandbytes)"))
    return levers


def estimate(cfg: TrainConfig, *, num_processes: int = 1, levers: bool = True,
             progress: Callable[[str], object] | None = None) -> Estimate:
    """Scan (the pre-flight), dry-run the config, then each memory lever; raises :class:`EstimateError`."""
    from train.preflight import Context, full_preflight
    from train.preflight.storage import estimate_disk

    report, data = full_preflight(cfg, num_processes=num_processes)
    if not report.ok or data is None:
        raise EstimateError(report.error_text() if not report.ok else "the dataset could not be scanned")
    steps = data.step_math(cfg.train, num_processes=num_processes)
    total, epochs = steps.total_steps or 0, steps.epochs or 0
    say = progress or (lambda message: None)
    say(f"dry run: {DRY_STEPS} steps")
    run = dry_run(cfg)
    result = Estimate(run=run, total_steps=total, epochs=epochs,
                      validations=validation_count(cfg, total, epochs, steps.steps_per_epoch),
                      saves=save_count(cfg, total, epochs), samples=sample_count(cfg, total, epochs),
                      disk=estimate_disk(Context(cfg=cfg, num_processes=num_processes, data=data)))
    if levers:
        for lever in memory_levers(cfg, cuda=run.peak_cuda_mb is not None):
            say(f"dry run: {lever.what}")
            try:
                measured = dry_run(cfg, LEVER_STEPS, lever.sets)
            except EstimateError as exc:  # a lever that fails is reported, the estimate stands
                result.levers.append(Lever(lever.sets, lever.what, None, (str(exc).splitlines() or ["?"])[0]))
                continue
            result.levers.append(Lever(lever.sets, lever.what, measured.peak_mb))
        result.levers.sort(key=lambda lv: lv.peak_mb if lv.peak_mb is not None else float("inf"))
    return result


def validation_count(cfg: TrainConfig, total: int, epochs: int, steps_per_epoch: int) -> int:
    """Validation passes of the full run (the loop's rule: every N steps, every N epochs, and the end)."""
    if cfg.dataset.validation_split <= 0 or total <= 0:
        return 0
    t = cfg.train
    at = {total}
    if t.validate_every_n_steps:
        at |= set(range(t.validate_every_n_steps, total + 1, t.validate_every_n_steps))
    every = t.validate_every_n_epochs or 1
    at |= {min(e * steps_per_epoch, total) for e in range(every, epochs + 1, every)}
    return len(at)


def save_count(cfg: TrainConfig, total: int, epochs: int) -> int:
    """LoRA files the full run writes: the step and epoch saves (never at the end) and the final one."""
    out = cfg.output
    saves = 1
    if out.save_every_n_steps:
        saves += max(total - 1, 0) // out.save_every_n_steps
    if out.save_every_n_epochs:
        saves += max(epochs - 1, 0) // out.save_every_n_epochs
    return saves


def sample_count(cfg: TrainConfig, total: int, epochs: int) -> int:
    """Preview images the full run renders (not part of the estimated time)."""
    s = cfg.sample
    if not s.enabled or not s.prompts:
        return 0
    times = (total // s.every_n_steps if s.every_n_steps else 0) + (epochs // s.every_n_epochs if s.every_n_epochs else 0)
    return len(s.prompts) * (times or 1)


# ---------------------------------------------------------------------------------------------- the child
def _child(config_file: Path) -> int:
    """The dry run itself: train the config quietly; the last line is the process's peak RSS."""
    import resource

    from train.cli import quiet_libraries
    from train.config import load_config
    from train.loop import train

    quiet_libraries()
    result = train(load_config(config_file), install_signals=False)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(f"peak_rss_mb {peak_kib / 1024:.1f}", flush=True)
    if result.reason != "finished":
        print(json.dumps({"reason": result.reason, "message": result.message}), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_child(Path(sys.argv[1])))
