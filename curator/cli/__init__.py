"""Headless curator commands. ``register(subparsers)`` adds them to kiln's argparse tree.

Registration is light: each module only builds parsers; implementations are imported when a command runs.
"""

from __future__ import annotations

import argparse

from curator.cli import autotag, buckets, caption, health, tags


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add scan, check, dupes (health), buckets, tags, autotag and caption."""
    for module in (health, buckets, tags, autotag, caption):
        module.register(subparsers)
