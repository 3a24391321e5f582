"""Headless curator commands. ``register(subparsers)`` adds them to kiln's argparse tree.

Registration is light: each module only builds parsers; implementations are imported when a command runs.
Modules owned by other parts (buckets, tags, autotag) are registered when present, so a missing one never
breaks the command line.
"""

from __future__ import annotations

import argparse
import importlib

_MODULES = ("curator.cli.health", "curator.cli.buckets", "curator.cli.tags", "curator.cli.autotag")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add scan, check, dupes, buckets, tags and autotag (those whose module exists)."""
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # that command is not part of this build
            raise
        module.register(subparsers)
