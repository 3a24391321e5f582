"""Reading the files `kiln lora` takes and guarding the ones it writes.

Inputs: ``.safetensors`` (the header is validated and size-capped before anything is loaded, see
``train.models.probe.read_safetensors_header``), PEFT adapter folders (``adapter_model.safetensors`` +
``adapter_config.json``), and pickled ``.ckpt``/``.pt``/``.pth``/``.bin`` files only with ``--allow-pickle``
(then loaded with ``torch.load(weights_only=True)``). Outputs: never an existing file without ``--force``,
always written atomically (``curator.fsutil``).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from train.lora.errors import LoraToolError
from train.models.arch import ModelLoadError
from train.models.probe import (
    PICKLE_SUFFIXES,
    SAFETENSORS_SUFFIXES,
    SafetensorsHeader,
    load_pickle_state_dict,
    read_safetensors_header,
)

if TYPE_CHECKING:
    import torch

PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"


@dataclass
class StateFile:
    """A file's tensors and string metadata (plus a PEFT folder's adapter_config.json, when there is one)."""

    path: Path
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    peft_config: dict[str, Any] = field(default_factory=dict)
    pickled: bool = False


def require_input(path: Path, flag: str) -> Path:
    """``path`` expanded; a clear error when it does not exist."""
    path = Path(path).expanduser()
    if not path.exists():
        raise LoraToolError(f"{flag}: {path} does not exist")
    return path


def pickle_refused(path: Path, flag: str) -> LoraToolError:
    return LoraToolError(
        f"{flag}: {path.name} is a pickled file ({path.suffix}), which can run arbitrary code when loaded. "
        "Pass --allow-pickle for a file you trust, or convert it to .safetensors once."
    )


def read_header(path: Path, flag: str) -> SafetensorsHeader:
    """The validated safetensors header (shapes + metadata) without loading a tensor."""
    try:
        return read_safetensors_header(path, field_name=flag)
    except ModelLoadError as exc:
        raise LoraToolError(str(exc)) from None


def load_state_file(path: Path, *, allow_pickle: bool, flag: str) -> StateFile:
    """All tensors of a LoRA-sized file (or PEFT folder). The header is checked first; pickles need
    ``allow_pickle``."""
    path = require_input(path, flag)
    if path.is_dir():
        weights = path / PEFT_WEIGHTS
        if not weights.is_file():
            raise LoraToolError(f"{flag}: {path} is a folder without {PEFT_WEIGHTS} (not a PEFT adapter folder); "
                                "give the .safetensors file")
        config: dict[str, Any] = {}
        config_path = path / PEFT_CONFIG
        if config_path.is_file():
            try:
                loaded = json.loads(config_path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise LoraToolError(f"{flag}: {config_path} is not readable JSON ({exc})") from None
            if isinstance(loaded, dict):
                config = loaded
        state = load_state_file(weights, allow_pickle=allow_pickle, flag=flag)
        state.peft_config = config
        return state
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        header = read_header(path, flag)
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise LoraToolError(f"{flag}: {path} is not a readable safetensors file ({exc})") from None
        return StateFile(path, tensors, header.metadata)
    if suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise pickle_refused(path, flag)
        try:
            raw = load_pickle_state_dict(path)
        except ModelLoadError as exc:
            raise LoraToolError(f"{flag}: {exc}") from None
        import torch

        tensors = {str(k): v for k, v in raw.items() if isinstance(v, torch.Tensor)}
        return StateFile(path, tensors, {}, pickled=True)
    raise LoraToolError(f"{flag}: {path.name} has an unsupported extension {suffix!r}; give a .safetensors file "
                        "(or a .pt/.ckpt with --allow-pickle)")


def check_output(path: Path, *, force: bool, flag: str = "--out", suffixes: tuple[str, ...] = (".safetensors",),
                 inputs: tuple[Path, ...] = ()) -> Path:
    """Validate an output path before any work starts: right extension, not a folder, parent folder writable,
    and not an existing file unless ``force``."""
    path = Path(path).expanduser()
    if path.suffix.lower() not in suffixes:
        raise LoraToolError(f"{flag}: {path.name} must end in {' or '.join(suffixes)}")
    if path.is_dir():
        raise LoraToolError(f"{flag}: {path} is a folder; give a file name")
    if path.exists() and not force:
        raise LoraToolError(f"{flag}: {path} already exists; pass --force to replace it (it is replaced "
                            "atomically, only once the new file is complete)")
    for source in inputs:
        if source.exists() and path.exists() and os.path.samefile(source, path):
            raise LoraToolError(f"{flag}: {path} is also an input; write to another file")
    parent = path.parent if str(path.parent) else Path(".")
    existing = parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise LoraToolError(f"{flag}: cannot write into {existing}")
    return path


def write_with(path: Path, write: Callable[[Path], None], size: int | None = None) -> None:
    """Create the parent folder and write ``path`` atomically through ``write(temp_path)`` (``size``: the bytes
    expected, checked against the disk's free space first)."""
    from curator.fsutil import atomic_write_with

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_with(path, write, size=size)


def save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """A safetensors file written atomically and streamed (no second in-memory copy of the data)."""
    from safetensors.torch import save_file

    size = sum(t.numel() * t.element_size() for t in tensors.values())
    size += sum(len(k) + 96 for k in tensors) + sum(len(k) + len(v) + 8 for k, v in metadata.items())
    write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata), size=size)


@dataclass
class FileHashes:
    """The hashes users compare a LoRA by: A1111/Civitai's (whole file) and sd-webui-additional-networks'."""

    sha256: str
    addnet: str | None  # sha256 of the bytes after the safetensors header (= kohya's sshs_model_hash)
    legacy: str  # 8 hex digits of the 64 KiB at offset 1 MiB (the old A1111/addnet "model hash")

    @property
    def autov2(self) -> str:
        """Civitai's AutoV2 (first 10 hex digits)."""
        return self.sha256[:10]

    @property
    def a1111_short(self) -> str:
        """The short hash A1111 shows for extra networks (first 12 hex digits)."""
        return self.sha256[:12]


def file_hashes(path: Path) -> FileHashes:
    """Hashes in one pass over the file."""
    whole = hashlib.sha256()
    after_header = hashlib.sha256()
    with path.open("rb") as fh:
        head = fh.read(8)
        header_end: int | None = None
        if len(head) == 8 and path.suffix.lower() in SAFETENSORS_SUFFIXES:
            header_end = 8 + struct.unpack("<Q", head)[0]
        whole.update(head)
        offset = len(head)
        while chunk := fh.read(1 << 20):
            whole.update(chunk)
            if header_end is not None:
                start = max(0, header_end - offset)
                if start < len(chunk):
                    after_header.update(chunk[start:])
            offset += len(chunk)
        fh.seek(0x100000)
        legacy = hashlib.sha256(fh.read(0x10000)).hexdigest()[:8]
    return FileHashes(whole.hexdigest(), after_header.hexdigest() if header_end is not None else None, legacy)
