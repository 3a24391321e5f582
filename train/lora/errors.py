"""The one error type of the `kiln lora` commands."""

from __future__ import annotations


class LoraToolError(ValueError):
    """A `kiln lora` command cannot do what was asked; the message says why and what to do instead."""
