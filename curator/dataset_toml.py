"""The kohya dataset TOML (``--dataset_config``), checked the way kohya's ``ConfigSanitizer`` checks it.

kohya validates the file with a voluptuous schema before training: ``[general]`` and each ``[[datasets]]`` are
tables, ``[[datasets.subsets]]`` a list of tables, ``num_repeats`` an integer, ``resolution`` an integer or
``[width, height]``, and so on. A file kohya would refuse is refused here too, up front, with the field
(``datasets[0].subsets[1].num_repeats``), the value and what kohya wants. Keys kiln does not use are allowed
(kohya has many, and gains more); only the types of the keys kiln reads are checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

Resolution = StrictInt | Annotated[list[StrictInt], Field(min_length=2, max_length=2)]
Rate = StrictFloat | StrictInt


class _Table(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class _SubsetOptions(_Table):
    """Options a subset inherits from its dataset and from ``[general]`` (kohya's "ascendable" keys)."""

    num_repeats: StrictInt | None = None
    keep_tokens: StrictInt | None = Field(None, ge=0)
    caption_extension: StrictStr | None = None
    class_tokens: StrictStr | None = None
    shuffle_caption: StrictBool | None = None
    flip_aug: StrictBool | None = None
    caption_dropout_rate: Rate | None = None
    caption_tag_dropout_rate: Rate | None = None
    caption_dropout_every_n_epochs: StrictInt | None = None


class SubsetTable(_SubsetOptions):
    image_dir: StrictStr | None = None
    metadata_file: StrictStr | None = None
    is_reg: StrictBool | None = None


class _DatasetOptions(_SubsetOptions):
    resolution: Resolution | None = None
    batch_size: StrictInt | None = Field(None, ge=1)
    enable_bucket: StrictBool | None = None
    bucket_no_upscale: StrictBool | None = None
    min_bucket_reso: StrictInt | None = Field(None, ge=1)
    max_bucket_reso: StrictInt | None = Field(None, ge=1)
    bucket_reso_steps: StrictInt | None = Field(None, ge=1)


class DatasetTable(_DatasetOptions):
    subsets: list[SubsetTable] = Field(default_factory=list)


class GeneralTable(_DatasetOptions):
    pass


class DatasetToml(_Table):
    general: GeneralTable = Field(default_factory=GeneralTable)
    datasets: list[DatasetTable] = Field(default_factory=list)


_WANTS = {
    "int_type": "an integer",
    "bool_type": "true or false",
    "string_type": "a string in quotes",
    "float_type": "a number",
    "list_type": "a list",
    "model_type": "a table",
    "dict_type": "a table",
    "too_short": "[width, height]",
    "too_long": "[width, height]",
    "greater_than_equal": "a number >= {ge}",
}
_TABLE_HINT = {"general": "[general]", "datasets": "[[datasets]]", "subsets": "[[datasets.subsets]]"}


def _field(loc: tuple[int | str, ...]) -> str:
    """pydantic's location as the TOML path kohya users read: ``datasets[0].subsets[1].num_repeats`` (union
    member names such as ``int`` or ``list[int]`` dropped)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in part or part in ("int", "str", "bool", "float", "list"):
            continue
        else:
            out += ("." if out else "") + part
    return out or "the file"


def check_dataset_toml(data: dict[str, Any], path: Path) -> list[str]:
    """The problems kohya would refuse ``data`` (a parsed dataset TOML) for, one line each (empty: none)."""
    try:
        DatasetToml.model_validate(data)
    except ValidationError as exc:
        lines: dict[str, str] = {}
        for err in exc.errors(include_url=False):
            field = _field(tuple(err["loc"]))
            if field in lines:
                continue  # a union reports each member; the first line says it
            wants = _WANTS.get(err["type"], "")
            wants = wants.format(**(err.get("ctx") or {})) if wants else str(err["msg"]).lower()
            if field.split(".")[-1].split("[")[0] in _TABLE_HINT and err["type"] in ("model_type", "list_type",
                                                                                     "dict_type"):
                wants = f"{'a list of tables ' if err['type'] == 'list_type' else 'a table '}" \
                        f"({_TABLE_HINT[field.split('.')[-1].split('[')[0]]})"
            if field.split(".")[-1] == "resolution":
                wants = "an integer or [width, height]"
            shown = repr(err.get("input"))
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            lines[field] = f"{path}: {field}: {shown} is not allowed: kohya wants {wants}"
        return list(lines.values())
    return []
