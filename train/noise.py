"""The noise each training sample is diffused with, and its timestep: kohya's options, drawn per sample.

kohya (``train_util.get_noise_noisy_latents_and_timesteps``, ``custom_train_functions``):

* noise offset: ``noise + offset * N(0, 1)`` per channel (one value per channel over the whole image);
  ``noise_offset_random_strength`` draws the offset uniformly in ``[0, offset)``; ``adaptive_noise_scale`` adds
  ``scale * |mean of the latent's channel|`` to the offset (clamped at 0).
* multires (pyramid) noise: ``multires_noise_iterations`` times, noise at ``1 / r**i`` of the resolution
  (``r`` uniform in [2, 4)) is upsampled bilinearly and added with weight ``discount**i``; the sum is scaled back
  to unit standard deviation.
* input perturbation (``ip_noise_gamma``): the noisy latents are made with ``noise + gamma * N(0, 1)`` while the
  target stays ``noise``; ``ip_noise_gamma_random_strength`` draws gamma uniformly in ``[0, gamma)``.

kiln draws everything from each sample's own seed, so a sample sees the same noise however batches are split
over processes and on resume. kohya draws the random strengths once per batch and normalises pyramid noise over
the whole batch; here both are per sample (the same distribution for each sample).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from train.data.dataset import mix_seed

if TYPE_CHECKING:
    import torch

    from train.config import TrainSection


@dataclass(frozen=True)
class NoiseSettings:
    """The noise options of ``[train]`` (see the module docstring)."""

    offset: float = 0.0
    offset_random_strength: bool = False
    adaptive_scale: float | None = None
    multires_iterations: int | None = None
    multires_discount: float = 0.3
    ip_gamma: float | None = None
    ip_gamma_random_strength: bool = False

    @classmethod
    def from_train(cls, t: TrainSection) -> NoiseSettings:
        return cls(offset=t.noise_offset, offset_random_strength=t.noise_offset_random_strength,
                   adaptive_scale=t.adaptive_noise_scale, multires_iterations=t.multires_noise_iterations,
                   multires_discount=t.multires_noise_discount, ip_gamma=t.ip_noise_gamma,
                   ip_gamma_random_strength=t.ip_noise_gamma_random_strength)


@dataclass
class NoiseDraw:
    """One batch's draw: ``noise`` is what the model learns to predict (or derive v from), ``noisy_noise`` what
    the latents are diffused with (``noise`` plus the input perturbation, if any), and the timesteps."""

    noise: torch.Tensor
    noisy_noise: torch.Tensor
    timesteps: torch.Tensor


def pyramid_noise(noise: torch.Tensor, generator: torch.Generator, iterations: int, discount: float) -> torch.Tensor:
    """kohya's ``pyramid_noise_like`` for one sample (C, H, W): lower-resolution noise added ``iterations``
    times, each level ``1 / r**i`` of the size (``r`` in [2, 4)) weighted ``discount**i``, then unit std."""
    import torch

    channels, height, width = noise.shape
    out = noise.clone()
    for i in range(iterations):
        r = float(torch.rand(1, generator=generator)) * 2 + 2
        h, w = max(1, int(height / r**i)), max(1, int(width / r**i))
        low = torch.randn((1, channels, h, w), generator=generator)
        up = torch.nn.functional.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)
        out += up[0] * discount**i
        if h == 1 or w == 1:
            break
    return out / out.std()


def draw_noise(latents: torch.Tensor, seeds: list[int], settings: NoiseSettings,
               t_range: tuple[int, int]) -> NoiseDraw:
    """The noise and timestep of every sample of a batch of ``latents`` (B, C, H, W), each from its seed."""
    import torch

    shape = tuple(latents.shape[1:])
    channel_means: list[list[float]] | None = None
    if settings.offset and settings.adaptive_scale is not None:
        channel_means = latents.detach().float().mean(dim=(2, 3)).abs().cpu().tolist()
    noises, noisy, steps = [], [], []
    for index, seed in enumerate(seeds):
        g = torch.Generator().manual_seed(seed)
        n = torch.randn(shape, generator=g)
        offset_draw = torch.randn((shape[0], 1, 1), generator=g) if settings.offset else None
        steps.append(int(torch.randint(t_range[0], t_range[1], (1,), generator=g).item()))
        extra = torch.Generator().manual_seed(mix_seed(seed, 0x401CE))  # the options' own stream
        if offset_draw is not None:
            strength = settings.offset * (float(torch.rand(1, generator=extra))
                                          if settings.offset_random_strength else 1.0)
            offset = torch.full((shape[0], 1, 1), strength)
            if channel_means is not None:
                assert settings.adaptive_scale is not None
                means = torch.tensor(channel_means[index]).view(-1, 1, 1)
                offset = torch.clamp(offset + settings.adaptive_scale * means, min=0.0)
            n = n + offset * offset_draw
        if settings.multires_iterations:
            n = pyramid_noise(n, extra, settings.multires_iterations, settings.multires_discount)
        noises.append(n)
        if settings.ip_gamma:
            gamma = settings.ip_gamma * (float(torch.rand(1, generator=extra))
                                         if settings.ip_gamma_random_strength else 1.0)
            noisy.append(n + gamma * torch.randn(shape, generator=extra))
        else:
            noisy.append(n)
    device = latents.device
    noise = torch.stack(noises).to(device)
    noisy_noise = torch.stack(noisy).to(device) if settings.ip_gamma else noise
    return NoiseDraw(noise=noise, noisy_noise=noisy_noise,
                     timesteps=torch.tensor(steps, dtype=torch.long, device=device))


def zero_terminal_snr(t: TrainSection, *, checkpoint_ztsnr: bool, v_prediction: bool) -> tuple[bool, list[str]]:
    """Whether to train with the zero-terminal-SNR schedule (``train.zero_terminal_snr``; unset: when the
    checkpoint says it was trained so) and the notes for the log."""
    on = t.zero_terminal_snr if t.zero_terminal_snr is not None else checkpoint_ztsnr
    notes: list[str] = []
    if on and t.zero_terminal_snr is None:
        notes.append("the checkpoint was trained with zero terminal SNR (it carries a 'ztsnr' key): training with "
                     "the rescaled noise schedule (set train.zero_terminal_snr = false to keep the stock one)")
    if on and not v_prediction:
        notes.append("zero terminal SNR with a noise-prediction model: at the last timestep there is no image left "
                     "to tell the noise from (kohya warns the same); a v-prediction model is what it is made for")
    return on, notes
