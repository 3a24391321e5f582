"""Latent and text-encoder-output caches.

Latents are cached in memory or on disk under ``<dataset>/.kiln/latents/``, text-encoder outputs in memory or
under ``<dataset>/.kiln/text/<encoder identity>/`` (the only places kiln writes in a dataset). A latent entry's
name is a hash of the image's content (sha256), its bucket, resize, crop, flip, loss mask and the VAE's
identity, so a changed image, a new bucket setting or another VAE is simply a new entry; a text entry's is a
hash of the caption, in a folder per text encoders + token length + clip skip.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
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
               flip: bool, vae_id: str, mask: str = "") -> str:
    """The cache entry of one (image, placement, VAE); ``mask`` names the loss mask stored with it ('alpha',
    or the mask folder), '' for none."""
    text = f"{sha256}|{bucket[0]}x{bucket[1]}|{resized[0]}x{resized[1]}|{crop[0]},{crop[1]}|{int(flip)}|{vae_id}"
    if mask:
        text += f"|mask:{mask}"
    return hashlib.sha256(text.encode()).hexdigest()[:40]


class LatentCache:
    """Latents by key: on disk when ``folder`` is given (read back per batch, so RAM stays flat on big
    datasets), else in memory."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = Path(folder) if folder else None
        self.memory: dict[str, torch.Tensor] = {}
        self.masks: dict[str, torch.Tensor] = {}

    def _file(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> torch.Tensor | None:
        return self._entry(key, "latent")

    def get_mask(self, key: str) -> torch.Tensor | None:
        """The loss mask stored with the latent (at the latent's size), or None."""
        return self._entry(key, "mask")

    def _entry(self, key: str, name: str) -> torch.Tensor | None:
        found = (self.memory if name == "latent" else self.masks).get(key)
        if found is not None:
            return found
        if self.folder is not None:
            path = self._file(key)
            if path.is_file():
                from safetensors.torch import load_file

                try:
                    return load_file(str(path)).get(name)
                except Exception:  # noqa: BLE001 - a torn or foreign file (any safetensors error): re-encode
                    return None
        return None

    def has(self, key: str) -> bool:
        return key in self.memory or (self.folder is not None and self._file(key).is_file())

    def put(self, key: str, latent: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        latent = latent.detach().to("cpu").contiguous()
        tensors = {"latent": latent}
        if mask is not None:
            tensors["mask"] = mask.detach().to("cpu").contiguous()
        if self.folder is None:
            self.memory[key] = latent
            if mask is not None:
                self.masks[key] = tensors["mask"]
        else:
            from safetensors.torch import save_file

            path = self._file(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            save_file(tensors, str(tmp))
            os.replace(tmp, path)


def text_encoder_identity(text_encoders: Sequence[torch.nn.Module], max_token_length: int, clip_skip: int) -> str:
    """A short fingerprint of what turns a caption into conditioning: each encoder's config and a checksum of
    a few weights, the token length and clip skip."""
    import torch

    h = hashlib.sha256(f"{max_token_length}|{clip_skip}".encode())
    for te in text_encoders:
        to_dict = getattr(getattr(te, "config", None), "to_dict", None)
        h.update(json.dumps(to_dict() if callable(to_dict) else {}, sort_keys=True, default=str).encode())
        params = list(te.parameters())
        for p in (params[0], params[len(params) // 2], params[-1]):
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes()[:65536])
            h.update(str(torch.sum(p.detach().float()).item()).encode())
    return h.hexdigest()[:16]


class TextCache:
    """Text-encoder outputs by caption text: (hidden states, pooled or None). In memory, or on disk in
    ``folder`` (one file per caption, named by its hash; the folder is per text-encoder identity) so a second
    run with the same captions skips encoding."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = Path(folder) if folder else None
        self.entries: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def _file(self, caption: str) -> Path:
        assert self.folder is not None
        key = hashlib.sha256(caption.encode("utf-8")).hexdigest()[:40]
        return self.folder / key[:2] / f"{key}.safetensors"

    def has(self, caption: str) -> bool:
        return caption in self.entries or (self.folder is not None and self._file(caption).is_file())

    def get(self, caption: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The cached outputs for ``caption`` (every caption of the run was cached up front)."""
        found = self.entries.get(caption)
        if found is not None:
            return found
        if self.folder is not None and self._file(caption).is_file():
            from safetensors.torch import load_file

            tensors = load_file(str(self._file(caption)))
            return tensors["hidden"], tensors.get("pooled")
        raise KeyError(f"caption not in the text-encoder cache: {caption!r}")

    def put(self, caption: str, hidden: torch.Tensor, pooled: torch.Tensor | None) -> None:
        hidden = hidden.detach().to("cpu").contiguous()
        pooled = None if pooled is None else pooled.detach().to("cpu").contiguous()
        if self.folder is None:
            self.entries[caption] = (hidden, pooled)
            return
        from safetensors.torch import save_file

        path = self._file(caption)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file({"hidden": hidden, **({"pooled": pooled} if pooled is not None else {})}, str(tmp))
        os.replace(tmp, path)
