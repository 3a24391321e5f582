"""What a resume continues from, said before it starts: the step, epoch and learning rates in ``state/``,
the optimizer and RNG state found, the saved LoRA of that step, and every config value that differs from the
stopped run's, each judged: safe (a longer run, save and sample cadence), needing ``--force`` (learning rates
and their schedule: the change is applied and written to the run log) or refused (anything the saved state
no longer fits: model, network, dataset, optimizer, batch, seed...)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from train.config import TrainConfig
    from train.state import Progress

Verdict = Literal["safe", "force", "refused"]

SAFE_KEYS = {
    "model.allow_pickle", "dataset.num_workers", "dataset.vae_batch_size", "train.gradient_checkpointing",
    "train.attention", "train.allow_unusual_lr", "output.save_every_n_epochs", "output.save_every_n_steps",
    "output.save_last_n", "output.save_state", "output.comment",
    # a full fine-tune's end: the LoRA extracted after it, which weights its checkpoints hold
    "output.extract_dim", "output.extract_conv_dim", "output.extract_clamp_quantile", "output.extract_min_diff",
    "finetune.save_ema",
}
SAFE_SECTIONS = ("sample.",)
SCHEDULE_KEYS = {"train.lr_scheduler", "train.lr_warmup", "train.lr_scheduler_num_cycles", "train.lr_scheduler_power"}


@dataclass(frozen=True)
class Change:
    key: str
    before: object
    after: object
    verdict: Verdict
    why: str = ""

    def line(self) -> str:
        from train.config import toml_value

        text = f"{self.key}: {toml_value(self.before) if self.before is not None else 'unset'} -> " \
               f"{toml_value(self.after) if self.after is not None else 'unset'}"
        return text + (f" ({self.why})" if self.why else "")


@dataclass
class ResumePlan:
    """What ``kiln train --resume`` continues from, and the config changes it was asked for."""

    run_dir: Path
    progress: Progress | None
    found: list[str] = field(default_factory=list)  # one line per thing found in state/
    changes: list[Change] = field(default_factory=list)
    problem: str = ""  # why there is nothing to resume

    @property
    def refused(self) -> list[Change]:
        return [c for c in self.changes if c.verdict == "refused"]

    @property
    def needs_force(self) -> list[Change]:
        return [c for c in self.changes if c.verdict == "force"]

    def lines(self) -> list[str]:
        out = [f"resuming {self.run_dir}", *("  " + line for line in self.found)]
        if self.changes:
            out.append("  config changes since the run stopped:")
            for change in self.changes:
                mark = {"safe": "ok", "force": "needs --force", "refused": "refused"}[change.verdict]
                out.append(f"    {change.line()}  [{mark}]")
        else:
            out.append("  config: unchanged")
        return out

    def refusal(self, force: bool) -> str:
        """Why this resume cannot go ahead ('' when it can)."""
        if self.problem:
            return self.problem
        if self.refused:
            keys = ", ".join(c.key for c in self.refused)
            return (f"cannot resume with {keys} changed: the saved state belongs to the old value. Resume "
                    f"without changing it, or start a new run (--set output.name=NEW) from the config")
        if self.needs_force and not force:
            keys = ", ".join(c.key for c in self.needs_force)
            return (f"{keys} changed: the learning rate of a run in progress changes only with --force "
                    "(the change is applied from the resumed step and written to the run log)")
        return ""


def _flatten(raw: dict[str, object], prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in raw.items():
        if isinstance(value, dict) and key != "optimizer_args":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def judge(key: str, before: object, after: object, progress: Progress | None) -> Change:
    """Whether changing ``key`` from ``before`` to ``after`` can go on from the saved state."""
    step = progress.step if progress else 0
    epoch = progress.epoch if progress else 1
    if key == "train.max_steps":
        if isinstance(after, int) and after <= step:
            return Change(key, before, after, "refused", f"the run is already at step {step}")
        return Change(key, before, after, "safe", "the LR schedule follows the new length")
    if key == "train.max_epochs":
        if isinstance(after, int) and after < epoch:
            return Change(key, before, after, "refused", f"the run is already in epoch {epoch}")
        return Change(key, before, after, "safe", "the LR schedule follows the new length")
    if key in SAFE_KEYS or key.startswith(SAFE_SECTIONS):
        return Change(key, before, after, "safe")
    name = key.rpartition(".")[2]
    if key.startswith("train.") and (name == "learning_rate" or name.endswith("_lr")):
        return Change(key, before, after, "force", "applied from the resumed step on")
    if key in SCHEDULE_KEYS:
        return Change(key, before, after, "force", "the schedule changes from the resumed step on")
    return Change(key, before, after, "refused", "the saved state does not fit it")


def config_changes(old: TrainConfig, new: TrainConfig, progress: Progress | None) -> list[Change]:
    """Every value that differs between the stopped run's config and the one asked for now, judged."""
    a = _flatten(old.model_dump(mode="json"))
    b = _flatten(new.model_dump(mode="json"))
    return [judge(key, a.get(key), b.get(key), progress) for key in sorted(set(a) | set(b))
            if a.get(key) != b.get(key)]


def _state_lines(state: Path, progress: Progress, old: TrainConfig) -> list[str]:
    import torch

    from train.outputs import step_file

    lines = [f"step {progress.step} of {progress.total_steps}, epoch {progress.epoch} "
             f"(batch {progress.batch_in_epoch} of it done)"]
    try:
        sched = torch.load(state / "scheduler.pt", weights_only=True, map_location="cpu")
        opt = torch.load(state / "optimizer.pt", weights_only=True, map_location="cpu")
    except (OSError, RuntimeError, EOFError) as exc:
        raise ValueError(f"{state}: the optimizer or scheduler state cannot be read ({exc})") from None
    lrs = ", ".join(f"{lr:g}" for lr in sched.get("_last_lr", []))
    groups = opt.get("param_groups", [])
    names = [str(g.get("name", i)) for i, g in enumerate(groups)]
    lines.append(f"learning rate {lrs} ({', '.join(names)}; scheduler {old.train.lr_scheduler} at step "
                 f"{sched.get('last_epoch')})")
    adapted = [f"{float(g['d']) * float(g['lr']):.3g}" for g in groups if "d" in g]
    lines.append(f"optimizer {old.train.optimizer}: state for {len(opt.get('state', {}))} tensors"
                 + (f", adapted step size d*lr {', '.join(adapted)}" if adapted else ""))
    rng = ["torch"] if (state / "rng.pt").is_file() else []
    try:
        extra = json.loads((state / "rng.json").read_text(encoding="utf-8"))
        rng += [k for k in ("numpy", "python") if k in extra]
        cuda = torch.load(state / "rng.pt", weights_only=True).get("cuda")
        rng += ["cuda"] if cuda else []
    except (OSError, ValueError, RuntimeError):
        pass
    lines.append(f"RNG state: {', '.join(rng) or 'none found (the data order still follows the seed)'}")
    lora = state.parent / step_file(old.output.name, progress.step)
    lines.append(f"continues from {lora if lora.is_file() else state / 'network.safetensors'}")
    return lines


def plan_resume(run_dir: Path, new: TrainConfig) -> ResumePlan:
    """Read ``run_dir``'s state and config and compare them with ``new`` (the config the resume would use)."""
    from train.config import ConfigError, load_config
    from train.rundir import CONFIG, STATE_DIR
    from train.state import latest_state, load_progress

    run_dir = Path(run_dir)
    state = latest_state(run_dir)  # what the loop resumes from: state/, or state.old/ after a kill mid-save
    if state is None:
        return ResumePlan(run_dir, None, problem=f"{run_dir}: no resumable state/ in this run directory (it is "
                          "written when a run is stopped, with save-now, or with output.save_state = true)")
    try:
        old = load_config(run_dir / CONFIG)
        progress = load_progress(state)
        found = _state_lines(state, progress, old)
        if state.name != STATE_DIR:
            found.append(f"{STATE_DIR}/ was being replaced when the run stopped: continuing from {state.name}/, "
                         "the last complete state")
    except (ConfigError, ValueError, OSError) as exc:
        return ResumePlan(run_dir, None, problem=f"{run_dir}: cannot read the stopped run: {exc}")
    return ResumePlan(run_dir, progress, found=found, changes=config_changes(old, new, progress))
