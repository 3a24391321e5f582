"""Fixtures for the base-model tests: tiny SD1/SD2/SDXL models saved as diffusers folders and single files.

Import the fixtures you use into a test module (`from tests.model_fixtures import tiny_sd1  # noqa: F401`).
The saves are session-scoped (built once, about a second each); the kiln cache goes to a temp dir.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def models_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private KILN_CACHE_DIR for the whole session (assembled configs, tokenizer files)."""
    import os

    cache = tmp_path_factory.mktemp("kiln-cache")
    old = os.environ.get("KILN_CACHE_DIR")
    os.environ["KILN_CACHE_DIR"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("KILN_CACHE_DIR", None)
    else:
        os.environ["KILN_CACHE_DIR"] = old


def _tiny(arch: str, tmp_path_factory: pytest.TempPathFactory):
    from train.models.tiny import build_tiny, save_tiny

    model = build_tiny(arch, seed=1234)
    paths = save_tiny(arch, tmp_path_factory.mktemp(f"tiny-{arch}"), model=model)
    return model, paths


@pytest.fixture(scope="session")
def tiny_sd1(models_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """(TinyModel, TinyPaths) for a tiny SD1 model."""
    return _tiny("sd1", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_sd2(models_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    return _tiny("sd2", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_sdxl(models_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    return _tiny("sdxl", tmp_path_factory)


def write_safetensors_keys(path: Path, keys: dict[str, tuple[int, ...]], metadata: dict | None = None) -> Path:
    """A valid .safetensors file with zero-filled float16 tensors of the given shapes (no torch needed)."""
    header: dict = {}
    offset = 0
    for name, shape in keys.items():
        n = 2
        for d in shape:
            n *= d
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)
    return path


def kohya_lora_keys() -> dict[str, tuple[int, ...]]:
    """Key names and shapes of a small kohya-format SD1 LoRA (rank 4)."""
    keys: dict[str, tuple[int, ...]] = {}
    for name, (din, dout) in {
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": (320, 320),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k": (768, 320),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (768, 768),
    }.items():
        keys[f"{name}.lora_down.weight"] = (4, din)
        keys[f"{name}.lora_up.weight"] = (dout, 4)
        keys[f"{name}.alpha"] = ()
    return keys
