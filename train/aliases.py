"""kohya's option names as aliases of kiln's config keys.

A section's field may accept kohya sd-scripts' name for the same setting (``max_train_steps`` for
``train.max_steps``): ``Field(..., validation_alias=kohya("max_train_steps"))``, with the alias named in the
field's description. Giving both names in one section is an error naming both, never a silent pick.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import AliasChoices, BaseModel, ConfigDict, model_validator


def kohya(*names: str) -> AliasChoices:
    """The kohya names a field also answers to (the field's own name is always accepted)."""
    return AliasChoices(*names)


def aliases_of(model: type[BaseModel], field: str) -> list[str]:
    """The alias names of ``field`` (empty when it has none)."""
    alias = model.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices if isinstance(choice, str)]
    return [alias] if isinstance(alias, str) else []


class KohyaNamed(BaseModel):
    """A config section whose fields may carry kohya aliases; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_by_name=True,
                              validate_by_alias=True)
    section: ClassVar[str] = ""
    """The section's name in the config file (for messages)."""

    @model_validator(mode="before")
    @classmethod
    def _one_name_per_setting(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        for name in cls.model_fields:
            given = [key for key in (name, *aliases_of(cls, name)) if key in data]
            if len(given) > 1:
                where = f"{cls.section}." if cls.section else ""
                raise ValueError(f"@{where}{given[-1]}: {' and '.join(given)} are one setting (kiln's and kohya's "
                                 f"names for {name}); keep one")
        return data
