"""Preview images during training, rendered with a diffusers pipeline built from the loaded components (the
LoRA is hooked into them, so the samples show it)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from train.config import SampleSection
    from train.models.loading import BaseModel
    from train.models.pipeline import TextToImage

SAMPLERS = {
    "euler_a": "EulerAncestralDiscreteScheduler",
    "euler": "EulerDiscreteScheduler",
    "ddim": "DDIMScheduler",
    "dpmsolver++": "DPMSolverMultistepScheduler",
}


def build_pipeline(base: BaseModel, sampler: str) -> TextToImage:
    """A diffusers text-to-image pipeline around a loaded base model's own modules (LoRA hooks or patched
    weights on them show in its images), with ``sampler`` (a key of ``SAMPLERS``) over the model's schedule."""
    import diffusers

    from train.models.pipeline import text_to_image_pipeline

    scheduler_cls = getattr(diffusers, SAMPLERS[sampler])
    scheduler = scheduler_cls.from_config(base.noise_scheduler.config, steps_offset=1)
    return text_to_image_pipeline(base.unet, base.vae, base.text_encoders, base.tokenizers, scheduler)


def render_samples(base: BaseModel, sample_cfg: SampleSection, *, resolution: tuple[int, int], out_dir: Path,
                   stem: str, device: torch.device, dtype: torch.dtype) -> list[Path]:
    """Render every prompt once; returns the PNG paths ``<out_dir>/<stem>-NN.png``."""
    import torch

    pipe = build_pipeline(base, sample_cfg.sampler)
    width = sample_cfg.width or resolution[0]
    height = sample_cfg.height or resolution[1]
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    autocast = torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)
    for index, prompt in enumerate(sample_cfg.prompts):
        generator = torch.Generator(device="cpu").manual_seed(sample_cfg.seed + index)
        with torch.no_grad(), autocast:
            image = pipe(
                prompt=prompt, negative_prompt=sample_cfg.negative_prompt or None, width=width, height=height,
                num_inference_steps=sample_cfg.steps, guidance_scale=sample_cfg.cfg_scale, generator=generator,
            ).images[0]
        path = out_dir / f"{stem}-{index:02d}.png"
        image.save(path)
        paths.append(path)
    return paths
