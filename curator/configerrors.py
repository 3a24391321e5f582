"""A config model's ``ValidationError`` worded for the user: the command, the field, the bad value and the fix.

``kiln caption`` and ``kiln autotag`` (and their TUI dialogs) word their errors here; each config module keeps its
own ``FIELD_HINTS`` (field -> the fix, naming the command's option), which tests/test_config_hints.py checks
against the command's real options.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


def describe_validation_error(exc: ValidationError, command: str, hints: Mapping[str, str]) -> str:
    """One line per problem: ``command field = value: what is wrong; the fix`` (the fix from ``hints``, keyed by
    the top-level field)."""
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        field = ".".join(loc) or "config"
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" = {value!r}"
        hint = hints.get(loc[0] if loc else "", "")
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"{command} {field}{shown}: {message}" + (f"; {hint}" if hint else ""))
    return "\n".join(lines)
