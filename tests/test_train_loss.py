"""The loss and noise options, each checked against kohya sd-scripts' formula computed here independently
(numpy, float64) from the SD noise schedule: Huber c per timestep, l1 / smooth_l1, the v-prediction and
debiased weightings, masks, noise offset / adaptive / random strength, multires noise, input perturbation, and
the zero-terminal-SNR betas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from train.config import ConfigError, TrainSection, load_config
from train.loss import DiffusionLoss, elementwise_loss, huber_c_for
from train.models.loading import make_noise_scheduler
from train.noise import NoiseSettings, draw_noise, pyramid_noise, zero_terminal_snr

T = 1000


def sd_alphas_cumprod() -> np.ndarray:
    """The SD training schedule (scaled_linear 0.00085..0.012 over 1000 steps), as kohya builds it."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, T, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


def loss_for(v_prediction: bool = False, **train: object) -> DiffusionLoss:
    return DiffusionLoss.from_config(TrainSection(**train), make_noise_scheduler(v_prediction),
                                     v_prediction=v_prediction)


# ------------------------------------------------------------------ Huber c per timestep
def test_huber_snr_schedule_is_kohyas_formula_per_timestep() -> None:
    ac = sd_alphas_cumprod()
    sigma = np.sqrt((1 - ac) / ac)
    expected = (1 - 0.1) / (1 + sigma) ** 2 + 0.1  # kohya get_huber_threshold_if_needed, "snr"
    steps = torch.arange(T)
    got = huber_c_for(steps, schedule="snr", huber_c=0.1, huber_scale=1.0,
                      alphas_cumprod=make_noise_scheduler(False).alphas_cumprod)
    assert np.allclose(got.numpy(), expected, rtol=1e-5)
    # kohya's numbers: c starts near 1 (clean images: l2-like) and falls to huber_c at pure noise
    assert got[0].item() == pytest.approx(0.9497, abs=1e-4)
    assert got[500].item() == pytest.approx(0.2313, abs=1e-4)
    assert got[999].item() == pytest.approx(0.1037, abs=1e-4)
    assert got[999].item() == pytest.approx(float(expected[999]), rel=1e-5)
    # huber_scale does not enter the snr schedule (kohya)
    scaled = huber_c_for(steps, schedule="snr", huber_c=0.1, huber_scale=3.0,
                         alphas_cumprod=make_noise_scheduler(False).alphas_cumprod)
    assert torch.equal(scaled, got)


def test_huber_exponential_and_constant_schedules() -> None:
    ac = make_noise_scheduler(False).alphas_cumprod
    steps = torch.tensor([0, 250, 999])
    expo = huber_c_for(steps, schedule="exponential", huber_c=0.1, huber_scale=2.0, alphas_cumprod=ac)
    rate = -math.log(0.1) / T
    assert expo.tolist() == pytest.approx([2.0 * math.exp(-rate * t) for t in (0, 250, 999)], rel=1e-6)
    const = huber_c_for(steps, schedule="constant", huber_c=0.1, huber_scale=2.0, alphas_cumprod=ac)
    assert const.tolist() == pytest.approx([0.2, 0.2, 0.2])


def test_huber_and_smooth_l1_use_each_samples_c() -> None:
    pred, target = torch.zeros(2, 4, 2, 2), torch.full((2, 4, 2, 2), 0.5)
    steps = torch.tensor([0, 999])
    c = huber_c_for(steps, schedule="snr", huber_c=0.1, huber_scale=1.0,
                    alphas_cumprod=make_noise_scheduler(False).alphas_cumprod)
    for kind, scale in (("huber", c), ("smooth_l1", torch.ones(2))):
        got = loss_for(loss_type=kind).per_sample(pred, target, steps, torch.ones(2))
        expected = 2 * scale * (torch.sqrt(0.25 + c**2) - c)
        assert torch.allclose(got, expected), kind
    # early timesteps (large c) behave like l2, late ones (small c) like l1: the ratio between samples moves
    huber = loss_for(loss_type="huber").per_sample(pred, target, steps, torch.ones(2))
    constant = loss_for(loss_type="huber", huber_schedule="constant").per_sample(pred, target, steps, torch.ones(2))
    assert huber[0] / huber[1] > 2.5 and constant[0] == constant[1]


def test_l1_and_l2() -> None:
    pred, target = torch.zeros(1, 4, 2, 2), torch.tensor([0.5, -2.0, 1.0, 0.0]).view(1, 4, 1, 1).expand(1, 4, 2, 2)
    assert elementwise_loss(pred, target, "l1").mean().item() == pytest.approx(3.5 / 4)
    assert elementwise_loss(pred, target, "l2").mean().item() == pytest.approx(5.25 / 4)
    assert loss_for(loss_type="l1")(pred, target, torch.tensor([10]), torch.ones(1)).item() == pytest.approx(3.5 / 4)


# ------------------------------------------------------------------ post-processing weights
def snr_at(steps: list[int]) -> np.ndarray:
    ac = sd_alphas_cumprod()
    return np.minimum(ac / (1 - ac), 1000.0)[steps]  # kohya caps SNR at 1000 in these weights


def test_v_prediction_and_debiased_weights_are_kohyas() -> None:
    steps = [0, 100, 500, 999]
    t = torch.tensor(steps)
    pred, target = torch.zeros(4, 4, 2, 2), torch.ones(4, 4, 2, 2)
    base = loss_for().per_sample(pred, target, t, torch.ones(4)).numpy()  # 1 for every sample
    snr = snr_at(steps)
    scale = snr / (snr + 1)  # kohya get_snr_scale
    got = loss_for(True, scale_v_pred_loss_like_noise_pred=True).per_sample(pred, target, t, torch.ones(4))
    assert np.allclose(got.numpy(), base * scale, rtol=1e-5)
    got = loss_for(v_pred_like_loss=0.5).per_sample(pred, target, t, torch.ones(4))
    assert np.allclose(got.numpy(), base + base / scale * 0.5, rtol=1e-5)
    got = loss_for(debiased_estimation_loss=True).per_sample(pred, target, t, torch.ones(4))
    assert np.allclose(got.numpy(), base / np.sqrt(snr), rtol=1e-5)
    got = loss_for(True, debiased_estimation_loss=True).per_sample(pred, target, t, torch.ones(4))
    assert np.allclose(got.numpy(), base / (snr + 1), rtol=1e-5)


def test_prediction_options_that_do_not_fit_the_model_are_refused() -> None:
    from train.errors import TrainingError

    with pytest.raises(TrainingError, match="scale_v_pred_loss_like_noise_pred: true is not allowed"):
        loss_for(False, scale_v_pred_loss_like_noise_pred=True)
    with pytest.raises(TrainingError, match="v_pred_like_loss: 0.2 is not allowed: the model already predicts v"):
        loss_for(True, v_pred_like_loss=0.2)


def test_mask_weights_the_loss_per_latent_pixel() -> None:
    pred, target = torch.zeros(1, 4, 4, 4), torch.ones(1, 4, 4, 4)
    mask = torch.zeros(1, 32, 32)
    mask[:, :, :16] = 1.0  # left half of the image counts
    got = loss_for().per_sample(pred, target, torch.tensor([10]), torch.ones(1), masks=mask)
    assert got.item() == pytest.approx(0.5)


# ------------------------------------------------------------------ noise
LATENTS = torch.zeros(3, 4, 16, 16)


def test_noise_offset_is_one_value_per_channel() -> None:
    plain = draw_noise(LATENTS, [1, 2, 3], NoiseSettings(), (0, T))
    offset = draw_noise(LATENTS, [1, 2, 3], NoiseSettings(offset=0.1), (0, T))
    diff = offset.noise - plain.noise
    assert diff.flatten(2).std(dim=2).max() < 1e-6 and diff.abs().max() > 0.01  # constant over each channel
    random = draw_noise(LATENTS, [1, 2, 3], NoiseSettings(offset=0.1, offset_random_strength=True), (0, T))
    ratio = ((random.noise - plain.noise) / diff).mean(dim=(1, 2, 3))  # the drawn strength / 0.1
    assert ((ratio >= 0) & (ratio < 1)).all() and len(set(ratio.tolist())) == 3


def test_adaptive_noise_scale_adds_the_latent_channel_mean_to_the_offset() -> None:
    latents = torch.zeros(1, 4, 16, 16)
    latents[0, 2] = -0.8  # channel 2's mean absolute value is 0.8
    plain = draw_noise(latents, [5], NoiseSettings(), (0, T)).noise
    offset = draw_noise(latents, [5], NoiseSettings(offset=0.1), (0, T)).noise - plain
    adaptive = draw_noise(latents, [5], NoiseSettings(offset=0.1, adaptive_scale=0.5), (0, T)).noise - plain
    ratio = (adaptive / offset).mean(dim=(2, 3))[0]
    assert ratio.tolist() == pytest.approx([1.0, 1.0, (0.1 + 0.5 * 0.8) / 0.1, 1.0], rel=1e-4)


def test_multires_noise_adds_low_frequencies_at_unit_std() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 64, 64, generator=g)
    pyramid = pyramid_noise(base, g, iterations=6, discount=0.8)
    assert pyramid.std().item() == pytest.approx(1.0, abs=1e-5)
    pooled = [torch.nn.functional.avg_pool2d(n[None], 16).var().item() for n in (base, pyramid)]
    assert pooled[1] > 5 * pooled[0]  # white noise averages out over 16x16 blocks, pyramid noise does not
    drawn = draw_noise(torch.zeros(2, 4, 32, 32), [1, 2], NoiseSettings(multires_iterations=6), (0, T))
    assert drawn.noise.flatten(1).std(dim=1).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)


def test_input_perturbation_changes_the_noisy_input_not_the_target() -> None:
    plain = draw_noise(LATENTS, [1, 2, 3], NoiseSettings(), (0, T))
    ip = draw_noise(LATENTS, [1, 2, 3], NoiseSettings(ip_gamma=0.1), (0, T))
    assert torch.equal(ip.noise, plain.noise) and torch.equal(plain.noisy_noise, plain.noise)
    assert (ip.noisy_noise - ip.noise).std().item() == pytest.approx(0.1, rel=0.1)
    random = draw_noise(LATENTS, [1, 2, 3], NoiseSettings(ip_gamma=0.1, ip_gamma_random_strength=True), (0, T))
    strengths = (random.noisy_noise - random.noise).flatten(1).std(dim=1)
    assert (strengths < 0.1).all() and len(set(strengths.tolist())) == 3


# ------------------------------------------------------------------ zero terminal SNR
def test_zero_terminal_snr_betas_are_kohyas() -> None:
    betas = np.linspace(0.00085**0.5, 0.012**0.5, T, dtype=np.float64) ** 2
    # kohya fix_noise_scheduler_betas_for_zero_terminal_snr, step by step
    sqrt_ab = np.sqrt(np.cumprod(1 - betas))
    first, last = sqrt_ab[0], sqrt_ab[-1]
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    ab = sqrt_ab**2
    expected = 1 - np.concatenate([ab[:1], ab[1:] / ab[:-1]])
    sched = make_noise_scheduler(True, zero_terminal_snr=True)
    # float32 (as kohya and diffusers compute it) against float64: betas agree to 0.05 %, alpha_bar to 1e-6
    assert np.allclose(sched.betas.double().numpy(), expected, rtol=5e-4)
    assert np.allclose(sched.alphas_cumprod.double().numpy(), ab, atol=1e-6)
    assert sched.alphas_cumprod[-1].item() == 0.0 and sched.betas[-1].item() == pytest.approx(1.0)
    assert sched.alphas_cumprod[0].item() == pytest.approx(1 - 0.00085, rel=1e-6)  # first step unchanged
    stock = make_noise_scheduler(True)
    assert stock.alphas_cumprod[-1].item() == pytest.approx(0.00466, rel=1e-2)  # SD's terminal SNR is not 0
    # the loss stays finite at the last timestep (Min-SNR's weight there is its limit)
    loss = DiffusionLoss.from_config(TrainSection(min_snr_gamma=5), sched, v_prediction=True)
    value = loss(torch.zeros(1, 4, 2, 2), torch.ones(1, 4, 2, 2), torch.tensor([999]), torch.ones(1))
    assert math.isfinite(value.item())


def test_zero_terminal_snr_follows_the_checkpoint_unless_set() -> None:
    assert zero_terminal_snr(TrainSection(), checkpoint_ztsnr=False, v_prediction=True) == (False, [])
    on, notes = zero_terminal_snr(TrainSection(), checkpoint_ztsnr=True, v_prediction=True)
    assert on and len(notes) == 1 and "zero terminal SNR" in notes[0] and "zero_terminal_snr = false" in notes[0]
    assert zero_terminal_snr(TrainSection(zero_terminal_snr=False), checkpoint_ztsnr=True, v_prediction=True) \
        == (False, [])
    on, notes = zero_terminal_snr(TrainSection(zero_terminal_snr=True), checkpoint_ztsnr=False, v_prediction=False)
    assert on and "noise-prediction" in notes[0]


# ------------------------------------------------------------------ config
@pytest.mark.parametrize(("override", "expected"), [
    ("train.adaptive_noise_scale=0.1", "train.adaptive_noise_scale: 0.1 is not allowed: needs train.noise_offset"),
    ("train.noise_offset_random_strength=true",
     "train.noise_offset_random_strength: true is not allowed: needs train.noise_offset"),
    ("train.ip_noise_gamma_random_strength=true",
     "train.ip_noise_gamma_random_strength: true is not allowed: needs train.ip_noise_gamma"),
    ("train.huber_schedule=linear", "train.huber_schedule: 'linear' is not allowed: must be one of 'snr'"),
    ("train.multires_noise_discount=0", "train.multires_noise_discount: 0 is not allowed: must be > 0"),
])
def test_noise_and_loss_options_are_validated(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["model.path=/m.safetensors", "dataset.path=/d", override])
    assert any(line.startswith(expected) for line in info.value.lines), info.value.lines


def test_kohya_defaults() -> None:
    t = TrainSection()
    assert (t.loss_type, t.huber_schedule, t.huber_c, t.huber_scale, t.multires_noise_discount) == \
        ("l2", "snr", 0.1, 1.0, 0.3)
