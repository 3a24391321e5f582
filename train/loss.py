"""The diffusion loss: l2 or pseudo-Huber, per-sample weights (prior_loss_weight), Min-SNR weighting (kohya's
formula, v-prediction included), and noise offset."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import torch

    from train.models.kinds import DDPMScheduler


def add_noise(scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor,
              timesteps: torch.Tensor) -> torch.Tensor:
    """The forward diffusion: each sample's latents noised to its timestep."""
    # diffusers annotates timesteps as the legacy IntTensor class; any integer tensor is what it takes
    return scheduler.add_noise(latents, noise, cast("torch.IntTensor", timesteps))


def diffusion_target(scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                     *, v_prediction: bool) -> torch.Tensor:
    """What the UNet learns to predict: the noise, or the velocity v for v-prediction models."""
    if v_prediction:
        return scheduler.get_velocity(latents, noise, cast("torch.IntTensor", timesteps))
    return noise


def snr_table(noise_scheduler: DDPMScheduler) -> torch.Tensor:
    """SNR(t) = alpha_bar / (1 - alpha_bar) for every timestep."""
    alphas_cumprod = noise_scheduler.alphas_cumprod.float()
    return alphas_cumprod / (1.0 - alphas_cumprod)


def min_snr_weight(snr: torch.Tensor, timesteps: torch.Tensor, gamma: float, v_prediction: bool) -> torch.Tensor:
    """kohya ``apply_snr_weight``: min(SNR, gamma) / SNR, or / (SNR + 1) for v-prediction."""
    import torch

    s = snr.to(timesteps.device)[timesteps]
    clipped = torch.minimum(s, torch.full_like(s, gamma))
    return (clipped / (s + 1)) if v_prediction else (clipped / s)


def elementwise_loss(pred: torch.Tensor, target: torch.Tensor, loss_type: str, huber_c: float) -> torch.Tensor:
    import torch

    pred, target = pred.float(), target.float()
    if loss_type == "huber":
        return 2 * huber_c * (torch.sqrt((pred - target) ** 2 + huber_c**2) - huber_c)
    return torch.nn.functional.mse_loss(pred, target, reduction="none")


def sample_losses(pred: torch.Tensor, target: torch.Tensor, loss_type: str = "l2",
                  huber_c: float = 0.1) -> torch.Tensor:
    """Each sample's loss: the mean over its pixels, before any weighting (what per-image rankings and the
    validation loss look at)."""
    return elementwise_loss(pred, target, loss_type, huber_c).mean(dim=[1, 2, 3])


def weighted_loss(per_sample: torch.Tensor, timesteps: torch.Tensor, *, loss_weights: torch.Tensor,
                  min_snr_gamma: float | None = None, snr: torch.Tensor | None = None,
                  v_prediction: bool = False) -> torch.Tensor:
    """The training loss from the per-sample losses: times each sample's weight (and Min-SNR), mean over
    the batch."""
    loss = per_sample * loss_weights.to(per_sample.device)
    if min_snr_gamma:
        assert snr is not None, "Min-SNR weighting needs the SNR table"
        loss = loss * min_snr_weight(snr, timesteps, min_snr_gamma, v_prediction)
    return loss.mean()


def diffusion_loss(
    pred: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor, *, loss_weights: torch.Tensor,
    loss_type: str = "l2", huber_c: float = 0.1, min_snr_gamma: float | None = None, snr: torch.Tensor | None = None,
    v_prediction: bool = False,
) -> torch.Tensor:
    """Mean over pixels, times each sample's weight (and Min-SNR), mean over the batch."""
    return weighted_loss(sample_losses(pred, target, loss_type, huber_c), timesteps, loss_weights=loss_weights,
                         min_snr_gamma=min_snr_gamma, snr=snr, v_prediction=v_prediction)


def fixed_noise(latent_shape: tuple[int, ...], seeds: list[int], device: torch.device | str) -> torch.Tensor:
    """Plain Gaussian noise, each sample from its own seed (no offset): the validation loss's noise."""
    import torch

    return torch.stack([torch.randn(latent_shape, generator=torch.Generator().manual_seed(s))
                        for s in seeds]).to(device)


def sample_noise(latent_shape: tuple[int, ...], seeds: list[int], noise_offset: float, t_range: tuple[int, int],
                 device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise (with offset) and timesteps, each sample from its own seed: identical however batches are split."""
    import torch

    noises, steps = [], []
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        n = torch.randn(latent_shape, generator=g)
        if noise_offset:
            n = n + noise_offset * torch.randn((latent_shape[0], 1, 1), generator=g)
        noises.append(n)
        steps.append(int(torch.randint(t_range[0], t_range[1], (1,), generator=g).item()))
    return torch.stack(noises).to(device), torch.tensor(steps, dtype=torch.long, device=device)
