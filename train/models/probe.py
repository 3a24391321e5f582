"""Cheap, torch-free checks of a base model before loading: file kind, safetensors header, architecture.

`inspect_base_model(cfg)` is what `load_base_model` runs first; the training CLI can call it up front to fail
fast (missing file, pickle without --allow-pickle, truncated download, LoRA passed as base model, ...).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .arch import (
    Arch,
    ArchitectureError,
    ModelLoadError,
    detect_architecture,
    detect_diffusers_folder,
    has_v_prediction_marker,
)
from .config import ModelConfig

if TYPE_CHECKING:
    import torch

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_MAX_HEADER = 100_000_000  # the safetensors format's MAX_HEADER_SIZE
# bytes per element of each safetensors dtype (sub-byte ones are not listed: their sizes are not checked)
DTYPE_SIZES = {"F64": 8, "I64": 8, "U64": 8, "C64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2,
               "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1}


@dataclass
class SafetensorsHeader:
    """Tensor names -> shape (and safetensors dtype name, e.g. 'F16'), plus the file's `__metadata__`."""

    shapes: dict[str, tuple[int, ...]]
    metadata: dict[str, str] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)


def read_safetensors_header(path: Path, *, field_name: str = "model.path") -> SafetensorsHeader:
    """Parse a .safetensors header without torch; raise ModelLoadError if it is not a complete safetensors file.

    Hostile files are refused before anything is allocated from them: the header may be at most 100 MB (the
    format's own limit), must be one JSON object whose entries each give a known dtype, a shape and data
    offsets that fit the file and match the shape (what the safetensors library checks when it loads).
    """
    bad = (f"{field_name}: {path} is not a valid .safetensors file (truncated or corrupted download?)"
           " Re-download it, or check that it is really a safetensors checkpoint.")
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise ModelLoadError(f"{bad} [file is {size} bytes]")
            (n,) = struct.unpack("<Q", raw)
            if n <= 1 or n > _MAX_HEADER or n + 8 > size:
                raise ModelLoadError(f"{bad} [header length {n} does not fit the file size {size}]")
            header = json.loads(fh.read(n).decode("utf-8"))
    except ModelLoadError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, struct.error, RecursionError) as exc:
        raise ModelLoadError(f"{bad} [{type(exc).__name__}: {exc}]") from exc
    if not isinstance(header, dict):
        raise ModelLoadError(f"{bad} [header is not a JSON object]")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise ModelLoadError(f"{bad} [__metadata__ is not a JSON object]")
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, str] = {}
    end = 0
    for name, info in header.items():
        try:
            shape = tuple(int(d) for d in info["shape"])
            start, stop = (int(o) for o in info["data_offsets"])
            itemsize = DTYPE_SIZES.get(str(info["dtype"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{bad} [bad entry for {name!r}]") from exc
        if any(d < 0 for d in shape) or not 0 <= start <= stop:
            raise ModelLoadError(f"{bad} [bad shape or offsets for {name!r}]")
        if itemsize is not None and (stop - start) != math.prod(shape) * itemsize:
            raise ModelLoadError(f"{bad} [{name!r}: {stop - start} bytes of data for shape {list(shape)}]")
        shapes[name] = shape
        dtypes[name] = str(info["dtype"])
        end = max(end, stop)
    if 8 + n + end > size:
        raise ModelLoadError(f"{bad} [the file is {size} bytes but its tensors need {8 + n + end}]")
    return SafetensorsHeader(shapes=shapes, metadata={str(k): str(v) for k, v in metadata.items()}, dtypes=dtypes)


def pickle_refusal(path: Path, field_name: str = "model.path") -> ModelLoadError:
    return ModelLoadError(
        f"{field_name}: {path.name} is a pickled checkpoint ({path.suffix}), which can run arbitrary code when "
        "loaded. kiln loads it only if you allow it: pass --allow-pickle (or set model.allow_pickle = true) for "
        "a file you trust, or better convert it once to .safetensors (e.g. with kohya's "
        "tools/convert_diffusers20_original_sd.py or A1111's checkpoint merger)."
    )


def load_pickle_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a .ckpt/.pt state dict (only call after the user allowed pickle). Unwraps `state_dict`."""
    import torch

    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - mmap refuses some files (legacy format): read it whole, errors reported below
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # whatever the unpickler raises, the message names it
            raise ModelLoadError(
                f"{path}: cannot read this pickled checkpoint safely ({type(exc).__name__}: {exc}). Convert it to "
                ".safetensors with a tool you trust."
            ) from exc
    while isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ModelLoadError(f"{path}: does not hold a state dict (found {type(sd).__name__}).")
    return sd


@dataclass
class Inspection:
    """What `inspect_base_model` found."""

    kind: str  # "single_file" | "diffusers"
    path: Path
    arch: Arch
    v_prediction: bool
    pickled: bool = False
    ztsnr: bool = False
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def arch_name(self) -> str:
        return "sd2-v" if self.arch is Arch.SD2 and self.v_prediction else str(self.arch)


def _check_override(cfg: ModelConfig, arch: Arch, where: str) -> None:
    wanted = cfg.architecture
    if wanted == "auto":
        return
    family = "sd2" if wanted == "sd2-v" else wanted
    if family != arch:
        raise ArchitectureError(
            f"model.architecture = {wanted!r} but {where} is an {arch.value.upper()} checkpoint. Set "
            f"model.architecture = 'auto' (or {arch.value!r}), or point model.path at a {family.upper()} model."
        )


def _resolve_v_prediction(
    cfg: ModelConfig, arch: Arch, from_file: bool | None, where: str, marker: bool
) -> bool:
    if cfg.v_prediction is not None:
        return cfg.v_prediction
    if cfg.architecture == "sd2-v":
        return True
    if cfg.architecture == "sd2":
        if marker:
            raise ArchitectureError(
                f"{where} carries a 'v_pred' marker (v-prediction) but model.architecture = 'sd2' means epsilon. "
                "Use 'sd2-v', or set model.v_prediction explicitly."
            )
        return False
    if from_file is not None:
        return from_file
    if arch is Arch.SD2:
        raise ArchitectureError(
            f"{where} is an SD2.x checkpoint and the file does not say whether it predicts v (SD 2.0-v / 2.1 768 "
            "and their fine-tunes) or noise (SD 2.x-base 512). Set model.architecture = 'sd2-v' or 'sd2' "
            "(or model.v_prediction = true/false)."
        )
    return False


def _config_dir_v_prediction(config_dir: Path | None) -> bool | None:
    """prediction_type from a user-given config folder's scheduler config (None when it does not say)."""
    if config_dir is None:
        return None
    sched = config_dir / "scheduler" / "scheduler_config.json"
    try:
        pred = json.loads(sched.read_text(encoding="utf-8")).get("prediction_type")
    except (OSError, json.JSONDecodeError):
        return None
    return None if pred is None else pred == "v_prediction"


DIFFUSERS_PARTS = ("unet", "vae", "text_encoder")


def weights_variant(folder: Path) -> str | None:
    """'fp16' when a diffusers folder holds only `*.fp16.safetensors` UNet weights (what kiln then loads)."""
    unet = folder / "unet"
    if any(unet.glob("diffusion_pytorch_model.safetensors")) or any(unet.glob("diffusion_pytorch_model.bin")):
        return None
    if any(unet.glob("*.fp16.safetensors")):
        return "fp16"
    return None


def diffusers_weight_files(folder: Path, arch: Arch) -> list[Path]:
    """The ``.safetensors`` files of a diffusers folder that loading it reads: every part's weights (shards
    included) of the variant kiln loads."""
    variant = weights_variant(folder)
    parts = DIFFUSERS_PARTS + (("text_encoder_2",) if arch is Arch.SDXL else ())
    files: list[Path] = []
    for part in parts:
        for weights in sorted((folder / part).glob("*.safetensors")):
            infix = weights.name.removesuffix(".safetensors").split(".")[1:]
            if (variant is None and not infix) or (variant is not None and variant in ".".join(infix)):
                files.append(weights)
    return files


def _folder_ztsnr(folder: Path) -> bool:
    """A diffusers folder whose scheduler config rescales its betas to zero terminal SNR."""
    try:
        config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("rescale_betas_zero_snr") is True


def inspect_base_model(cfg: ModelConfig, *, allow_pickle: bool = False) -> Inspection:
    """Validate `cfg.path` and detect its architecture without loading weights (pickled files excepted)."""
    path = cfg.path
    where = str(path)
    if not path.exists():
        raise ModelLoadError(f"model.path: {path} does not exist. Set it to a .safetensors checkpoint or a "
                             "diffusers model folder.")
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            hint = ""
            files = sorted(p.name for p in path.glob("*.safetensors"))[:3]
            if files:
                hint = f" It holds {', '.join(files)}: point model.path at one of those files."
            raise ModelLoadError(f"model.path: {path} is a folder but not a diffusers model folder (no "
                                 f"model_index.json).{hint}")
        arch, v_file = detect_diffusers_folder(path)
        _check_override(cfg, arch, where)
        for weights in diffusers_weight_files(path, arch):  # a download that stopped part-way is said here
            read_safetensors_header(weights)
        v = _resolve_v_prediction(cfg, arch, v_file, where, marker=False)
        return Inspection(kind="diffusers", path=path, arch=arch, v_prediction=v, ztsnr=_folder_ztsnr(path))
    suffix = path.suffix.lower()
    pickled = suffix in PICKLE_SUFFIXES
    if suffix in SAFETENSORS_SUFFIXES:
        header = read_safetensors_header(path)
        shapes, metadata = header.shapes, header.metadata
    elif pickled:
        if not (allow_pickle or cfg.allow_pickle):
            raise pickle_refusal(path)
        sd = load_pickle_state_dict(path)
        shapes = {k: tuple(getattr(v, "shape", ())) for k, v in sd.items()}
        metadata = {}
        del sd
    else:
        raise ModelLoadError(
            f"model.path: {path.name} has an unsupported extension {suffix!r}. Use a .safetensors checkpoint, a "
            "diffusers folder, or a .ckpt with --allow-pickle."
        )
    arch = detect_architecture(shapes.keys(), shapes, where=where)
    _check_override(cfg, arch, where)
    marker = has_v_prediction_marker(shapes.keys())
    from_file = True if marker else _config_dir_v_prediction(cfg.config_dir)
    v = _resolve_v_prediction(cfg, arch, from_file, where, marker)
    return Inspection(kind="single_file", path=path, arch=arch, v_prediction=v, pickled=pickled,
                      ztsnr="ztsnr" in shapes, metadata=metadata)
