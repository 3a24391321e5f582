"""How training fails: errors whose message says what to change, and the words for the rest."""

from __future__ import annotations

NAN_HELP = (
    "the loss became {value} at step {step}. Likely causes: an fp16 VAE overflowing (use the bf16/fp32 VAE or "
    "the fp16-fix VAE via model.vae, or train.mixed_precision = \"bf16\"), or a learning rate too high "
    "(lower train.learning_rate / unet_lr / text_encoder_lr, or add warmup with train.lr_warmup)."
)
OOM_HELP = (
    "out of {memory} memory{where}. Options that cut memory: lower train.batch_size (use "
    "gradient_accumulation_steps to keep the effective batch), train.gradient_checkpointing = true, "
    "dataset.cache_latents = true, an 8-bit optimizer (train.optimizer = \"AdamW8bit\") or Adafactor, a lower "
    "dataset.resolution / max_bucket_reso, and training the UNet only (network.train_text_encoder = false, with "
    "dataset.cache_text_encoder_outputs)."
)
BAD_STEPS_HELP = (
    " {count} optimizer step(s) in a row had a non-finite loss and were skipped without updating the network; "
    "train.max_bad_steps = {limit} stops the run there."
)


class TrainingError(RuntimeError):
    """Training stopped with a problem the user can fix; the message says how."""


class StoppedEarly(Exception):
    """A stop was requested before the first step (while scanning, loading or caching): nothing to save.
    ``during`` says what was going on, ``kept`` what of it stays on disk for the next run."""

    def __init__(self, reason: str, during: str = "", kept: str = "") -> None:
        super().__init__(reason)
        self.reason, self.during, self.kept = reason, during, kept

    def message(self) -> str:
        during = f" while {self.during}" if self.during else " before training started"
        kept = f"; {self.kept}" if self.kept else ""
        return f"stopped by {self.reason}{during}; nothing was trained or saved{kept}"


def non_finite_stop(value: float, step: int, count: int, limit: int) -> TrainingError:
    """The error that stops a run after ``count`` steps in a row with a NaN/inf loss (``step``: the optimizer
    step being computed when the last one came)."""
    return TrainingError(NAN_HELP.format(value=value, step=step) + BAD_STEPS_HELP.format(count=count, limit=limit))


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message already says what to change (bad dataset, model file, optimizer, state, a full
    disk)."""
    from curator.faults import DiskFullError
    from curator.layout import LayoutError
    from train.data.dataset import DatasetError
    from train.models.arch import ModelLoadError
    from train.optim import OptimizerError
    from train.prompts import PromptError

    return (TrainingError, DatasetError, LayoutError, ModelLoadError, OptimizerError, DiskFullError, PromptError)


def explain_failure(exc: BaseException, step: int | None = None) -> str:
    """The message for an unexpected failure: out-of-memory gets the options that cut memory (``step``: the
    optimizer step being computed, None before training started)."""
    kind = oom_kind(exc)
    if kind:
        where = f" at step {step}" if step else " before the first step"
        return OOM_HELP.format(memory=kind, where=where)
    return f"{type(exc).__name__}: {exc}"


def oom_kind(exc: BaseException) -> str | None:
    """'GPU' or 'CPU' when ``exc`` is an out-of-memory error (CUDA's allocator, PyTorch's CPU allocator, a
    Python MemoryError), else None."""
    import torch

    text = str(exc)
    if isinstance(exc, torch.cuda.OutOfMemoryError) or ("out of memory" in text.lower() and "CUDA" in text):
        return "GPU"
    if isinstance(exc, MemoryError) or "DefaultCPUAllocator: can't allocate memory" in text or (
        isinstance(exc, RuntimeError) and "not enough memory" in text.lower()
    ):
        return "CPU"
    return None


def is_oom(exc: BaseException) -> bool:
    return oom_kind(exc) is not None
