"""Model file checks: the base model (readable, complete, a base model of the architecture asked for), the
replacement VAE, the LoRA to start from, and a resolution that suits the architecture."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from train.preflight.core import Context, Finding, check, error, warning


def _field_and_text(message: str, default: str) -> tuple[str, str]:
    """Split a ``field: problem`` message (the model errors are phrased so) into its parts."""
    head, sep, rest = message.partition(": ")
    if sep and re.fullmatch(r"[a-z_]+\.[a-z_.]+", head):
        return head, rest
    named = re.match(r"([a-z_]+\.[a-z_]+) = ", message)  # "model.architecture = 'sdxl' but ..."
    return (named.group(1) if named else default), message


def _readable(path: Path, field: str) -> Finding | None:
    """An error when ``path`` cannot be opened and read (permissions, a broken disk), else None."""
    try:
        with path.open("rb") as fh:
            fh.read(8)
    except OSError as exc:
        return error(field, f"{path} cannot be read: {exc.strerror or exc}",
                     fix="check the file's permissions (ls -l) or point the key at another copy")
    return None


@check("base model")
def base_model(ctx: Context) -> Iterator[Finding]:
    """model.path exists and is readable, a complete safetensors file (header vs file size) or a diffusers
    folder whose weight files are complete, a base model (not a LoRA, VAE or embedding) of the architecture asked for."""
    from train.models.arch import ModelLoadError
    from train.models.probe import PICKLE_SUFFIXES, inspect_base_model, pickle_refusal

    cfg = ctx.cfg.model
    if not ctx.check_model_file:
        return
    path = cfg.path
    if path.is_file():
        unreadable = _readable(path, "model.path")
        if unreadable:
            yield unreadable
            return
    if path.suffix.lower() in PICKLE_SUFFIXES and path.is_file():
        if not cfg.allow_pickle:
            yield error("model.path", str(pickle_refusal(path)).removeprefix("model.path: "))
        return  # its architecture is read when it loads (unpickling it here would load it twice)
    try:
        inspect_base_model(cfg, allow_pickle=cfg.allow_pickle)
    except ModelLoadError as exc:
        field, text = _field_and_text(str(exc), "model.path")
        yield error(field, text)


@check("vae and init_from files")
def other_model_files(ctx: Context) -> Iterator[Finding]:
    """model.vae (a safetensors file or diffusers folder), network.init_from (a LoRA .safetensors) and
    model.config_dir exist and are complete."""
    from train.models.arch import ModelLoadError
    from train.models.probe import SAFETENSORS_SUFFIXES, read_safetensors_header

    cfg = ctx.cfg
    files: list[tuple[str, Path | None]] = [("model.vae", cfg.model.vae), ("network.init_from", cfg.network.init_from)]
    for field, path in files:
        if path is None:
            continue
        if not path.exists():
            yield error(field, f"{path} does not exist", fix=f"point {field} at an existing file, or remove it")
        elif path.is_dir():
            if field == "network.init_from" or not (path / "config.json").is_file():
                yield error(field, f"{path} is a folder; give a .safetensors file"
                            + (" (or a diffusers VAE folder with config.json)" if field == "model.vae" else ""))
        elif (unreadable := _readable(path, field)) is not None:
            yield unreadable
        elif path.suffix.lower() in SAFETENSORS_SUFFIXES:
            try:
                read_safetensors_header(path, field_name=field)
            except ModelLoadError as exc:
                yield error(field, str(exc).removeprefix(f"{field}: "))
        elif field == "network.init_from":
            yield error(field, f"{path.name} is not a .safetensors LoRA file")
    config_dir = cfg.model.config_dir
    if config_dir is not None and not config_dir.is_dir():
        yield error("model.config_dir", f"{config_dir} is not a folder", fix="point it at a diffusers-style config "
                    "folder (unet/config.json, ...) or remove it")


SDXL_MIN_SIDE = 768  # SDXL was trained at ~1 megapixel; below this it learns blur
SD1_MAX_AREA = 768 * 768  # SD1.x was trained at 512 px


@check("resolution for the architecture")
def resolution_for_arch(ctx: Context) -> Iterator[Finding]:
    """The training resolution suits the model: SDXL near 1024 px, SD1.x near 512 px (a warning)."""
    arch = ctx.arch
    d = ctx.cfg.dataset
    width, height = d.resolution_wh
    if arch == "sdxl" and max(width, height) < SDXL_MIN_SIDE:
        fix = "--set dataset.resolution=1024" + (" --set dataset.max_bucket_reso=2048" if d.max_bucket_reso < 1024 else "")
        yield warning("dataset.resolution", f"{width}x{height} is small for an SDXL model (trained at ~1024x1024): "
                      "its LoRA learns soft, low-detail images", fix=fix)
    elif arch == "sd1" and width * height > SD1_MAX_AREA:
        fix = "--set dataset.resolution=512" + (" --set dataset.min_bucket_reso=256" if d.min_bucket_reso > 512 else "")
        yield warning("dataset.resolution", f"{width}x{height} is large for an SD1.x model (trained at 512x512): "
                      "slower and memory-hungry for little gain", fix=fix)
