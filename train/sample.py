"""Preview images during training, rendered with a diffusers pipeline built from the loaded components (the
LoRA is hooked into them, so the samples show it)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from train.prompts import SAMPLERS

if TYPE_CHECKING:
    import torch
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

    from train.config import SampleSection
    from train.models.loading import BaseModel
    from train.models.pipeline import TextToImage
    from train.prompts import Prompt

def build_pipeline(base: BaseModel, sampler: str) -> TextToImage:
    """A diffusers text-to-image pipeline around a loaded base model's own modules (LoRA hooks or patched
    weights on them show in its images), with ``sampler`` (a kohya sampler name, ``train.prompts.SAMPLERS``)
    over the model's schedule."""
    from train.models.pipeline import text_to_image_pipeline

    return text_to_image_pipeline(base.unet, base.vae, base.text_encoders, base.tokenizers,
                                  make_sampler(base, sampler))


def make_sampler(base: BaseModel, sampler: str) -> SchedulerMixin:
    """The diffusers scheduler kohya's sampler name stands for, over the model's training schedule (its
    prediction type and, with zero terminal SNR, its rescaled betas)."""
    import diffusers

    name, extra = SAMPLERS[sampler]
    scheduler: SchedulerMixin = getattr(diffusers, name).from_config(base.noise_scheduler.config, steps_offset=1,
                                                                      **extra)
    return scheduler


def sample_prompts(sample: SampleSection) -> list[Prompt]:
    """The ``[sample]`` prompts (kohya's per-prompt options allowed in each), then those of ``prompt_file``."""
    from train.prompts import parse_prompt_line, read_prompt_file

    prompts = [parse_prompt_line(text, f"sample.prompts[{i}]") for i, text in enumerate(sample.prompts)]
    if sample.prompt_file is not None:
        prompts += read_prompt_file(sample.prompt_file)
    return prompts


def encode_prompts(base: BaseModel, texts: list[str], *, max_token_length: int, clip_skip: int,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Prompts to conditioning exactly as training encodes captions (kohya's 75-token chunks up to
    ``max_token_length``, ``clip_skip`` for SD1/SD2; SDXL: both encoders' penultimate layers and the pooled
    output): what kohya's long-prompt sample pipeline does too."""
    import torch

    from train.data.tokens import encode_sd, encode_sdxl, tokenize

    with torch.no_grad():
        if base.is_sdxl:
            ids1 = tokenize(base.tokenizers[0], texts, max_token_length).to(device)
            ids2 = tokenize(base.tokenizers[1], texts, max_token_length).to(device)
            return encode_sdxl(base.text_encoders, base.tokenizers, ids1, ids2, max_token_length)
        ids = tokenize(base.tokenizers[0], texts, max_token_length).to(device)
        return encode_sd(base.text_encoders[0], ids, max_token_length, clip_skip), None


def render_samples(base: BaseModel, sample_cfg: SampleSection, prompts: list[Prompt], *,
                   resolution: tuple[int, int], out_dir: Path, stem: str, device: torch.device, dtype: torch.dtype,
                   clip_skip: int = 1, max_token_length: int = 75) -> list[Path]:
    """Render every prompt once (its own size, steps, scale, seed, negative prompt and sampler where it gives
    them, else ``[sample]``'s); returns the PNG paths ``<out_dir>/<stem>-NN.png``. The prompts are encoded
    with the training's ``clip_skip`` and ``max_token_length`` (:func:`encode_prompts`), so a preview shows
    the conditioning the LoRA learned."""
    import torch

    pipe = build_pipeline(base, sample_cfg.sampler)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    autocast = torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)
    for index, prompt in enumerate(prompts):
        pipe.scheduler = make_sampler(base, prompt.sampler or sample_cfg.sampler)
        seed = prompt.seed if prompt.seed is not None else sample_cfg.seed + index
        generator = torch.Generator(device="cpu").manual_seed(seed)
        negative = prompt.negative if prompt.negative is not None else sample_cfg.negative_prompt
        with torch.no_grad(), autocast:
            hidden, pooled = encode_prompts(base, [prompt.text, negative or ""], max_token_length=max_token_length,
                                            clip_skip=clip_skip, device=device)
            embeds: dict[str, torch.Tensor] = {"prompt_embeds": hidden[:1], "negative_prompt_embeds": hidden[1:]}
            if pooled is not None:
                embeds.update(pooled_prompt_embeds=pooled[:1], negative_pooled_prompt_embeds=pooled[1:])
                if not negative:  # SDXL's empty negative prompt is zeros (diffusers' force_zeros_for_empty_prompt)
                    embeds["negative_prompt_embeds"] = torch.zeros_like(hidden[1:])
                    embeds["negative_pooled_prompt_embeds"] = torch.zeros_like(pooled[1:])
            image = pipe(
                width=prompt.width or sample_cfg.width or resolution[0],
                height=prompt.height or sample_cfg.height or resolution[1],
                num_inference_steps=prompt.steps or sample_cfg.steps,
                guidance_scale=prompt.cfg_scale if prompt.cfg_scale is not None else sample_cfg.cfg_scale,
                generator=generator, **embeds,
            ).images[0]
        path = out_dir / f"{stem}-{index:02d}.png"
        image.save(path)
        paths.append(path)
    return paths
