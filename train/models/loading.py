"""Load an SD1.x / SD2.x / SDXL base model for training, strictly offline.

Single-file checkpoints go through diffusers' `from_single_file` with a local, assembled config folder (shipped
configs + CLIP tokenizer files), diffusers folders through `from_pretrained(local_files_only=True)`. The Hub is
never contacted: HF_HUB_OFFLINE is forced on while loading.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .arch import Arch, ModelLoadError
from .assemble import assemble_config_dir, shipped_config_name
from .config import ModelConfig
from .probe import (
    DIFFUSERS_PARTS,
    PICKLE_SUFFIXES,
    SAFETENSORS_SUFFIXES,
    Inspection,
    inspect_base_model,
    load_pickle_state_dict,
    pickle_refusal,
    read_safetensors_header,
    weights_variant,
)

if TYPE_CHECKING:
    import torch

    from .kinds import AutoencoderKL, CLIPTokenizer, DDPMScheduler, TextEncoder, UNet2DConditionModel

# The SD training noise schedule (kohya sd-scripts, diffusers train scripts).
TRAIN_SCHEDULER_KWARGS = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
}
_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Force huggingface_hub / transformers / diffusers offline for the duration (env + already-read constants)."""
    saved_env = {k: os.environ.get(k) for k in _OFFLINE_ENV}
    os.environ.update(_OFFLINE_ENV)
    patched: list[tuple[object, str, object]] = []
    try:
        import huggingface_hub.constants as hf_constants

        for name in ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
            patched.append((hf_constants, name, getattr(hf_constants, name)))
            setattr(hf_constants, name, True)
        import diffusers.utils.hub_utils as d_hub

        for name in ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
            if hasattr(d_hub, name):
                patched.append((d_hub, name, getattr(d_hub, name)))
                setattr(d_hub, name, True)
        yield
    finally:
        for module, name, value in reversed(patched):
            setattr(module, name, value)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    states = [(mod, mod.is_progress_bar_enabled()) for mod in (dlog, tlog)]
    for mod, _ in states:
        mod.disable_progress_bar()
    try:
        yield
    finally:
        for mod, was_enabled in states:
            if was_enabled:
                mod.enable_progress_bar()


@dataclass
class ModelHash:
    """Identity of the base model, as kohya writes it into LoRA metadata.

    `legacy` is kohya's `ss_sd_model_hash` (sha256 of 64 KiB at offset 1 MiB, 8 hex digits);
    `sha256()` is `ss_new_sd_model_hash` (whole file; computed on first call, it reads the whole file).
    """

    name: str
    path: Path
    legacy: str | None = None
    _sha256: str | None = field(default=None, repr=False)

    def sha256(self) -> str | None:
        if self._sha256 is None and self.path.is_file():
            self._sha256 = sha256_of(self.path)
        return self._sha256

    @property
    def autov2(self) -> str | None:
        """A1111's short hash (first 10 hex digits of the file sha256)."""
        full = self.sha256()
        return full[:10] if full else None


def sha256_of(path: Path) -> str:
    """kohya's ``calculate_sha256``: the whole file's sha256 (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def legacy_model_hash(path: Path) -> str | None:
    """kohya `model_hash`: sha256 of 0x10000 bytes read at offset 0x100000, first 8 hex digits."""
    if not path.is_file():
        return None
    with path.open("rb") as fh:
        fh.seek(0x100000)
        return hashlib.sha256(fh.read(0x10000)).hexdigest()[:8]


@dataclass
class BaseModel:
    """A loaded base model. Weights are frozen (requires_grad False) and in eval mode.

    text_encoders / tokenizers: one for SD1/SD2, two for SDXL (CLIP-L, then OpenCLIP-bigG with projection).
    noise_scheduler: DDPMScheduler with the SD training schedule and the model's prediction type.
    """

    arch: Arch
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoders: list[TextEncoder]
    tokenizers: list[CLIPTokenizer]
    noise_scheduler: DDPMScheduler
    v_prediction: bool
    model_hash: ModelHash
    source: Path
    config_dir: Path
    vae_source: Path | None = None
    ztsnr: bool = False
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def arch_name(self) -> str:
        """'sd1', 'sd2', 'sd2-v' (SD2 with v-prediction) or 'sdxl'."""
        return "sd2-v" if self.arch is Arch.SD2 and self.v_prediction else str(self.arch)

    @property
    def is_sdxl(self) -> bool:
        return self.arch is Arch.SDXL


def make_noise_scheduler(v_prediction: bool, zero_terminal_snr: bool = False) -> DDPMScheduler:
    """The training noise schedule; ``zero_terminal_snr`` rescales its betas so the last timestep is pure noise
    (Lin et al. 2023, Algorithm 1: kohya's ``fix_noise_scheduler_betas_for_zero_terminal_snr``). Samplers built
    from its config (``from_config``) inherit the rescaling."""
    from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

    scheduler: DDPMScheduler = DDPMScheduler(**TRAIN_SCHEDULER_KWARGS,
                                             prediction_type="v_prediction" if v_prediction else "epsilon",
                                             rescale_betas_zero_snr=zero_terminal_snr)
    return scheduler


@dataclass
class _Parts:
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoders: list[TextEncoder]
    tokenizers: list[CLIPTokenizer]


def _load_diffusers_folder(folder: Path, arch: Arch, dtype: torch.dtype | None, allow_pickle: bool) -> _Parts:
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    subs = [*DIFFUSERS_PARTS] + (["text_encoder_2"] if arch is Arch.SDXL else [])
    safe = {sub: any((folder / sub).glob("*.safetensors")) for sub in subs}
    for sub in subs:
        if not safe[sub] and not allow_pickle:
            pickled = sorted((folder / sub).glob("*.bin")) or [folder / sub / "(no weights)"]
            raise pickle_refusal(pickled[0])
    variant = weights_variant(folder)
    extra = {"variant": variant} if variant else {}

    def dkw(sub: str) -> dict[str, Any]:
        return {"subfolder": sub, "local_files_only": True, "torch_dtype": dtype, "use_safetensors": safe[sub],
                **extra}

    def tkw(sub: str) -> dict[str, Any]:
        return {"subfolder": sub, "local_files_only": True, "dtype": dtype, "use_safetensors": safe[sub], **extra}

    tes: list[TextEncoder] = [CLIPTextModel.from_pretrained(folder, **tkw("text_encoder"))]
    toks = [CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)]
    if arch is Arch.SDXL:
        tes.append(CLIPTextModelWithProjection.from_pretrained(folder, **tkw("text_encoder_2")))
        toks.append(CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer_2", local_files_only=True))
    return _Parts(unet=UNet2DConditionModel.from_pretrained(folder, **dkw("unet")),
                  vae=AutoencoderKL.from_pretrained(folder, **dkw("vae")), text_encoders=tes, tokenizers=toks)


def _load_single_file(path: Path, arch: Arch, config_dir: Path, dtype: torch.dtype | None) -> _Parts:
    if arch is Arch.SDXL:
        from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import (
            StableDiffusionXLPipeline,
        )

        xl = StableDiffusionXLPipeline.from_single_file(
            str(path), config=str(config_dir), local_files_only=True, torch_dtype=dtype, add_watermarker=False,
        )
        return _Parts(unet=xl.unet, vae=xl.vae, text_encoders=[xl.text_encoder, xl.text_encoder_2],
                      tokenizers=[xl.tokenizer, xl.tokenizer_2])
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline

    sd = StableDiffusionPipeline.from_single_file(
        str(path), config=str(config_dir), local_files_only=True, torch_dtype=dtype,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    return _Parts(unet=sd.unet, vae=sd.vae, text_encoders=[sd.text_encoder], tokenizers=[sd.tokenizer])


def _vae_key_layout(keys: list[str]) -> str:
    if any(k.startswith(("encoder.down_blocks.", "decoder.up_blocks.")) for k in keys):
        return "diffusers"
    if any(k.startswith(("encoder.down.", "decoder.up.", "first_stage_model.")) for k in keys):
        return "ldm"
    return "unknown"


def check_vae(path: Path, *, allow_pickle: bool = False) -> str:
    """Cheap up-front checks of a replacement VAE; returns its kind ('folder', 'ldm', 'diffusers', 'pickle')."""
    if not path.exists():
        raise ModelLoadError(f"model.vae: {path} does not exist. Set it to a VAE .safetensors file or a diffusers "
                             "VAE folder, or remove it to use the checkpoint's own VAE.")
    if path.is_dir():
        sub = path if (path / "config.json").is_file() else path / "vae"
        if not (sub / "config.json").is_file():
            raise ModelLoadError(f"model.vae: {path} is a folder without config.json (nor vae/config.json); "
                                 "not a diffusers VAE folder.")
        return "folder"
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise pickle_refusal(path, "model.vae")
        return "pickle"
    if suffix not in SAFETENSORS_SUFFIXES:
        raise ModelLoadError(f"model.vae: {path.name} has an unsupported extension {suffix!r}; use a "
                             ".safetensors VAE or a diffusers VAE folder.")
    layout = _vae_key_layout(list(read_safetensors_header(path, field_name="model.vae").shapes))
    if layout == "unknown":
        raise ModelLoadError(f"model.vae: {path.name} does not look like a VAE (no encoder/decoder weights).")
    return layout


def load_vae(path: Path, config_dir: Path, *, dtype: torch.dtype | None = None,
             allow_pickle: bool = False) -> AutoencoderKL:
    """A replacement VAE: single file (LDM or diffusers key layout) or a diffusers VAE folder."""
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    kind = check_vae(path, allow_pickle=allow_pickle)
    with offline():
        if kind == "folder":
            sub = path if (path / "config.json").is_file() else path / "vae"
            try:
                vae: AutoencoderKL = AutoencoderKL.from_pretrained(sub, local_files_only=True, torch_dtype=dtype)
                return vae
            except Exception as exc:
                raise ModelLoadError(f"model.vae: cannot load the diffusers VAE in {sub}: {exc}") from exc
        source: str | dict[str, torch.Tensor] = str(path)
        layout = kind
        if kind == "pickle":
            source = load_pickle_state_dict(path)
            layout = _vae_key_layout(list(source))
            if layout == "unknown":
                raise ModelLoadError(f"model.vae: {path.name} does not look like a VAE (no encoder/decoder "
                                     "weights).")
        try:
            if layout == "ldm":
                vae = AutoencoderKL.from_single_file(source, config=str(config_dir), subfolder="vae",
                                                     local_files_only=True, torch_dtype=dtype)
                return vae
            vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config_dir / "vae"))
            if isinstance(source, str):
                from safetensors.torch import load_file

                source = load_file(source)
            vae.load_state_dict(source, strict=True)
            if dtype is not None:
                as_module: torch.nn.Module = vae  # diffusers' functools.wraps'd .to() defeats type checkers
                as_module.to(dtype)
            return vae
        except Exception as exc:
            raise ModelLoadError(f"model.vae: {path.name} does not fit this model's VAE ({exc}).") from exc


def load_base_model(
    cfg: ModelConfig,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    allow_pickle: bool = False,
) -> BaseModel:
    """Load the base model `cfg` describes; raises ModelLoadError (incl. ArchitectureError) with a clear message.

    dtype: torch dtype for the weights (None: as stored, float32 for single files); device: where to put them.
    """
    allow = allow_pickle or cfg.allow_pickle
    info: Inspection = inspect_base_model(cfg, allow_pickle=allow)
    if cfg.vae is not None:
        check_vae(cfg.vae, allow_pickle=allow)
    if cfg.config_dir is not None:
        config_dir = assemble_config_dir(cfg.config_dir)
    else:
        config_dir = assemble_config_dir(shipped_config_name(info.arch.value, info.v_prediction))
    try:
        with offline(), _quiet_progress():
            if info.kind == "diffusers":
                parts = _load_diffusers_folder(info.path, info.arch, dtype, allow)
            else:
                parts = _load_single_file(info.path, info.arch, config_dir, dtype)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"model.path: could not load {info.path} as an {info.arch_name.upper()} model: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    vae = parts.vae
    if cfg.vae is not None:
        vae = load_vae(cfg.vae, config_dir, dtype=dtype, allow_pickle=allow)
    modules: list[torch.nn.Module] = [parts.unet, vae, *parts.text_encoders]
    for module in modules:
        module.requires_grad_(False)
        module.eval()
        module.to(device)
    legacy = legacy_model_hash(info.path) if info.path.is_file() else None
    return BaseModel(
        arch=info.arch,
        unet=parts.unet,
        vae=vae,
        text_encoders=parts.text_encoders,
        tokenizers=parts.tokenizers,
        noise_scheduler=make_noise_scheduler(info.v_prediction),
        v_prediction=info.v_prediction,
        model_hash=ModelHash(name=info.path.stem if info.path.is_file() else info.path.name, path=info.path,
                             legacy=legacy),
        source=info.path,
        config_dir=config_dir,
        vae_source=cfg.vae,
        ztsnr=info.ztsnr,
        metadata=info.metadata,
    )
