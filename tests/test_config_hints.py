"""The fixes that caption and autotag errors suggest name options the commands really have (they drifted once:
``--batch-size`` and ``--workers`` were renamed ``--caption-batch``/``--tagger-batch`` and ``--threads``)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

import pytest
from pydantic import ValidationError

import curator.cli.autotag
import curator.cli.caption
from curator.autotag.config import FIELD_HINTS as AUTOTAG_HINTS
from curator.autotag.config import AutotagConfig
from curator.caption.config import FIELD_HINTS as CAPTION_HINTS
from curator.caption.config import CaptionConfig
from curator.configerrors import describe_validation_error

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def visible_options(register: Register, command: str) -> set[str]:
    """The option strings ``kiln COMMAND --help`` lists (hidden aliases left out)."""
    subparsers = argparse.ArgumentParser().add_subparsers()
    register(subparsers)
    parser = subparsers.choices[command]
    return {flag for action in parser._actions if action.help != argparse.SUPPRESS for flag in action.option_strings}


@pytest.mark.parametrize(
    ("command", "register", "hints", "config"),
    [("caption", curator.cli.caption.register, CAPTION_HINTS, CaptionConfig),
     ("autotag", curator.cli.autotag.register, AUTOTAG_HINTS, AutotagConfig)],
)
def test_every_hint_names_an_option_the_command_has(command: str, register: Register, hints: dict[str, str],
                                                    config: type) -> None:
    options = visible_options(register, command)
    assert "--model" in options and "--help" in options  # the parser really was read
    for field, hint in hints.items():
        assert field in config.model_fields, f"{command} hint for unknown field {field!r}"
        named = re.findall(r"--[a-z][a-z0-9-]*", hint)
        assert named, f"{command} hint for {field!r} names no option: {hint!r}"
        for option in named:
            assert option in options, f"{command} hint for {field!r} names {option}, which {command} does not have"


def test_errors_name_the_command_field_value_and_the_renamed_options() -> None:
    with pytest.raises(ValidationError) as info:
        AutotagConfig(model="m", batch_size=0, workers=0)
    text = describe_validation_error(info.value, "autotag", AUTOTAG_HINTS)
    assert "autotag batch_size = 0:" in text and "--tagger-batch" in text
    assert "autotag workers = 0:" in text and "--threads" in text
    with pytest.raises(ValidationError) as info:
        CaptionConfig(model="m", batch_size=0)
    text = describe_validation_error(info.value, "caption", CAPTION_HINTS)
    assert text.startswith("caption batch_size = 0:") and "--caption-batch" in text


def test_a_validator_message_reads_without_pydantic_prefix() -> None:
    with pytest.raises(ValidationError) as info:
        AutotagConfig(model="  ")
    text = describe_validation_error(info.value, "autotag", AUTOTAG_HINTS)
    assert text.startswith("autotag model = '  ': empty; give a folder") and "Value error" not in text
