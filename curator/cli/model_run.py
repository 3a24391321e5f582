"""What ``kiln caption`` and ``kiln autotag`` share when they start: the failure line, and the config built from
the flags and checked (with the dataset's existence) before any model or dataset is loaded.

Registration stays light: pydantic is imported only when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from typing import TypeVar

ConfigT = TypeVar("ConfigT")


def fail(command: str, message: str, as_json: bool) -> int:
    """``kiln COMMAND: message`` on stderr (control characters shown, newlines kept), with ``--json`` also
    ``{"exit_code": 1, "reason": message}`` on stdout; returns the exit code 1."""
    from curator.textsafe import printable

    print(f"kiln {command}: {printable(message, keep_newlines=True)}", file=sys.stderr)
    if as_json:
        print(json.dumps({"exit_code": 1, "reason": message}))
    return 1


def checked_config(command: str, args: argparse.Namespace, build: Callable[[argparse.Namespace], ConfigT],
                   hints: Mapping[str, str]) -> ConfigT | None:
    """``build(args)``, the command's config, when it validates and ``args.dataset`` exists; else None, the
    problem printed by ``fail`` (each bad field with its fix from ``hints``)."""
    from pydantic import ValidationError

    from curator.configerrors import describe_validation_error

    try:
        config = build(args)
    except ValidationError as exc:
        fail(command, describe_validation_error(exc, command, hints), args.json)
        return None
    if not args.dataset.exists():
        fail(command, f"{args.dataset}: no such dataset folder or TOML file", args.json)
        return None
    return config
