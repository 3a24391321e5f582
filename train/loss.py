"""The diffusion loss, as kohya sd-scripts computes it (``train_network.process_batch``):

1. element-wise ``l2`` / ``l1`` / ``huber`` (pseudo-Huber) / ``smooth_l1``; the Huber parameter ``c`` follows
   ``huber_schedule`` per timestep (``train_util.get_huber_threshold_if_needed``),
2. times the alpha mask (``masked_loss``), averaged over the latent pixels,
3. times each sample's weight (``prior_loss_weight`` for regularisation images),
4. kohya's ``post_process_loss``: Min-SNR weighting, ``scale_v_pred_loss_like_noise_pred``,
   ``v_pred_like_loss``, ``debiased_estimation_loss``,
5. averaged over the batch.

Also the forward diffusion and the prediction target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import torch

    from train.config import HuberSchedule, LossType, TrainSection
    from train.models.kinds import DDPMScheduler

SNR_CAP = 1000.0  # kohya caps SNR(t) at 1000 where it divides by it (t = 0 is nearly noise-free)


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


def huber_c_for(timesteps: torch.Tensor, *, schedule: HuberSchedule, huber_c: float, huber_scale: float,
                alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The Huber parameter of each sample (kohya's ``get_huber_threshold_if_needed``):

    * ``constant``: ``huber_c * huber_scale``;
    * ``exponential``: ``exp(-a t) * huber_scale`` with ``a = -ln(huber_c) / T`` (1 at t = 0, ``huber_c`` at T);
    * ``snr``: ``(1 - huber_c) / (1 + sigma_t)**2 + huber_c`` with ``sigma_t = sqrt((1 - alpha_bar) / alpha_bar)``
      (``huber_scale`` is not used, as in kohya).
    """
    import torch

    steps = timesteps.to(alphas_cumprod.device)
    if schedule == "constant":
        c = torch.full(steps.shape, huber_c * huber_scale, dtype=torch.float32)
    elif schedule == "exponential":
        rate = -math.log(huber_c) / alphas_cumprod.shape[0]
        c = torch.exp(-rate * steps.float()) * huber_scale
    else:
        ac = alphas_cumprod.float()[steps]
        sigmas = ((1.0 - ac) / ac) ** 0.5
        c = (1 - huber_c) / (1 + sigmas) ** 2 + huber_c
    return c.to(timesteps.device)


def elementwise_loss(pred: torch.Tensor, target: torch.Tensor, loss_type: LossType,
                     huber_c: torch.Tensor | None = None) -> torch.Tensor:
    """kohya's ``conditional_loss(reduction="none")``; ``huber_c`` holds one value per sample."""
    import torch

    pred, target = pred.float(), target.float()
    if loss_type == "l2":
        return torch.nn.functional.mse_loss(pred, target, reduction="none")
    if loss_type == "l1":
        return torch.nn.functional.l1_loss(pred, target, reduction="none")
    if huber_c is None:
        raise ValueError(f"loss_type {loss_type!r} needs a Huber parameter per sample")
    c = huber_c.to(pred.device).view(-1, *([1] * (pred.ndim - 1)))
    root = torch.sqrt((pred - target) ** 2 + c**2) - c
    return 2 * c * root if loss_type == "huber" else 2 * root


def min_snr_weight(snr: torch.Tensor, timesteps: torch.Tensor, gamma: float, v_prediction: bool) -> torch.Tensor:
    """kohya ``apply_snr_weight``: min(SNR, gamma) / SNR, or / (SNR + 1) for v-prediction."""
    import torch

    s = snr.to(timesteps.device)[timesteps]
    clipped = torch.minimum(s, torch.full_like(s, gamma))
    return (clipped / (s + 1)) if v_prediction else (clipped / s)


def v_like_noise_scale(snr: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """kohya ``get_snr_scale``: SNR / (SNR + 1), SNR capped at 1000 (the v-prediction loss's size relative to
    the noise-prediction loss at each timestep)."""
    import torch

    s = torch.clamp(snr.to(timesteps.device)[timesteps], max=SNR_CAP)
    return s / (s + 1)


def sample_losses(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each sample's plain l2 loss (the mean over its elements, no weighting): the validation loss, comparable
    between runs whatever their loss options."""
    return elementwise_loss(pred, target, "l2", None).mean(dim=list(range(1, pred.ndim)))


def fixed_noise(latent_shape: tuple[int, ...], seeds: list[int], device: torch.device | str) -> torch.Tensor:
    """Plain Gaussian noise, each sample from its own seed (no offset): the validation loss's noise."""
    import torch

    return torch.stack([torch.randn(latent_shape, generator=torch.Generator().manual_seed(s))
                        for s in seeds]).to(device)


def debiased_weight(snr: torch.Tensor, timesteps: torch.Tensor, v_prediction: bool) -> torch.Tensor:
    """kohya ``apply_debiased_estimation``: 1 / sqrt(SNR), or 1 / (SNR + 1) for v-prediction (SNR capped at 1000)."""
    import torch

    s = torch.clamp(snr.to(timesteps.device)[timesteps], max=SNR_CAP)
    return 1 / (s + 1) if v_prediction else 1 / torch.sqrt(s)


def masked(loss: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """kohya ``apply_masked_loss``: the element-wise loss (B, C, h, w) times each sample's mask (B, H, W) in
    [0, 1], area-resized to the latent size."""
    import torch

    mask = masks.to(loss.device, dtype=loss.dtype).unsqueeze(1)
    mask = torch.nn.functional.interpolate(mask, size=loss.shape[2:], mode="area")
    return loss * mask


@dataclass(frozen=True)
class DiffusionLoss:
    """The loss options of ``[train]`` with the noise schedule they need. ``per_sample`` gives each sample's
    weighted loss (B,), the call their mean: what is backpropagated."""

    loss_type: LossType
    huber_schedule: HuberSchedule
    huber_c: float
    huber_scale: float
    min_snr_gamma: float | None
    scale_v_pred_loss_like_noise_pred: bool
    v_pred_like_loss: float | None
    debiased_estimation: bool
    v_prediction: bool
    alphas_cumprod: torch.Tensor
    snr: torch.Tensor

    @classmethod
    def from_config(cls, t: TrainSection, scheduler: DDPMScheduler, *, v_prediction: bool) -> DiffusionLoss:
        """The loss for ``[train]`` on a model that predicts v (``v_prediction``) or the noise; the options that
        only fit the other kind are refused, as kohya refuses them."""
        from train.errors import TrainingError

        if t.scale_v_pred_loss_like_noise_pred and not v_prediction:
            raise TrainingError("train.scale_v_pred_loss_like_noise_pred: true is not allowed: the model predicts "
                                "noise, not v; remove it (or set model.v_prediction = true for a v model)")
        if t.v_pred_like_loss and v_prediction:
            raise TrainingError(f"train.v_pred_like_loss: {t.v_pred_like_loss} is not allowed: the model already "
                                "predicts v; remove it")
        alphas_cumprod = scheduler.alphas_cumprod.float().cpu()
        return cls(loss_type=t.loss_type, huber_schedule=t.huber_schedule, huber_c=t.huber_c,
                   huber_scale=t.huber_scale, min_snr_gamma=t.min_snr_gamma,
                   scale_v_pred_loss_like_noise_pred=t.scale_v_pred_loss_like_noise_pred,
                   v_pred_like_loss=t.v_pred_like_loss, debiased_estimation=t.debiased_estimation_loss,
                   v_prediction=v_prediction, alphas_cumprod=alphas_cumprod,
                   # zero terminal SNR ends at SNR 0: kept just above it, Min-SNR's weight there is its limit, 1
                   snr=(alphas_cumprod / (1.0 - alphas_cumprod)).clamp(min=1e-10))

    def unweighted(self, pred: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor,
                   masks: torch.Tensor | None = None) -> torch.Tensor:
        """Each sample's loss (B,) before any weighting: the loss type (with the Huber parameter of its
        timestep) and the mask, averaged over the sample. Per-image rankings look at this."""
        c = None
        if self.loss_type in ("huber", "smooth_l1"):
            c = huber_c_for(timesteps, schedule=self.huber_schedule, huber_c=self.huber_c,
                            huber_scale=self.huber_scale, alphas_cumprod=self.alphas_cumprod)
        loss = elementwise_loss(pred, target, self.loss_type, c)
        if masks is not None:
            loss = masked(loss, masks)
        return loss.mean(dim=list(range(1, loss.ndim)))

    def weighted(self, unweighted: torch.Tensor, timesteps: torch.Tensor, loss_weights: torch.Tensor) -> torch.Tensor:
        """:meth:`unweighted` losses times each sample's weight and the timestep weightings (Min-SNR,
        v-prediction scaling, debiased estimation): what the training step averages."""
        loss = unweighted * loss_weights.to(unweighted.device)
        steps = timesteps.cpu()
        if self.min_snr_gamma:
            loss = loss * min_snr_weight(self.snr, steps, self.min_snr_gamma, self.v_prediction).to(loss.device)
        if self.scale_v_pred_loss_like_noise_pred:
            loss = loss * v_like_noise_scale(self.snr, steps).to(loss.device)
        if self.v_pred_like_loss:
            loss = loss + loss / v_like_noise_scale(self.snr, steps).to(loss.device) * self.v_pred_like_loss
        if self.debiased_estimation:
            loss = loss * debiased_weight(self.snr, steps, self.v_prediction).to(loss.device)
        return loss

    def per_sample(self, pred: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor,
                   loss_weights: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        return self.weighted(self.unweighted(pred, target, timesteps, masks), timesteps, loss_weights)

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor,
                 loss_weights: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        return self.per_sample(pred, target, timesteps, loss_weights, masks).mean()
