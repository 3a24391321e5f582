"""`AutotagConfig`: every autotag setting, validated up front with messages that name the field."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from curator.autotag.tagtext import tag_key
from curator.autotag.thresholds import SelectionRules

Mode = Literal["missing", "append", "replace"]
Device = Literal["auto", "cpu", "cuda", "rocm"]


def _default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2)))


def split_tags(values: list[str] | str | None) -> list[str]:
    """`["a, b", "c"]` -> `["a", "b", "c"]`: tags may be given one per flag or comma-separated."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for value in values:
        out.extend(part.strip() for part in str(value).split(",") if part.strip())
    return out


def split_tag_input(value: object, items: str) -> list[str]:
    """A config field of tags or words given as a list or a comma-separated string (None: none), split by
    ``split_tags``; anything else is a ValueError naming what was expected (``items``: "tags", "words")."""
    if value is None:
        return []
    if isinstance(value, str | list | tuple):
        return split_tags(list(value) if isinstance(value, tuple) else value)
    raise ValueError(f"expected a list of {items} or a comma-separated string")


class AutotagConfig(BaseModel):
    """Settings of one autotag run (CLI flags map one-to-one onto these fields)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model: str = Field(min_length=1, description="folder with model.onnx + selected_tags.csv, or a cached HF repo id")
    general_threshold: float = Field(0.35, ge=0.0, le=1.0)
    character_threshold: float = Field(0.85, ge=0.0, le=1.0)
    general_mcut: bool = False
    character_mcut: bool = False
    ratings: bool = False
    exclude: list[str] = Field(default_factory=list)
    keep_underscores: bool = False
    character_first: bool = False
    max_tags: int | None = Field(None, ge=1)
    prefix: list[str] = Field(default_factory=list, description="tags kept first in every caption (trigger words)")
    prefix_from_folder: bool = False
    include_reg: bool = False  # regularization subsets are left out unless asked (kohya captions them by folder)
    mode: Mode = "missing"
    batch_size: int = Field(16, ge=1, le=4096)
    workers: int = Field(default_factory=_default_workers, ge=1, le=64)
    device: Device = "auto"
    where: str | None = None
    dry_run: bool = False

    @field_validator("exclude", "prefix", mode="before")
    @classmethod
    def _split(cls, value: object) -> list[str]:
        return split_tag_input(value, "tags")

    @field_validator("model")
    @classmethod
    def _strip_model(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("empty; give a folder holding model.onnx and selected_tags.csv or a repo id")
        return value

    def rules(self) -> SelectionRules:
        """The tag-selection part of this config."""
        return SelectionRules(
            general_threshold=self.general_threshold,
            character_threshold=self.character_threshold,
            general_mcut=self.general_mcut,
            character_mcut=self.character_mcut,
            ratings=self.ratings,
            exclude=frozenset(tag_key(t) for t in self.exclude),
            keep_underscores=self.keep_underscores,
            character_first=self.character_first,
            max_tags=self.max_tags,
        )


FIELD_HINTS = {  # field -> the fix, for curator.configerrors.describe_validation_error
    "model": "give a folder holding model.onnx and selected_tags.csv, or a repo id in the local Hugging Face cache "
             "such as SmilingWolf/wd-swinv2-tagger-v3 (--model)",
    "general_threshold": "use a probability between 0 and 1 (--general 0.35)",
    "character_threshold": "use a probability between 0 and 1 (--character 0.85)",
    "batch_size": "use a whole number of at least 1 (--tagger-batch 16)",
    "workers": "use 1 to 64 decode threads (--threads 4)",
    "max_tags": "use at least 1, or leave it out for no cap (--max-tags)",
    "mode": "use missing, append or replace (--mode)",
    "device": "use auto, cpu, cuda or rocm (--device)",
}

