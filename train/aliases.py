"""kohya's option names as aliases of kiln's config keys.

The names come from the one kohya name table, :mod:`train.kohya_names` (``section_aliases``: the kohya options
that are a plain rename of a kiln key in the same section, ``network_dim`` -> ``[network] dim``). A config file,
a preset or ``--set`` may use either name; each layer is put in kiln's names before the layers merge, so a
kohya name in your file overrides the preset's kiln name. One layer giving both names is an error naming both,
never a silent pick.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator


def section_aliases(section: str) -> dict[str, str]:
    """``kohya name -> kiln key`` accepted in ``[section]``."""
    from train.kohya_names import section_aliases as table

    return table(section)


def both_names(section: str, kohya_name: str, key: str) -> str:
    """The message for a setting given under both names."""
    where = f"{section}." if section else ""
    return (f"{where}{kohya_name}: {key} and {kohya_name} are one setting (kiln's and kohya's names for {key}); "
            "keep one")


def canonical(section: str, key: str, fields: set[str] | None = None) -> str:
    """Kiln's name for ``key`` in ``section`` (``key`` itself when it is no alias, or when ``fields`` -- the
    section's keys -- does not have the target)."""
    target = section_aliases(section).get(key)
    if target is None or (fields is not None and target not in fields):
        return key
    return target


def to_kiln_names(raw: dict[str, Any], fields: dict[str, set[str]]) -> list[str]:
    """Rename, in place, every section's kohya names in ``raw`` to kiln's (``fields``: each section's keys);
    returns one error line per setting given under both names."""
    problems: list[str] = []
    for section, table in raw.items():
        if not isinstance(table, dict) or section not in fields:
            continue
        for alias, key in section_aliases(section).items():
            if alias not in table or key not in fields[section]:
                continue
            if key in table:
                problems.append(both_names(section, alias, key))
                continue
            table[key] = table.pop(alias)
    return problems


class KohyaNamed(BaseModel):
    """A config section that accepts kohya's names for its keys; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    section: ClassVar[str] = ""
    """The section's name in the config file (for messages and its kohya names)."""

    @model_validator(mode="before")
    @classmethod
    def _kiln_names(cls, data: object) -> object:
        if not isinstance(data, dict) or not cls.section:
            return data
        out = dict(data)
        for alias, key in section_aliases(cls.section).items():
            if alias in out and key in cls.model_fields:
                if key in out:
                    raise ValueError("@" + both_names(cls.section, alias, key))
                out[key] = out.pop(alias)
        return out
