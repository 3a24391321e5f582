"""The diffusion loss: l2 or pseudo-Huber, per-sample weights (prior_loss_weight), Min-SNR weighting (kohya's
formula, v-prediction included), and noise offset."""

from __future__ import annotations

from typing import Any


def snr_table(noise_scheduler: Any) -> Any:
    """SNR(t) = alpha_bar / (1 - alpha_bar) for every timestep."""
    alphas_cumprod = noise_scheduler.alphas_cumprod.float()
    return alphas_cumprod / (1.0 - alphas_cumprod)


def min_snr_weight(snr: Any, timesteps: Any, gamma: float, v_prediction: bool) -> Any:
    """kohya ``apply_snr_weight``: min(SNR, gamma) / SNR, or / (SNR + 1) for v-prediction."""
    import torch

    s = snr.to(timesteps.device)[timesteps]
    clipped = torch.minimum(s, torch.full_like(s, gamma))
    return (clipped / (s + 1)) if v_prediction else (clipped / s)


def elementwise_loss(pred: Any, target: Any, loss_type: str, huber_c: float) -> Any:
    import torch

    pred, target = pred.float(), target.float()
    if loss_type == "huber":
        return 2 * huber_c * (torch.sqrt((pred - target) ** 2 + huber_c**2) - huber_c)
    return torch.nn.functional.mse_loss(pred, target, reduction="none")


def diffusion_loss(
    pred: Any, target: Any, timesteps: Any, *, loss_weights: Any, loss_type: str = "l2", huber_c: float = 0.1,
    min_snr_gamma: float | None = None, snr: Any = None, v_prediction: bool = False,
) -> Any:
    """Mean over pixels, times each sample's weight (and Min-SNR), mean over the batch."""
    loss = elementwise_loss(pred, target, loss_type, huber_c).mean(dim=[1, 2, 3])
    loss = loss * loss_weights.to(loss.device)
    if min_snr_gamma:
        loss = loss * min_snr_weight(snr, timesteps, min_snr_gamma, v_prediction)
    return loss.mean()


def sample_noise(latent_shape: tuple[int, ...], seeds: list[int], noise_offset: float, t_range: tuple[int, int],
                 device: Any) -> tuple[Any, Any]:
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
