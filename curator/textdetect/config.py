"""``TextModelConfig``: which ONNX text detector the ``text-heavy`` check runs, and how its input is made."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Preprocessing of the detector families kiln knows: channel order, scale to 0..1 (or not), mean, std.
Preset = Literal["db", "doctr", "east"]
PRESETS: dict[str, tuple[str, float, tuple[float, float, float], tuple[float, float, float]]] = {
    # PaddleOCR DB / DB++ detectors (PP-OCR det models exported to ONNX): BGR as OpenCV decodes it, ImageNet
    # mean and std on 0..1 applied in that order
    "db": ("bgr", 1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # docTR's db_resnet50 / db_mobilenet_v3_large / fast detectors exported to ONNX: RGB
    "doctr": ("rgb", 1 / 255, (0.798, 0.785, 0.772), (0.264, 0.2749, 0.287)),
    # EAST (frozen_east_text_detection converted to ONNX): RGB on 0..255 less the ImageNet mean, as OpenCV's
    # sample feeds it (blobFromImage with swapRB)
    "east": ("rgb", 1.0, (123.68, 116.78, 103.94), (1.0, 1.0, 1.0)),
}
FIELD_HINTS = {
    "path": "--text-model PATH: an ONNX text detector (docs/DATASET.md names models that fit)",
    "preset": "--text-model-preset db|doctr|east: the detector family, for its input normalisation",
    "side": "--text-model-side N: the longer side the image is resized to (a multiple of 32)",
}


class TextModelConfig(BaseModel):
    """An ONNX text detector: one image input [batch, 3, height, width], a text probability map output
    [batch, 1, h, w] (or [batch, h, w]); fixed or free height and width."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path = Field(description="the .onnx file of a text detector (DB, EAST or docTR family)")
    preset: Preset = Field("db", description="input normalisation of the detector family")
    side: int = Field(640, ge=64, le=4096, description="longer side fed to a model with free input size")
    pixel_threshold: float = Field(0.3, gt=0.0, lt=1.0, description="map values above this are text")
    box_threshold: float = Field(
        0.6, ge=0.0, lt=1.0, description="a text region whose mean map value is under this is dropped (DB's box_thresh)"
    )
    unclip_ratio: float = Field(
        1.5, ge=0.0, le=4.0, description="how far a region grows back to its text line (DB's unclip_ratio; 0: not)"
    )
    min_elongation: float = Field(
        2.5, ge=1.0, le=20.0, description="a region counts as a text line when its long side is this many times "
        "its short side (1: every region)",
    )  # fmt: skip

    @field_validator("path")
    @classmethod
    def _model_file(cls, value: Path) -> Path:
        path = value.expanduser()
        if not path.exists():
            raise ValueError(f"no file at {path}; give the .onnx file of a text detector (see docs/DATASET.md)")
        if path.is_dir():
            onnx = sorted(path.glob("*.onnx"))
            if len(onnx) != 1:
                raise ValueError(f"{path} is a folder with {len(onnx)} .onnx files; give the detector's .onnx file")
            path = onnx[0]
        return path.resolve()

    @field_validator("side")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        if value % 32:
            raise ValueError(f"side {value} is not a multiple of 32 (text detectors halve the image 5 times); "
                             f"use {max(64, round(value / 32) * 32)}")  # fmt: skip
        return value

    def normalisation(self) -> tuple[str, float, tuple[float, float, float], tuple[float, float, float]]:
        """(channel order, scale, mean, std) of the preset."""
        return PRESETS[self.preset]
