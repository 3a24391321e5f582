"""Base models for training: architecture detection, shipped configs, offline loading, tiny/meta builders.

Importing this package loads no torch/diffusers/transformers; they are imported inside the functions.
"""

from train.models.arch import (
    Arch,
    ArchitectureError,
    ModelLoadError,
    detect_architecture,
    detect_diffusers_folder,
    has_v_prediction_marker,
)
from train.models.assemble import assemble_config_dir, shipped_config_name
from train.models.config import ModelConfig
from train.models.loading import (
    BaseModel,
    ModelHash,
    check_vae,
    load_base_model,
    load_vae,
    make_noise_scheduler,
    offline,
)
from train.models.probe import Inspection, inspect_base_model, read_safetensors_header

__all__ = [
    "Arch",
    "ArchitectureError",
    "BaseModel",
    "Inspection",
    "ModelConfig",
    "ModelHash",
    "ModelLoadError",
    "assemble_config_dir",
    "check_vae",
    "detect_architecture",
    "detect_diffusers_folder",
    "has_v_prediction_marker",
    "inspect_base_model",
    "load_base_model",
    "load_vae",
    "make_noise_scheduler",
    "offline",
    "read_safetensors_header",
    "shipped_config_name",
]
