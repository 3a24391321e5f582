"""The validation loss: the images ``dataset.validation_split`` holds out, denoised at fixed timesteps with fixed
noise, so the number compares between steps of a run and between runs.

Fixed means: the same held-out images (chosen by ``dataset.validation_seed`` only), no flips, random crops,
caption shuffling or dropout, the latent drawn from a seed, kohya's timesteps (``linspace(min_timestep,
max_timestep, 6)[1:-1]``: 200, 400, 600, 800 over the full range) and plain Gaussian noise seeded by
``(validation_seed, image position, timestep)``. The loss is the plain per-sample MSE of the prediction
(eps or v), without prior-loss or Min-SNR weights or the Huber form, so runs with different loss settings
still compare. Several processes split the batches and add up.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from train.data.captions import CaptionSettings
from train.data.dataset import Sample, TrainItem, mix_seed

if TYPE_CHECKING:
    import torch

    from train.data.loader import BatchBuilder
    from train.denoiser import Denoiser
    from train.models.loading import BaseModel
    from train.processes import Accelerator

VALIDATION_TIMESTEPS = 4  # kohya's NUM_VALIDATION_TIMESTEPS


def validation_timesteps(min_timestep: int, max_timestep: int, count: int = VALIDATION_TIMESTEPS) -> list[int]:
    """kohya's ``np.linspace(min, max, count + 2, dtype=int)[1:-1]``."""
    span = max_timestep - min_timestep
    return [int(min_timestep + span * (i + 1) / (count + 1)) for i in range(count)]


def validation_captions(captions: CaptionSettings) -> CaptionSettings:
    """The training's caption settings without their randomness (prefix and suffix kept)."""
    return replace(captions, shuffle=False, dropout_rate=0.0, dropout_every_n_epochs=0, tag_dropout_rate=0.0)


def plan_validation(items: list[TrainItem], batch_size: int) -> list[list[Sample]]:
    """The validation batches: each from one bucket, in a fixed order (bucket, then path); a sample's position
    (its noise seed) is its place in that order."""
    ordered = sorted(items, key=lambda i: (i.bucket, i.path))
    batches: list[list[Sample]] = []
    position = 0
    by_bucket: dict[tuple[int, int], list[TrainItem]] = {}
    for item in ordered:
        by_bucket.setdefault(item.bucket, []).append(item)
    for bucket in sorted(by_bucket):
        members = by_bucket[bucket]
        for start in range(0, len(members), batch_size):
            chunk = members[start:start + batch_size]
            batches.append([Sample(item=i.index, position=position + k) for k, i in enumerate(chunk)])
            position += len(chunk)
    return batches


@dataclass(frozen=True)
class ValidationResult:
    """The mean validation loss, its value per timestep and how many images it covers."""

    loss: float
    timesteps: list[int]
    per_timestep: list[float]
    images: int


class Validator:
    """Computes the validation loss with the network as it is now (eval mode, no gradients)."""

    def __init__(self, items: list[TrainItem], *, builder: BatchBuilder, base: BaseModel, seed: int,
                 timesteps: list[int], batch_size: int, max_batches: int | None, device: torch.device,
                 accelerator: Accelerator) -> None:
        self.items, self.builder, self.base, self.seed = items, builder, base, seed
        self.timesteps, self.device, self.accelerator = timesteps, device, accelerator
        plan = plan_validation(items, batch_size)
        self.plan = plan[:max_batches] if max_batches else plan

    @property
    def images(self) -> int:
        return sum(len(b) for b in self.plan)

    def run(self, denoiser: Denoiser) -> ValidationResult:
        import torch

        from train.denoiser import batch_latents
        from train.loss import add_noise, diffusion_target, fixed_noise, sample_losses

        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        sums = torch.zeros(len(self.timesteps) + 1, dtype=torch.float64, device=self.device)
        was_training = denoiser.network.training
        denoiser.network.eval()
        try:
            with torch.no_grad():
                for index, samples in enumerate(self.plan):
                    if index % world != rank:
                        continue
                    batch = self.builder.build(samples, epoch=0)
                    latents = batch_latents(batch, self.base.vae, self.device)
                    for k, t in enumerate(self.timesteps):
                        noise = fixed_noise(tuple(latents.shape[1:]),
                                            [mix_seed(self.seed, s.position, t) for s in samples], self.device)
                        steps = torch.full((len(samples),), t, dtype=torch.long, device=self.device)
                        noisy = add_noise(self.base.noise_scheduler, latents, noise, steps)
                        pred = denoiser(noisy, steps, batch)
                        target = diffusion_target(self.base.noise_scheduler, latents, noise, steps,
                                                  v_prediction=self.base.v_prediction)
                        sums[k] += sample_losses(pred, target).double().sum()
                    sums[-1] += len(samples)
        finally:
            denoiser.network.train(was_training)
        if world > 1:
            sums = self.accelerator.reduce(sums, reduction="sum")
        count = max(float(sums[-1].item()), 1.0)
        per_timestep = [float(v) / count for v in sums[:-1].tolist()]
        return ValidationResult(loss=sum(per_timestep) / len(per_timestep), timesteps=list(self.timesteps),
                                per_timestep=per_timestep, images=int(sums[-1].item()))
