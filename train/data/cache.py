"""Latent and text-encoder-output caches.

Latents are cached in memory or on disk under ``<dataset>/.kiln/latents/`` (the only place kiln writes in a
dataset). A disk entry's name is a hash of the image's content (sha256), its bucket, resize, crop, flip and the
VAE's identity, so a changed image, a new bucket setting or another VAE is simply a new entry.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from train.models.kinds import AutoencoderKL


def vae_identity(vae: AutoencoderKL) -> str:
    """A short fingerprint of a VAE: its config plus a checksum of a few weights (cheap, content-based)."""
    import torch

    h = hashlib.sha256(json.dumps(dict(vae.config), sort_keys=True, default=str).encode())
    params = list(vae.parameters())
    for p in (params[0], params[len(params) // 2], params[-1]):
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes()[:65536])
        h.update(str(torch.sum(p.detach().float()).item()).encode())
    return h.hexdigest()[:16]


def latent_key(sha256: str, bucket: tuple[int, int], resized: tuple[int, int], crop: tuple[int, int],
               flip: bool, vae_id: str) -> str:
    text = f"{sha256}|{bucket[0]}x{bucket[1]}|{resized[0]}x{resized[1]}|{crop[0]},{crop[1]}|{int(flip)}|{vae_id}"
    return hashlib.sha256(text.encode()).hexdigest()[:40]


class LatentCache:
    """Latents by key: on disk when ``folder`` is given (read back per batch, so RAM stays flat on big
    datasets), else in memory."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = Path(folder) if folder else None
        self.memory: dict[str, torch.Tensor] = {}

    def _file(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> torch.Tensor | None:
        latent = self.memory.get(key)
        if latent is not None:
            return latent
        if self.folder is not None:
            path = self._file(key)
            if path.is_file():
                from safetensors.torch import load_file

                try:
                    return load_file(str(path))["latent"]
                except Exception:  # noqa: BLE001 - a torn or foreign file (any safetensors error): re-encode
                    return None
        return None

    def has(self, key: str) -> bool:
        return key in self.memory or (self.folder is not None and self._file(key).is_file())

    def put(self, key: str, latent: torch.Tensor) -> None:
        latent = latent.detach().to("cpu").contiguous()
        if self.folder is None:
            self.memory[key] = latent
        else:
            from safetensors.torch import save_file

            path = self._file(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            save_file({"latent": latent}, str(tmp))
            os.replace(tmp, path)


class TextCache:
    """Text-encoder outputs by caption text (memory only): (hidden states, pooled or None)."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def get(self, caption: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The cached outputs for ``caption`` (every caption of the run was cached up front)."""
        try:
            return self.entries[caption]
        except KeyError:
            raise KeyError(f"caption not in the text-encoder cache: {caption!r}") from None

    def put(self, caption: str, hidden: torch.Tensor, pooled: torch.Tensor | None) -> None:
        self.entries[caption] = (hidden.detach().to("cpu"), None if pooled is None else pooled.detach().to("cpu"))
