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


def _v_prediction(ctx: Context) -> bool | None:
    """Whether the model predicts v: ``model.v_prediction`` when set, else the checkpoint's (None: unknown)."""
    forced = ctx.cfg.model.v_prediction
    if forced is not None:
        return forced
    if ctx.model is not None:
        return ctx.model.v_prediction
    return True if ctx.cfg.model.architecture == "sd2-v" else None


@check("loss options for the prediction type")
def loss_for_prediction_type(ctx: Context) -> Iterator[Finding]:
    """``scale_v_pred_loss_like_noise_pred`` is for v-prediction models, ``v_pred_like_loss`` for noise
    prediction ones (kohya's rule; the trainer refuses the other kind after loading the model)."""
    t = ctx.cfg.train
    v = _v_prediction(ctx)
    if v is None:
        return
    if t.scale_v_pred_loss_like_noise_pred and not v:
        yield error("train.scale_v_pred_loss_like_noise_pred", "the model predicts noise, not v: this weighting "
                    "is for v-prediction models", fix="--set train.scale_v_pred_loss_like_noise_pred=false")
    if t.v_pred_like_loss and v:
        yield error("train.v_pred_like_loss", "the model already predicts v: this extra loss is for "
                    "noise-prediction models", fix="--set train.v_pred_like_loss=0 (remove the key)")


@check("zero terminal SNR")
def zero_terminal_snr_fits(ctx: Context) -> Iterator[Finding]:
    """``zero_terminal_snr = true`` on a noise-prediction model is a warning: at the last timestep the input is
    pure noise, predicting that noise teaches nothing and samples lose their contrast (the rescaled schedule is
    meant for v-prediction, as diffusers and kohya say). Left unset, it follows the checkpoint."""
    if ctx.cfg.train.zero_terminal_snr and _v_prediction(ctx) is False:
        yield warning("train.zero_terminal_snr", "the model predicts noise: zero-terminal-SNR betas are meant for "
                      "v-prediction models (an epsilon model learns nothing at the last timestep)",
                      fix="--set model.v_prediction=true (a v model) or remove train.zero_terminal_snr")


@check("block dims for the architecture")
def block_dims_for_arch(ctx: Context) -> Iterator[Finding]:
    """``block_dims`` / ``block_alphas`` / ``conv_block_dims`` / ``conv_block_alphas`` have one value per UNet
    block of kohya's layout: 25 for SD1/SD2 (IN00-IN11, MID, OUT00-OUT11), 23 for SDXL (IN00-IN08, MID,
    OUT00-OUT08 plus kohya's 4 extra)."""
    arch = ctx.arch
    if arch is None:
        return
    n = 23 if arch == "sdxl" else 25
    net = ctx.cfg.network
    for name in ("block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas"):
        given = getattr(net, name)
        if given is not None and len(given) != n:
            yield error(f"network.{name}", f"{len(given)} values, and {arch} has {n} blocks in kohya's layout",
                        fix=f"give {n} values (one per block)")


@check("text encoder learning rates")
def text_encoder_learning_rates(ctx: Context) -> Iterator[Finding]:
    """``text_encoder_lr`` as a list gives each text encoder its own rate: SD1/SD2 have one text encoder,
    SDXL two (kohya's TE1 / TE2 rates)."""
    lrs = ctx.cfg.train.text_encoder_lr
    arch = ctx.arch
    if not isinstance(lrs, list) or len(set(lrs)) <= 1 or arch is None or not ctx.cfg.trains_text_encoder:
        return
    count = 2 if arch == "sdxl" else 1
    if len(lrs) != count:
        shown = "[" + ", ".join(f"{v:g}" for v in lrs) + "]"
        yield error("train.text_encoder_lr", f"{shown} gives {len(lrs)} rates and {arch} has {count} text "
                    f"encoder{'s' * (count != 1)}",
                    fix=f"--set train.text_encoder_lr={lrs[0]:g}" if count == 1 else
                    f"--set 'train.text_encoder_lr=[{lrs[0]:g}, {lrs[-1]:g}]'")
