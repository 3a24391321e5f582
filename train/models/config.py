"""`[model]` section of the training config: which base model to load and how."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from train.aliases import KohyaNamed

ArchitectureChoice = Literal["auto", "sd1", "sd2", "sd2-v", "sdxl"]

_ALIASES = {
    "sd15": "sd1", "sd1.5": "sd1", "sd1x": "sd1", "v1": "sd1", "sd-1.5": "sd1",
    "sd21": "sd2", "sd2.1": "sd2", "sd2-base": "sd2", "sd2x": "sd2", "v2": "sd2",
    "sd2v": "sd2-v", "sd21-v": "sd2-v", "sd2.1-v": "sd2-v", "sd2-768": "sd2-v", "v2-v": "sd2-v",
    "xl": "sdxl", "sd-xl": "sdxl", "sdxl-base": "sdxl",
}


def _expand(value: object) -> object:
    if isinstance(value, str):
        return Path(value.strip()).expanduser()
    if isinstance(value, Path):
        return value.expanduser()
    return value


class ModelConfig(KohyaNamed):
    """Base model to train on.

    path: a single-file checkpoint (`.safetensors`; `.ckpt`/`.pt`/`.bin` only with allow_pickle) or a diffusers
    folder. vae: optional replacement VAE (single file or diffusers folder). architecture: 'auto' detects it
    from the checkpoint; 'sd2-v' is SD2.x 768-v (v-prediction). v_prediction: override the prediction type
    (None: from the checkpoint / architecture). config_dir: a diffusers-style config folder to use instead of
    the shipped one (for unusual model sizes).
    """

    section = "model"

    path: Path = Field(
        description="base model: single-file .safetensors checkpoint or a diffusers folder "
        "(kohya: pretrained_model_name_or_path)",
    )
    vae: Path | None = Field(None, description="replacement VAE (single file or diffusers folder); unset: the model's own")
    architecture: ArchitectureChoice = Field(
        "auto", description="auto | sd1 | sd2 | sd2-v | sdxl (auto detects it from the checkpoint)"
    )
    v_prediction: bool | None = Field(
        None, description="force v-prediction on/off (unset: from the checkpoint / architecture) (kohya: v_parameterization)",
    )
    allow_pickle: bool = Field(
        False, description="allow pickled .ckpt/.pt checkpoints (they can run code: trusted files only)"
    )
    config_dir: Path | None = Field(
        None, description="diffusers-style config folder for unusual model sizes (unset: the shipped one)"
    )

    @field_validator("path", mode="before")
    @classmethod
    def _path_set(cls, value: object) -> object:
        if value is None or (isinstance(value, str | Path) and str(value).strip() in ("", ".")):
            raise ValueError("model.path is empty: set it to a .safetensors checkpoint or a diffusers folder")
        return _expand(value)

    @field_validator("vae", "config_dir", mode="before")
    @classmethod
    def _optional_path(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return _expand(value)

    @field_validator("architecture", mode="before")
    @classmethod
    def _normalise_arch(cls, value: object) -> object:
        if isinstance(value, str):
            key = value.strip().lower().replace("_", "-")
            key = _ALIASES.get(key, _ALIASES.get(key.replace("-", ""), key))
            if key not in ("auto", "sd1", "sd2", "sd2-v", "sdxl"):
                raise ValueError(
                    f"unknown architecture {value!r}: use 'auto', 'sd1' (SD1.x), 'sd2' (SD2.x 512-base, epsilon), "
                    "'sd2-v' (SD2.x 768-v, v-prediction) or 'sdxl'"
                )
            return key
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        if self.architecture == "sd2-v" and self.v_prediction is False:
            raise ValueError(
                "model.architecture = 'sd2-v' means v-prediction but model.v_prediction = false; use "
                "architecture 'sd2' for the epsilon (512-base) model, or drop v_prediction"
            )
        return self

    @property
    def wanted_v_prediction(self) -> bool | None:
        """Prediction type the user asked for (None: decide from the checkpoint)."""
        if self.v_prediction is not None:
            return self.v_prediction
        if self.architecture == "sd2-v":
            return True
        if self.architecture == "sd2":
            return False
        return None
