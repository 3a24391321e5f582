"""What a full fine-tune holds in memory besides activations, said before it starts (``kiln train --check``
and the run's first ``phase`` event): weights, gradients, optimizer state, fp32 masters, EMA, frozen parts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from train.finetune.config import FinetuneSection

if TYPE_CHECKING:
    from train.config import TrainConfig
    from train.models.arch import Arch

# Optimizer state in bytes per trained weight (fp32 state unless the optimizer quantizes it).
_STATE_BYTES = {
    "AdamW": 8.0, "AdamW8bit": 2.0, "PagedAdamW8bit": 2.0, "Lion": 4.0, "Lion8bit": 1.0, "Prodigy": 16.0,
    "DAdaptAdam": 12.0, "SGD": 0.0,
}


@dataclass
class MemoryPlan:
    """``parts``: (what, bytes, where) rows; ``notes``: what the figures leave out or assume."""

    parts: list[tuple[str, float, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def on(self, where: str) -> float:
        return sum(size for _, size, at in self.parts if at == where)

    def lines(self) -> list[str]:
        rows = [f"{what}: {gib(size)}{'' if at == 'device' else ' (CPU memory)'}" for what, size, at in self.parts]
        rows.append(f"total on the training device: {gib(self.on('device'))} + activations")
        return rows + self.notes

    def summary(self) -> str:
        """One line for the run's log."""
        shown = ", ".join(f"{what} {gib(size)}" + ("" if at == "device" else " (CPU)") for what, size, at in self.parts)
        return f"full fine-tune memory: {shown}; device total {gib(self.on('device'))} + activations"


def gib(size: float) -> str:
    """A size in GiB (MiB below 1 GiB)."""
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def plan_memory(trained: int, frozen: int, *, finetune: FinetuneSection, optimizer: str, compute_bytes: int,
                sgd_momentum: bool = False, vae: int = 0) -> MemoryPlan:
    """The plan for ``trained`` weights trained, ``frozen`` weights held in the compute dtype (``compute_bytes``
    per weight: 2 under bf16/fp16 mixed precision, else 4) and ``vae`` VAE weights on the device (always fp32)."""
    plan = MemoryPlan()
    weight_bytes = 2 if finetune.weights == "bf16" else 4
    master = finetune.weights == "bf16" and finetune.bf16_update == "master"
    plan.parts.append((f"trained weights ({finetune.weights})", trained * weight_bytes, "device"))
    if finetune.fused_backward:
        plan.notes.append("gradients: one tensor at a time (the optimizer steps inside backward)")
    else:
        grad_bytes = 4 if master else weight_bytes  # master mode sums gradients in fp32 on the masters
        plan.parts.append(("gradients", trained * grad_bytes, "device"))
    if master:
        plan.parts.append(("fp32 master weights", trained * 4, "device"))
    state = _STATE_BYTES.get(optimizer)
    if optimizer == "SGD" and sgd_momentum:
        state = 4.0
    if optimizer == "Adafactor":
        plan.notes.append("optimizer state: Adafactor's factored moments, a small fraction of the weights")
    elif state is None:
        plan.notes.append(f"optimizer state: unknown for {optimizer} (not counted)")
    elif state:
        plan.parts.append((f"optimizer state ({optimizer})", trained * state, "device"))
    if finetune.ema:
        plan.parts.append((f"EMA (fp32, decay {finetune.ema_decay:g})", trained * 4,
                           "cpu" if finetune.ema_on_cpu else "device"))
    if finetune.weights == "bf16" and finetune.bf16_update == "stochastic" and not finetune.fused_backward:
        plan.notes.append("the optimizer step widens the weights to fp32 while it runs (+2 bytes per weight for "
                          "that moment; finetune.fused_backward steps one tensor at a time instead)")
    if frozen or vae:
        plan.parts.append(("frozen parts on the device", frozen * compute_bytes + vae * 4, "device"))
    return plan


@dataclass(frozen=True)
class WeightCounts:
    """Weights of the model ``cfg`` fine-tunes, by part (counted on meta-device models, no memory)."""

    unet: int
    text_encoders: int
    vae: int

    @property
    def total(self) -> int:
        return self.unet + self.text_encoders + self.vae

    def trained(self, cfg: TrainConfig) -> int:
        return (self.unet if cfg.network.train_unet else 0) + (self.text_encoders if cfg.trains_text_encoder else 0)


def weight_counts(cfg: TrainConfig, arch: Arch) -> WeightCounts:
    """The sizes of ``cfg``'s model: of ``model.config_dir`` or the diffusers folder when there is one, else the
    architecture's standard ones."""
    from train.models.meta import count_parameters, meta_model, meta_model_from_dir, meta_vae

    path, config_dir = Path(cfg.model.path), cfg.model.config_dir
    folder = config_dir if config_dir is not None else path if path.is_dir() else None
    meta = meta_model_from_dir(folder, arch) if folder is not None else meta_model(arch)
    vae = count_parameters(meta_vae(arch)) if folder is None else _folder_vae_size(folder)
    return WeightCounts(count_parameters(meta.unet), sum(count_parameters(te) for te in meta.text_encoders), vae)


def extra_state_bytes(finetune: FinetuneSection, trained: int) -> int:
    """``state/extra.safetensors``: the fp32 masters and the EMA."""
    masters = finetune.weights == "bf16" and finetune.bf16_update == "master"
    return trained * 4 * (int(masters) + int(finetune.ema))


def planned_memory(cfg: TrainConfig, arch: Arch) -> MemoryPlan:
    """The plan for ``cfg`` before any weight is loaded (sizes from :func:`weight_counts`)."""
    counts = weight_counts(cfg, arch)
    unet, encoders, vae = counts.unet, counts.text_encoders, counts.vae
    trained = counts.trained(cfg)
    d = cfg.dataset
    # with caches, the VAE / the text encoders leave the GPU once they are filled (train.staging)
    vae_on_device = 0 if d.cache_latents or d.cache_latents_to_disk else vae
    frozen = (0 if cfg.network.train_unet else unet) \
        + (0 if cfg.trains_text_encoder or d.cache_text_encoder_outputs else encoders)
    mixed = cfg.train.mixed_precision
    compute = 4 if mixed == "no" else 2  # auto: bf16/fp16 on a GPU
    return plan_memory(trained, frozen, finetune=cfg.finetune, optimizer=cfg.train.optimizer, compute_bytes=compute,
                       sgd_momentum=bool(cfg.train.optimizer_args.get("momentum")), vae=vae_on_device)


def _folder_vae_size(folder: Path) -> int:
    import json

    import torch
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    config = json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8"))
    with torch.device("meta"):
        vae = AutoencoderKL.from_config(config)
    return sum(p.numel() for p in vae.parameters())
