"""Packaged data: rule tables and the CLIP tokenizer vocabulary."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_dir() -> Path:
    """The folder of the curator's packaged data files (``clip/``, ``clip_tokenizer/``, rule tables), wherever
    kiln is installed. kiln is installed as plain files (not a zip), so this is a real folder."""
    root = resources.files(__name__)
    if not isinstance(root, Path):
        raise RuntimeError(f"curator.data is not a folder on disk ({root!r}); install kiln from a wheel or sdist")
    return root
