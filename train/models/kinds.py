"""The classes a base model is made of, named for type annotations: ``if TYPE_CHECKING:`` imports of this
module cost nothing at run time.

They come from diffusers' own modules, not ``from diffusers import ...``: the package's lazy namespace makes a
type checker see the stand-in classes diffusers defines for installs without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL as AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel as UNet2DConditionModel
    from diffusers.schedulers.scheduling_ddpm import DDPMScheduler as DDPMScheduler
    from transformers import CLIPTextModel as CLIPTextModel
    from transformers import CLIPTextModelWithProjection as CLIPTextModelWithProjection
    from transformers import CLIPTokenizer as CLIPTokenizer

    TextEncoder: TypeAlias = CLIPTextModel | CLIPTextModelWithProjection
    """SD1/SD2's encoder and SDXL's first are CLIPTextModel; SDXL's second has the projection."""
