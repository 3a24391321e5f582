"""How training fails: errors whose message says what to change, and the words for the rest."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

NAN_HELP = (
    "the loss became {value} at step {step}. Likely causes: an fp16 VAE overflowing (use the bf16/fp32 VAE or "
    "the fp16-fix VAE via model.vae, or train.mixed_precision = \"bf16\"), or a learning rate too high "
    "(lower train.learning_rate / unet_lr / text_encoder_lr, or add warmup with train.lr_warmup)."
)
OOM_HELP = (
    "out of GPU memory. Options that cut memory: lower train.batch_size (use gradient_accumulation_steps to "
    "keep the effective batch), train.gradient_checkpointing = true, dataset.cache_latents = true, an 8-bit "
    "optimizer (train.optimizer = \"AdamW8bit\") or Adafactor, a lower dataset.resolution / max_bucket_reso, "
    "and training the UNet only (network.train_text_encoder = false, with dataset.cache_text_encoder_outputs)."
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


def check_finite(loss: torch.Tensor, step: int) -> None:
    """Stop at a NaN/inf loss with its likely causes (``step``: the optimizer step being computed)."""
    import torch

    if not torch.isfinite(loss):
        raise TrainingError(NAN_HELP.format(value=loss.item(), step=step))


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message already says what to change (bad dataset, model file, optimizer, state)."""
    from curator.layout import LayoutError
    from train.data.dataset import DatasetError
    from train.models.arch import ModelLoadError
    from train.optim import OptimizerError

    return (TrainingError, DatasetError, LayoutError, ModelLoadError, OptimizerError)


def explain_failure(exc: BaseException) -> str:
    """The message for an unexpected failure: out-of-memory gets the options that cut memory."""
    if is_oom(exc):
        return OOM_HELP
    return f"{type(exc).__name__}: {exc}"


def is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or ("out of memory" in str(exc).lower()
                                                            and "CUDA" in str(exc))
