"""The options of each `kiln lora` command as one pydantic model, validated before any file is read; an error
names the command-line flag and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from train.lora.errors import LoraToolError
from train.lora.svd import DynamicMethod
from train.prompts import SamplerName

if TYPE_CHECKING:
    import torch

SaveDType = Literal["fp16", "bf16", "fp32"]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    force: bool = False
    allow_pickle: bool = False
    device: str = Field("auto", description="auto (a GPU when there is one), cpu, cuda, cuda:1, mps")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        value = value.strip().lower()
        if value != "auto" and value.split(":")[0] not in ("cpu", "cuda", "mps", "xpu"):
            raise ValueError(f"{value!r} is not a device: use auto, cpu, cuda, cuda:N or mps")
        return value


class ExtractOptions(_Options):
    base: Path
    tuned: Path
    out: Path
    dim: int = Field(ge=1, le=4096)
    conv_dim: int | None = Field(None, ge=1, le=4096)
    clamp_quantile: float = Field(0.99, gt=0, le=1)
    min_diff: float = Field(0.01, ge=0)
    text_encoders: bool = False
    dtype: SaveDType = "fp16"
    config_dir: Path | None = None


class ResizeOptions(_Options):
    file: Path
    out: Path
    rank: int | None = Field(None, ge=1, le=4096)
    conv_rank: int | None = Field(None, ge=1, le=4096)
    dynamic: DynamicMethod | None = None
    dynamic_param: float | None = Field(None, gt=0)
    dtype: SaveDType | None = None

    @model_validator(mode="after")
    def _method(self) -> ResizeOptions:
        if self.rank is None and self.dynamic is None:
            raise ValueError("give --rank N, or --dynamic METHOD --dynamic-param P (with --rank as the largest rank)")
        if self.dynamic is not None:
            if self.dynamic_param is None:
                raise ValueError(f"--dynamic {self.dynamic} needs --dynamic-param")
            if self.dynamic == "sv_ratio" and self.dynamic_param < 1:
                raise ValueError(f"--dynamic-param {self.dynamic_param}: sv_ratio keeps singular values within a "
                                 "factor P of the largest, so P must be >= 1 (e.g. 8)")
            if self.dynamic in ("sv_fro", "sv_cumulative") and self.dynamic_param > 1:
                raise ValueError(f"--dynamic-param {self.dynamic_param}: {self.dynamic} is a share in (0, 1] "
                                 "(e.g. 0.99)")
        elif self.dynamic_param is not None:
            raise ValueError("--dynamic-param is used with --dynamic only")
        return self


class MergeOptions(_Options):
    loras: list[tuple[Path, float]] = Field(min_length=1)
    out: Path
    into: Path | None = None
    svd_rank: int | None = Field(None, ge=1, le=4096)
    svd_conv_rank: int | None = Field(None, ge=1, le=4096)
    dtype: SaveDType | None = None
    config_dir: Path | None = None

    @model_validator(mode="after")
    def _mode(self) -> MergeOptions:
        if self.into is not None and self.svd_rank is not None:
            raise ValueError("--svd-rank is for merging LoRAs into one LoRA; it has no meaning with --into")
        if self.svd_conv_rank is not None and self.svd_rank is None:
            raise ValueError("--svd-conv-rank needs --svd-rank")
        return self


class GridOptions(_Options):
    bases: list[Path] = Field(min_length=1)
    loras: list[Path] = Field(min_length=1)
    prompts: Path
    out: Path
    strengths: list[float] = Field(default_factory=lambda: [0.6, 0.8, 1.0], min_length=1)
    seed: int = Field(1234, ge=0)
    steps: int = Field(20, ge=1, le=150)
    cfg_scale: float = Field(7.0, ge=1)
    sampler: SamplerName = "euler_a"
    width: int | None = Field(None, ge=8)
    height: int | None = Field(None, ge=8)
    negative: str = ""
    blocks: list[str] = Field(default_factory=list)
    thumb: int = Field(384, ge=16, le=4096)
    config_dir: Path | None = None

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, value: int | None) -> int | None:
        if value is not None and value % 8:
            raise ValueError(f"{value} is not a multiple of 8 (the VAE works in steps of 8 pixels)")
        return value


FLAGS = {"base": "--base", "tuned": "--tuned", "out": "--out", "dim": "--dim", "conv_dim": "--conv-dim",
         "clamp_quantile": "--clamp-quantile", "min_diff": "--min-diff", "dtype": "--dtype", "device": "--device",
         "rank": "--rank", "conv_rank": "--conv-rank", "dynamic": "--dynamic", "dynamic_param": "--dynamic-param",
         "svd_rank": "--svd-rank", "svd_conv_rank": "--svd-conv-rank", "loras": "LORA:STRENGTH", "bases": "--base",
         "strengths": "--strengths", "steps": "--steps", "seed": "--seed", "cfg_scale": "--cfg", "width": "--width",
         "height": "--height", "thumb": "--thumb", "prompts": "--prompts", "sampler": "--sampler"}


OptionsT = TypeVar("OptionsT", bound="_Options")


def validated(model: type[OptionsT], **values: object) -> OptionsT:
    """``model(**values)``, with a pydantic error turned into a LoraToolError naming the flag."""
    try:
        return model(**values)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"] if not isinstance(p, int))
            message = str(error["msg"]).removeprefix("Value error, ")
            flag = FLAGS.get(field.split(".")[0], field)
            lines.append(f"{flag}: {message}" if flag else message)
        raise LoraToolError("\n".join(lines)) from None


def torch_device(spec: str) -> torch.device:
    """``auto`` -> the GPU when there is one, else the CPU; a named device must exist."""
    import torch

    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LoraToolError(f"--device {spec}: no CUDA GPU is available here (use --device cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise LoraToolError(f"--device {spec}: there are only {torch.cuda.device_count()} CUDA devices")
    return device
