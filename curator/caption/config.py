"""``CaptionConfig``: every ``kiln caption`` setting, validated up front with messages that name the field."""

from __future__ import annotations

import string
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from curator.autotag.config import split_tag_input

Mode = Literal["write", "prepend", "append"]
Device = Literal["auto", "cpu", "cuda"]
DType = Literal["auto", "float32", "float16", "bfloat16"]
PLACEHOLDERS = ("trigger", "tags", "folder")


class CaptionConfig(BaseModel):
    """Settings of one caption run (CLI flags map one-to-one onto these fields)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model: str = Field(min_length=1, description="a local model folder, or a repo id in the Hugging Face cache")
    mode: Mode = "write"
    extension: str = Field(".caption", description="write mode: the caption file written beside each image")
    prompt: str | None = Field(None, description="the model's prompt; None: the family's default")
    prefix: list[str] = Field(default_factory=list, description="words put before every caption (trigger)")
    prefix_from_folder: bool = False
    max_new_tokens: int = Field(75, ge=1, le=1024)
    num_beams: int = Field(3, ge=1, le=16)
    batch_size: int = Field(8, ge=1, le=256)
    device: Device = "auto"
    dtype: DType = "auto"
    where: str | None = None
    include_reg: bool = False
    force: bool = False  # write mode: replace existing caption files
    keep_commas: bool = False  # prepend/append: keep commas inside the sentence (kohya would shuffle its parts)
    dry_run: bool = False

    @field_validator("prefix", mode="before")
    @classmethod
    def _split(cls, value: object) -> list[str]:
        return split_tag_input(value, "words")

    @field_validator("extension")
    @classmethod
    def _extension(cls, value: str) -> str:
        ext = value.strip()
        if not ext or "/" in ext or "\\" in ext or ext in (".", ".."):
            raise ValueError(f"{value!r} is not a file extension; use .caption or .txt")
        return ext if ext.startswith(".") else "." + ext

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            fields = [name for _text, name, _spec, _conv in string.Formatter().parse(value) if name is not None]
        except ValueError as exc:
            raise ValueError(f"not a valid template ({exc}); write literal braces as {{{{ and }}}}") from None
        unknown = [f for f in fields if f not in PLACEHOLDERS]
        if unknown:
            raise ValueError(f"unknown placeholder {{{unknown[0]}}}; use {', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
        return value


FIELD_HINTS = {  # field -> the fix, for curator.configerrors.describe_validation_error
    "model": "give a folder with config.json and the weights, or a cached repo id such as Salesforce/blip-image-"
    "captioning-large (--model)",
    "mode": "use write (a caption file of its own), prepend or append (into the tag caption) (--mode)",
    "extension": "use .caption or .txt (--extension)",
    "prompt": "placeholders: {trigger}, {tags}, {folder} (--prompt)",
    "max_new_tokens": "use 1 to 1024 (--max-length)",
    "num_beams": "use 1 to 16 (--beams)",
    "batch_size": "use 1 to 256 (--caption-batch)",
    "device": "use auto, cpu or cuda (--device)",
    "dtype": "use auto, float32, float16 or bfloat16 (--dtype)",
}

