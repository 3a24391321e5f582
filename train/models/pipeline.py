"""A diffusers text-to-image pipeline over already loaded components (nothing copied): for samples during
training and for writing the tiny test models."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
    from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import StableDiffusionXLPipeline
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

    from .kinds import AutoencoderKL, CLIPTokenizer, TextEncoder, UNet2DConditionModel

    TextToImage: TypeAlias = StableDiffusionPipeline | StableDiffusionXLPipeline


def text_to_image_pipeline(unet: UNet2DConditionModel, vae: AutoencoderKL, text_encoders: list[TextEncoder],
                           tokenizers: list[CLIPTokenizer], scheduler: SchedulerMixin) -> TextToImage:
    """SD1/SD2 (one text encoder) or SDXL (two) pipeline, without safety checker, watermark or progress bar."""
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
    from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    te1 = text_encoders[0]
    assert isinstance(te1, CLIPTextModel), "the first text encoder is a CLIPTextModel"
    if len(text_encoders) == 2:
        te2 = text_encoders[1]
        assert isinstance(te2, CLIPTextModelWithProjection), "SDXL's second text encoder has a projection"
        xl = StableDiffusionXLPipeline(
            vae=vae, unet=unet, text_encoder=te1, text_encoder_2=te2, tokenizer=tokenizers[0],
            tokenizer_2=tokenizers[1], add_watermarker=False,
            scheduler=scheduler,  # type: ignore[arg-type]  # diffusers annotates it with an Enum of names
        )
        xl.set_progress_bar_config(disable=True)
        return xl
    sd = StableDiffusionPipeline(
        vae=vae, unet=unet, text_encoder=te1, tokenizer=tokenizers[0], requires_safety_checker=False,
        scheduler=scheduler,  # type: ignore[arg-type]  # diffusers annotates it with an Enum of names
        safety_checker=None,  # type: ignore[arg-type]  # optional, though annotated as required
        feature_extractor=None,  # type: ignore[arg-type]  # optional, though annotated as required
    )
    sd.set_progress_bar_config(disable=True)
    return sd
