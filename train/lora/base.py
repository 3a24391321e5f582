"""A base model's tensors, read one at a time: a single-file checkpoint (original LDM / SGM keys, as A1111/Forge
and ComfyUI save them), a diffusers folder, or (with ``--allow-pickle``) a pickled ``.ckpt``.

``open_base`` checks the input up front (exists, not a pickle unless allowed, a valid safetensors header, an
SD1.x / SD2.x / SDXL base model and not a LoRA or VAE), so a bad ``--base`` fails before any work.
``BaseWeights.locate(slot)`` says where a layer's weight is stored: the key (names from
``train.models.convert``, the one home of the layout rules) and, for the OpenCLIP text encoders (SD2, SDXL's
second), which rows of the fused ``in_proj_weight`` hold q, k or v.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from train.lora.errors import LoraToolError
from train.lora.files import pickle_refused, read_header, require_input
from train.lora.keymap import KeyMap, Slot, build_keymap
from train.models.arch import (
    SD1_TE_PREFIX,
    SD2_TE_PREFIX,
    SDXL_TE1_PREFIX,
    SDXL_TE2_PREFIX,
    UNET_PREFIX,
    Arch,
    ArchitectureError,
    ModelLoadError,
    detect_architecture,
    detect_diffusers_folder,
    has_v_prediction_marker,
)
from train.models.probe import PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES

if TYPE_CHECKING:
    import torch

COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")
_VARIANT_MARKERS = (".fp16.", ".bf16.", ".fp32.", ".non_ema.", ".ema.")
_OPENCLIP_PARTS = ("q", "k", "v")


@dataclass(frozen=True)
class Location:
    """Where a layer's weight (and bias) is stored in the base model."""

    key: str
    rows: tuple[int, int] | None = None  # a row block of a fused weight
    bias_key: str | None = None


@dataclass
class BaseWeights:
    """Lazy, read-only access to a base model's tensors by key (diffusers folders: ``<component>/<key>``)."""

    path: Path
    arch: Arch
    layout: str  # 'single' | 'diffusers'
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    metadata: dict[str, str]
    config_dir: Path
    v_prediction: bool | None = None
    pickled: bool = False
    _files: dict[str, Path] = field(default_factory=dict, repr=False)  # key -> file holding it
    _handles: dict[Path, Any] = field(default_factory=dict, repr=False)
    _memory: dict[str, Any] = field(default_factory=dict, repr=False)  # pickled state dicts
    _keymap: KeyMap | None = field(default=None, repr=False)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)

    @property
    def name(self) -> str:
        return self.path.stem if self.path.is_file() else self.path.name

    def close(self) -> None:
        self._stack.close()
        self._handles.clear()

    def __enter__(self) -> BaseWeights:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ tensors
    def read(self, key: str) -> torch.Tensor:
        """One tensor as stored (dtype included)."""
        if key in self._memory:
            tensor: torch.Tensor = self._memory[key]
            return tensor
        file = self._files[key]
        handle = self._handles.get(file)
        if handle is None:
            from safetensors import safe_open

            handle = self._stack.enter_context(safe_open(str(file), framework="pt"))
            self._handles[file] = handle
        inner = key.split("/", 1)[1] if self.layout == "diffusers" else key
        tensor = handle.get_tensor(inner)
        return tensor

    def tensor_keys(self) -> list[str]:
        return list(self.shapes)

    # ------------------------------------------------------------------ layers
    def keymap(self) -> KeyMap:
        """The model's layers by kohya name (from a meta-device model built from its config)."""
        if self._keymap is None:
            self._keymap = keymap_from_config(self.config_dir.resolve(), self.arch)
        return self._keymap

    def locate(self, slot: Slot) -> Location | None:
        """Where ``slot``'s weight is stored, or None when this model does not have it."""
        if self.layout == "diffusers":
            return self._locate_diffusers(slot)
        return self._locate_single(slot)

    def weight(self, slot: Slot, location: Location) -> torch.Tensor:
        tensor = self.read(location.key)
        if location.rows is not None:
            tensor = tensor[location.rows[0] : location.rows[1]]
        return tensor

    def _first_present(self, candidates: list[str]) -> str | None:
        return next((c for c in candidates if c in self.shapes), None)

    def _locate_diffusers(self, slot: Slot) -> Location | None:
        component = slot.component
        paths = [slot.path]
        if slot.part != "unet":
            from train.network.targets import text_encoder_path

            full = text_encoder_path(slot.path)
            paths += [full, full.removeprefix("text_model.")]
        key = self._first_present([f"{component}/{p}.weight" for p in paths])
        if key is None:
            return None
        bias = key[: -len(".weight")] + ".bias"
        return Location(key, None, bias if bias in self.shapes else None)

    def _locate_single(self, slot: Slot) -> Location | None:
        from train.models.convert import openclip_key_to_ldm, unet_key_to_ldm

        if slot.part == "unet":
            try:
                ldm = unet_key_to_ldm(slot.path + ".weight", self.keymap().layers_per_block)
            except KeyError:
                return None
            candidates = [UNET_PREFIX + ldm]
            if ".@up." in ldm:  # the upsampler's slot is 2 after an attention, else 1
                candidates = [UNET_PREFIX + ldm.replace(".@up.", f".{n}.") for n in (2, 1)]
            key = self._first_present(candidates)
            if key is None:
                return None
            bias = key[: -len(".weight")] + ".bias"
            return Location(key, None, bias if bias in self.shapes else None)
        from train.network.targets import text_encoder_path

        hf = text_encoder_path(slot.path)
        openclip = (self.arch is Arch.SD2 and slot.part == "te") or slot.part == "te2"
        if not openclip:
            prefix = SDXL_TE1_PREFIX if slot.part == "te1" else SD1_TE_PREFIX
            key = self._first_present([f"{prefix}{hf}.weight", f"{prefix}{hf.removeprefix('text_model.')}.weight"])
            if key is None:
                return None
            bias = key[: -len(".weight")] + ".bias"
            return Location(key, None, bias if bias in self.shapes else None)
        prefix = SDXL_TE2_PREFIX if slot.part == "te2" else SD2_TE_PREFIX
        name, fused = openclip_key_to_ldm(hf + ".weight")
        bias_name, _ = openclip_key_to_ldm(hf + ".bias")
        key, bias = prefix + name, prefix + bias_name
        if key not in self.shapes:
            return None
        rows = None
        if fused is not None:
            width = slot.shape[0]
            index = _OPENCLIP_PARTS.index(fused)
            rows = (index * width, (index + 1) * width)
        return Location(key, rows, bias if bias in self.shapes else None)


@functools.lru_cache(maxsize=8)
def keymap_from_config(config_dir: Path, arch: Arch) -> KeyMap:
    """The key map of the model a diffusers config folder describes (built once per folder)."""
    from train.models.meta import meta_model_from_dir

    try:
        meta = meta_model_from_dir(config_dir, arch)
    except (OSError, ValueError, KeyError) as exc:
        raise LoraToolError(f"cannot build the {arch.value} model layout from {config_dir}: {exc}. Pass "
                            "--config-dir with the model's diffusers config folder.") from None
    return build_keymap(arch, meta.unet, meta.text_encoders)


def _diffusers_files(folder: Path, component: str, allow_pickle: bool, flag: str) -> list[Path]:
    sub = folder / component
    if not sub.is_dir():
        return []
    files = sorted(sub.glob("*.safetensors"))
    plain = [f for f in files if not any(m in f.name for m in _VARIANT_MARKERS)]
    chosen = plain or [f for f in files if ".fp16." in f.name] or files
    if chosen:
        return chosen
    pickled = sorted(sub.glob("*.bin"))
    if pickled and not allow_pickle:
        raise pickle_refused(pickled[0], flag)
    return pickled


def open_base(path: Path, *, allow_pickle: bool = False, config_dir: Path | None = None,
              flag: str = "--base") -> BaseWeights:
    """Check and open a base model (see the module docstring)."""
    path = require_input(path, flag)
    if config_dir is not None and not (Path(config_dir) / "unet" / "config.json").is_file():
        raise LoraToolError(f"--config-dir: {config_dir} is not a diffusers config folder (no unet/config.json)")
    if path.is_dir():
        return _open_folder(path, allow_pickle, config_dir, flag)
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise pickle_refused(path, flag)
        return _open_pickle(path, config_dir, flag)
    if suffix not in SAFETENSORS_SUFFIXES:
        raise LoraToolError(f"{flag}: {path.name} has an unsupported extension {suffix!r}; give a .safetensors "
                            "checkpoint, a diffusers folder, or a .ckpt with --allow-pickle")
    header = read_header(path, flag)
    arch = _detect(list(header.shapes), header.shapes, path, flag)
    v_pred = True if has_v_prediction_marker(header.shapes) else None
    base = BaseWeights(path, arch, "single", header.shapes, header.dtypes, header.metadata,
                       _config_for(arch, v_pred, config_dir), v_pred)
    base._files = dict.fromkeys(header.shapes, path)
    return base


def _detect(keys: list[str], shapes: dict[str, tuple[int, ...]], path: Path, flag: str) -> Arch:
    try:
        return detect_architecture(keys, shapes, where=f"{flag} {path}")
    except ArchitectureError as exc:
        raise LoraToolError(str(exc)) from None


def _config_for(arch: Arch, v_pred: bool | None, config_dir: Path | None) -> Path:
    from train.models.assemble import CONFIGS_DIR, shipped_config_name

    if config_dir is not None:
        return Path(config_dir)
    return CONFIGS_DIR / shipped_config_name(arch.value, True if v_pred is None else v_pred)


def _open_folder(folder: Path, allow_pickle: bool, config_dir: Path | None, flag: str) -> BaseWeights:
    if not (folder / "model_index.json").is_file():
        raise LoraToolError(f"{flag}: {folder} is a folder but not a diffusers model folder (no model_index.json)")
    try:
        arch, v_pred = detect_diffusers_folder(folder)
    except ModelLoadError as exc:
        raise LoraToolError(f"{flag}: {exc}") from None
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, str] = {}
    files: dict[str, Path] = {}
    memory: dict[str, Any] = {}
    pickled = False
    wanted = COMPONENTS if arch is Arch.SDXL else COMPONENTS[:3]
    for component in wanted:
        found = _diffusers_files(folder, component, allow_pickle, flag)
        if not found:
            raise LoraToolError(f"{flag}: {folder}/{component} holds no weights")
        for file in found:
            if file.suffix == ".bin":
                pickled = True
                from train.models.probe import load_pickle_state_dict

                for key, value in load_pickle_state_dict(file).items():
                    name = f"{component}/{key}"
                    memory[name] = value
                    shapes[name] = tuple(value.shape)
                    dtypes[name] = str(value.dtype)
                continue
            header = read_header(file, flag)
            for key, shape in header.shapes.items():
                name = f"{component}/{key}"
                shapes[name] = shape
                dtypes[name] = header.dtypes[key]
                files[name] = file
    base = BaseWeights(folder, arch, "diffusers", shapes, dtypes, {}, Path(config_dir) if config_dir else folder,
                       v_pred, pickled)
    base._files = files
    base._memory = memory
    return base


def _open_pickle(path: Path, config_dir: Path | None, flag: str) -> BaseWeights:
    import torch

    from train.models.probe import load_pickle_state_dict

    try:
        state = {str(k): v for k, v in load_pickle_state_dict(path).items() if isinstance(v, torch.Tensor)}
    except ModelLoadError as exc:
        raise LoraToolError(f"{flag}: {exc}") from None
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    arch = _detect(list(shapes), shapes, path, flag)
    v_pred = True if has_v_prediction_marker(shapes) else None
    base = BaseWeights(path, arch, "single", shapes, {k: str(v.dtype) for k, v in state.items()}, {},
                       _config_for(arch, v_pred, config_dir), v_pred, True)
    base._memory = state
    return base
