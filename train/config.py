"""The training configuration: one typed TOML file, validated before anything heavy is loaded.

Sections: ``[model]`` (train.models.ModelConfig), ``[dataset]``, ``[network]`` (train.network.NetworkConfig),
``[train]``, ``[output]``, ``[sample]``. ``--set section.key=value`` overrides any key (values are TOML
literals, falling back to plain strings). Presets are partial configs shipped in ``train/presets/*.toml``.

Errors come back as :class:`ConfigError` whose lines read like
``train.learning_rate: -1 is not allowed: must be > 0`` or
``train.lerning_rate: unknown key; did you mean 'learning_rate'?``.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from train.aliases import KohyaNamed
from train.data.captions import CaptionSettings
from train.finetune.config import FinetuneSection, finetune_problems
from train.models.config import ModelConfig
from train.network.config import NetworkConfig
from train.optim import OPTIMIZERS, SCHEDULE_FREE_OPTIMIZERS
from train.prompts import SamplerName

if TYPE_CHECKING:
    from curator.buckets import StepMath

LossType = Literal["l2", "l1", "huber", "smooth_l1"]
HuberSchedule = Literal["snr", "exponential", "constant"]

PRESET_DIR = Path(__file__).resolve().parent / "presets"
SchedulerName = Literal["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial",
                        "cosine_with_min_lr", "warmup_stable_decay"]
SCHEDULERS: tuple[str, ...] = get_args(SchedulerName)
DEFAULT_MAX_STEPS = 1600
PATH_FIELDS = (("model", "path"), ("model", "vae"), ("model", "config_dir"), ("dataset", "path"),
               ("output", "dir"), ("network", "init_from"), ("sample", "prompt_file"))
"""(section, key) of the paths a config file may give relative to its own folder."""
BUILTIN_OPTIMIZERS: tuple[str, ...] = tuple(OPTIMIZERS)


class ConfigError(Exception):
    """A config that cannot be used. ``lines`` holds one ``field: problem`` line per problem."""

    def __init__(self, lines: list[str], source: str = "") -> None:
        self.lines = lines
        self.source = source
        head = f"invalid training config{f' ({source})' if source else ''}:"
        super().__init__("\n".join([head, *("  " + line for line in lines)]))


def _problem(field: str, value: object, fix: str) -> ValueError:
    """A cross-field problem, already phrased with its dotted field name (kept verbatim by the formatter)."""
    return ValueError(f"@{field}: {_show(value)} is not allowed: {fix}")


class _Section(KohyaNamed):
    """A section of the config: unknown keys are refused, kohya's names for a key are accepted."""


class DatasetConfig(_Section):
    """Where the images are and how they become batches."""

    section = "dataset"

    path: Path = Field(description="kiln/kohya dataset folder, flat image folder, or kohya dataset .toml "
                       "(kohya: train_data_dir, dataset_config)")
    caption_extension: str | None = Field(
        None, description="caption file extension next to each image (unset: .txt for folders; a kohya dataset TOML's "
        "own, else kohya's .caption) (kohya: caption_extention, its old spelling)",
    )
    resolution: int | tuple[int, int] = Field(512, description="training resolution: 512 or [width, height]")
    enable_bucket: bool = Field(True, description="aspect-ratio buckets (kohya); off = center-crop to resolution")
    min_bucket_reso: int = Field(256, ge=64, description="smallest bucket side in pixels")
    max_bucket_reso: int = Field(1024, ge=64, description="largest bucket side in pixels")
    bucket_reso_steps: int = Field(64, ge=8, description="bucket side granularity in pixels (multiple of 8)")
    bucket_no_upscale: bool = Field(False, description="never upscale small images; buckets fit the image")
    shuffle_caption: bool = Field(False, description="shuffle comma-separated tags each time a caption is used")
    keep_tokens: int | None = Field(
        None, ge=0, description="tags kept in front when shuffling (unset: the dataset's own keep_tokens)"
    )
    keep_tokens_separator: str = Field("", description="tags before this separator are kept in place (e.g. '|||')")
    caption_prefix: str = Field("", description="text put before every caption")
    caption_suffix: str = Field("", description="text put after every caption")
    caption_dropout_rate: float = Field(0.0, ge=0, le=1, description="chance of training with an empty caption")
    caption_dropout_every_n_epochs: int = Field(0, ge=0, description="drop all captions every N-th epoch (0=off)")
    caption_tag_dropout_rate: float = Field(0.0, ge=0, le=1, description="chance of dropping each (unkept) tag")
    caption_separator: str = Field(",", min_length=1, description="what separates tags (kohya's caption_separator)")
    max_token_length: Literal[75, 150, 225] = Field(
        75, description="caption length in tokens: 75, 150 or 225 (kohya's 75-token chunks)"
    )
    flip_aug: bool = Field(False, description="random horizontal flip")
    color_aug: bool = Field(
        False, description="kohya's color augmentation: a third of the samples get a hue shift (up to 8/180) or "
        "kohya's gamma (0.95-1.05 on 0-255 values); not with cached latents",
    )
    alpha_mask: bool = Field(
        False, description="weight the loss by each image's alpha channel (transparent = not learned; images "
        "without alpha count fully)",
    )
    random_crop: bool = Field(False, description="random crop instead of center crop inside the bucket")
    cache_latents: bool = Field(False, description="encode every image with the VAE once, before training")
    cache_latents_to_disk: bool = Field(
        False, description="keep cached latents in <dataset>/.kiln/latents/ between runs (implies cache_latents)"
    )
    cache_text_encoder_outputs: bool = Field(
        False, description="encode every caption once (needs frozen text encoders and static captions)"
    )
    cache_text_encoder_outputs_to_disk: bool = Field(
        False, description="keep the text-encoder outputs in <dataset>/.kiln/text/ between runs (implies "
        "cache_text_encoder_outputs)",
    )
    vae_batch_size: int = Field(1, ge=1, description="images per VAE call while caching latents")
    pin_memory: bool = Field(
        False, description="batches in pinned memory, copied to the GPU without blocking (CUDA only)"
    )
    num_workers: int = Field(0, ge=0, description="data loader worker processes (0 = load in the main process) "
                             "(kohya: max_data_loader_n_workers)")
    validation_split: float = Field(
        0.0, ge=0, lt=1, description="share of each folder's images held out for the validation loss (0 = none)"
    )
    validation_seed: int = Field(
        0, ge=0, description="which images are held out and the validation noise (keep it to compare runs)"
    )

    @field_validator("resolution", mode="before")
    @classmethod
    def _resolution_shape(cls, v: object) -> object:
        if isinstance(v, str) and re.fullmatch(r"\s*\d+\s*([,x]\s*\d+\s*)?", v):
            parts = [int(p) for p in re.split(r"[,x]", v)]
            return parts[0] if len(parts) == 1 else tuple(parts)
        if isinstance(v, list | tuple) and len(v) == 1:
            return v[0]
        if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, list | tuple) and len(v) == 2
                                                               and all(isinstance(x, int) for x in v))):
            raise ValueError(f"{_show(v)} is not allowed: use a side like 512 or [width, height] like [768, 512]")
        return v

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, v: int | tuple[int, int]) -> int | tuple[int, int]:
        sides = (v, v) if isinstance(v, int) else v
        for side in sides:
            if side < 64 or side % 8:
                raise ValueError(f"{_show(v)} is not allowed: each side must be >= 64 and a multiple of 8")
        return v

    @field_validator("caption_extension")
    @classmethod
    def _ext(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v:
            raise ValueError("'' is not allowed: give an extension such as '.txt' or '.caption'")
        return v if v.startswith(".") else "." + v

    @model_validator(mode="after")
    def _buckets(self) -> DatasetConfig:
        from train.data.dataset import bucket_settings

        try:
            bucket_settings(self)
        except ValidationError as exc:
            text = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
            raise _problem("dataset.min_bucket_reso / max_bucket_reso / bucket_reso_steps",
                           [self.min_bucket_reso, self.max_bucket_reso, self.bucket_reso_steps], text) from None
        return self

    @property
    def resolution_wh(self) -> tuple[int, int]:
        if isinstance(self.resolution, int):
            return (self.resolution, self.resolution)
        width, height = self.resolution
        return (width, height)

    def caption_settings(self) -> CaptionSettings:
        """The caption processing these options ask for (kohya's shuffle, keep tokens, dropout)."""
        return CaptionSettings(
            shuffle=self.shuffle_caption, keep_tokens=self.keep_tokens,
            keep_tokens_separator=self.keep_tokens_separator, prefix=self.caption_prefix,
            suffix=self.caption_suffix, dropout_rate=self.caption_dropout_rate,
            dropout_every_n_epochs=self.caption_dropout_every_n_epochs,
            tag_dropout_rate=self.caption_tag_dropout_rate, separator=self.caption_separator,
        )

    @property
    def caches_text_encoder_outputs(self) -> bool:
        return self.cache_text_encoder_outputs or self.cache_text_encoder_outputs_to_disk

    @property
    def static_captions(self) -> bool:
        """True when a caption is the same every epoch (no shuffling or dropout)."""
        return self.caption_settings().static


class SchedulePhase(_Section):
    """One phase of a multi-phase LR schedule (``[[train.phases]]``): its length in steps or epochs (one phase
    may leave it out and take the rest of the run), its scheduler and its warmup, all restarting at the phase's
    first step."""

    lr_scheduler: SchedulerName = Field(description=" | ".join(SCHEDULERS))
    steps: int | None = Field(None, ge=1, description="optimizer steps in this phase")
    epochs: int | None = Field(None, ge=1, description="epochs in this phase (instead of steps)")
    lr_warmup: float = Field(0, ge=0, description="warmup at the phase's start: steps (>= 1) or a ratio (< 1)")
    lr_scheduler_num_cycles: int = Field(1, ge=1, description="restarts for cosine_with_restarts")
    lr_scheduler_power: float = Field(1.0, gt=0, description="power for the polynomial scheduler")
    lr_scale: float = Field(1.0, gt=0, description="multiplies every learning rate during this phase")

    @model_validator(mode="after")
    def _length(self) -> SchedulePhase:
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give a phase steps or epochs, not both")
        return self


class TrainSection(_Section):
    """Optimiser, schedule, loss and precision."""

    section = "train"

    optimizer: str = Field(
        "AdamW", description=", ".join(BUILTIN_OPTIMIZERS) + ", or module.Class (kohya: optimizer_type)",
    )
    optimizer_args: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments for the optimizer, e.g. { weight_decay = 0.01 }"
    )
    learning_rate: float = Field(1e-4, gt=0, description="base learning rate")
    unet_lr: float | None = Field(None, gt=0, description="UNet learning rate (unset: learning_rate)")
    text_encoder_lr: float | list[float] | None = Field(
        None, description="text encoder learning rate (unset: learning_rate; 0 = UNet only); SDXL: [TE1, TE2] "
        "gives each encoder its own (0 leaves one untrained), kohya's list form",
    )
    allow_unusual_lr: bool = Field(
        False, description="train with learning rates the pre-flight calls wrong for the optimizer (it still warns)"
    )
    lr_scheduler: SchedulerName = Field("constant", description=" | ".join(SCHEDULERS))
    lr_warmup: float = Field(0, ge=0, description="warmup: steps (>= 1) or a ratio of the total steps (< 1) "
                             "(kohya: lr_warmup_steps)")
    lr_scheduler_num_cycles: int = Field(1, ge=1, description="restarts for cosine_with_restarts")
    lr_scheduler_power: float = Field(1.0, gt=0, description="power for the polynomial scheduler")
    lr_scheduler_min_lr_ratio: float | None = Field(
        None, ge=0, lt=1, description="floor of cosine_with_min_lr and warmup_stable_decay, as a ratio of the LR"
    )
    lr_decay_steps: float = Field(
        0, ge=0, description="warmup_stable_decay: decay steps (>= 1) or a ratio of the total steps (< 1)"
    )
    max_steps: int | None = Field(DEFAULT_MAX_STEPS, ge=1, description="optimizer steps to train (ignored if max_epochs is set) "
                                  "(kohya: max_train_steps)")
    max_epochs: int | None = Field(None, ge=1, description="epochs to train (overrides max_steps) (kohya: max_train_epochs)")
    batch_size: int = Field(1, ge=1, description="images per batch per process (one bucket per batch; a dataset TOML's "
                            "batch_size wins) (kohya: train_batch_size)")
    gradient_accumulation_steps: int = Field(1, ge=1, description="batches summed into one optimizer step")
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = Field(
        "auto", description="auto (bf16 on GPUs that have it, else fp16; no on CPU) | no | fp16 | bf16"
    )
    full_fp16: bool = Field(False, description="network weights, gradients and optimizer state in fp16 (needs "
                            "mixed_precision fp16; kohya's experimental option)")
    full_bf16: bool = Field(False, description="network weights, gradients and optimizer state in bf16 (needs "
                            "mixed_precision bf16): less memory, best with Adafactor or an 8-bit optimizer")
    fp8_base: bool = Field(False, description="store the frozen UNet and text encoders in float8, each layer "
                           "up-cast while it runs: about half the memory of fp16 weights")
    fp8_base_unet: bool = Field(False, description="float8 storage for the UNet only (text encoders as they are)")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward: less memory, slower")
    attention: Literal["sdpa", "xformers", "eager"] = Field(
        "sdpa", description="sdpa (PyTorch scaled-dot-product) | xformers (needs the xformers package, CUDA) | eager"
    )
    sdpa_backend: Literal["auto", "flash", "efficient", "cudnn", "math"] = Field(
        "auto", description="scaled-dot-product kernel: auto (PyTorch picks) | flash | efficient | cudnn (GPU) | math"
    )
    channels_last: bool = Field(False, description="UNet weights and activations in channels-last memory format")
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = Field(
        "off", description="torch.compile the UNet with this mode (reduce-overhead adds CUDA graphs); the first "
        "step of each bucket size compiles (minutes)"
    )
    max_grad_norm: float = Field(1.0, ge=0, description="clip gradients to this norm (0 = off)")
    max_bad_steps: int = Field(
        3, ge=0, description="steps in a row with a NaN/inf loss that are skipped (no update); one more stops the "
        "run, the last good weights saved (0 = stop at the first)"
    )
    clip_skip: int = Field(1, ge=1, le=12, description="SD1/SD2 text encoder layer from the end (2 = penultimate)")
    seed: int = Field(42, ge=0, description="random seed (data order, noise, timesteps, augmentation)")
    loss_type: LossType = Field(
        "l2", description="l2 | l1 | huber (pseudo-Huber) | smooth_l1 (huber and smooth_l1 follow huber_schedule)"
    )
    huber_schedule: HuberSchedule = Field(
        "snr", description="Huber parameter per timestep (kohya's default snr): snr = (1 - huber_c) / (1 + sigma_t)^2 "
        "+ huber_c | exponential = exp(-t ln(1/huber_c) / 1000) * huber_scale | constant = huber_c * huber_scale",
    )
    huber_c: float = Field(0.1, gt=0, le=1, description="Huber loss parameter (the schedule's floor / decay)")
    huber_scale: float = Field(1.0, gt=0, description="Huber parameter scale (exponential and constant schedules)")
    min_snr_gamma: float | None = Field(None, gt=0, description="Min-SNR weighting gamma (5 is common; unset = off)")
    scale_v_pred_loss_like_noise_pred: bool = Field(
        False, description="v-prediction models: scale the loss by SNR/(SNR+1) to weigh timesteps like noise prediction"
    )
    v_pred_like_loss: float | None = Field(
        None, gt=0, description="noise-prediction models: add this times a v-prediction-like loss (kohya)"
    )
    debiased_estimation_loss: bool = Field(
        False, description="weight the loss by 1/sqrt(SNR) (v-prediction: 1/(SNR+1)), the debiased estimation"
    )
    noise_offset: float = Field(0.0, ge=0, description="noise offset (0.05-0.1 helps very dark/bright images)")
    noise_offset_random_strength: bool = Field(
        False, description="draw each sample's noise offset uniformly between 0 and noise_offset"
    )
    adaptive_noise_scale: float | None = Field(
        None, description="add this times the latent's mean absolute value (per channel) to noise_offset"
    )
    multires_noise_iterations: int | None = Field(
        None, ge=1, le=64, description="multires (pyramid) noise levels (6-10 is common; unset = off)"
    )
    multires_noise_discount: float = Field(
        0.3, gt=0, le=1, description="weight of each lower multires noise level (discount^level)"
    )
    ip_noise_gamma: float | None = Field(
        None, gt=0, description="input perturbation noise strength (0.1 is common; unset = off)"
    )
    ip_noise_gamma_random_strength: bool = Field(
        False, description="draw each sample's perturbation strength uniformly between 0 and ip_noise_gamma"
    )
    zero_terminal_snr: bool | None = Field(
        None, description="rescale the noise schedule to zero terminal SNR (unset: on for checkpoints that say "
        "they were trained so, off otherwise)",
    )
    prior_loss_weight: float = Field(1.0, ge=0, description="loss weight of regularisation images")
    masked_loss: bool = Field(
        False, description="weight the loss by a mask for every image: its alpha channel, or with a dataset TOML "
        "subset's conditioning_data_dir the same-named image there (kohya's masked loss)",
    )
    min_timestep: int = Field(0, ge=0, le=1000, description="smallest noise timestep sampled")
    max_timestep: int = Field(1000, ge=1, le=1000, description="largest noise timestep sampled (exclusive)")
    validate_every_n_steps: int | None = Field(
        None, ge=1, description="validation loss every N steps (with dataset.validation_split)"
    )
    validate_every_n_epochs: int | None = Field(
        None, ge=1, description="validation loss every N epochs (unset: every epoch, as kohya)"
    )
    max_validation_steps: int | None = Field(
        None, ge=1, description="validation batches per validation (unset: the whole held-out split)"
    )
    phases: list[SchedulePhase] = Field(
        default_factory=list,
        description="multi-phase LR schedule, e.g. [{ lr_scheduler = \"linear\" }, { lr_scheduler = \"cosine\", "
        "epochs = 2 }]: phases run one after the other (one without a length takes the rest of the run); "
        "empty = one lr_scheduler for the whole run",
    )

    @field_validator("text_encoder_lr")
    @classmethod
    def _te_lrs(cls, v: float | list[float] | None) -> float | list[float] | None:
        values = v if isinstance(v, list) else [] if v is None else [v]
        if isinstance(v, list) and len(v) not in (1, 2):
            raise ValueError(f"{_show(v)} is not allowed: give one rate, or [TE1, TE2] for SDXL's two encoders")
        if any(x < 0 for x in values):
            raise ValueError(f"{_show(v)} is not allowed: rates must be >= 0")
        return v[0] if isinstance(v, list) and len(v) == 1 else v

    @field_validator("optimizer")
    @classmethod
    def _optimizer(cls, v: str) -> str:
        for name in BUILTIN_OPTIMIZERS:
            if v.lower() == name.lower():
                return name
        if re.fullmatch(r"[A-Za-z_][\w.]*\.[A-Za-z_]\w*", v):
            return v
        close = difflib.get_close_matches(v, BUILTIN_OPTIMIZERS, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ValueError(f"{_show(v)} is not allowed: {hint}use one of {', '.join(BUILTIN_OPTIMIZERS)} or module.Class")

    @model_validator(mode="after")
    def _timesteps(self) -> TrainSection:
        if self.min_timestep >= self.max_timestep:
            raise _problem("train.min_timestep", self.min_timestep, f"must be < max_timestep ({self.max_timestep})")
        open_ended = [i for i, p in enumerate(self.phases) if p.steps is None and p.epochs is None]
        if len(open_ended) > 1:
            raise _problem("train.phases", [p.lr_scheduler for p in self.phases],
                           "only one phase may leave its length out (it takes the rest of the run); give the "
                           "others steps = N or epochs = N")
        return self

    @model_validator(mode="after")
    def _precision(self) -> TrainSection:
        if self.full_fp16 and self.full_bf16:
            raise _problem("train.full_bf16", True, "full_fp16 and full_bf16 exclude each other; keep one")
        for flag, wanted in (("full_fp16", "fp16"), ("full_bf16", "bf16")):
            if getattr(self, flag) and self.mixed_precision not in (wanted, "auto"):
                raise _problem(f"train.{flag}", True, f"it needs mixed_precision = \"{wanted}\" (not "
                               f"{self.mixed_precision!r}); set that, or turn {flag} off")
        return self

    @model_validator(mode="after")
    def _schedule(self) -> TrainSection:
        if self.lr_scheduler == "cosine_with_min_lr" and self.lr_scheduler_min_lr_ratio is None:
            raise _problem("train.lr_scheduler", self.lr_scheduler,
                           "cosine_with_min_lr needs train.lr_scheduler_min_lr_ratio (e.g. 0.1); set it")
        if self.optimizer in SCHEDULE_FREE_OPTIMIZERS and (self.lr_scheduler != "constant" or self.lr_warmup):
            raise _problem("train.lr_scheduler", self.lr_scheduler,
                           f"{self.optimizer} schedules itself: set lr_scheduler = \"constant\" and lr_warmup = 0 "
                           "(its own warmup is optimizer_args.warmup_steps)")
        return self

    @model_validator(mode="after")
    def _noise_options(self) -> TrainSection:
        needs = (("adaptive_noise_scale", self.adaptive_noise_scale is not None, "noise_offset", self.noise_offset),
                 ("noise_offset_random_strength", self.noise_offset_random_strength, "noise_offset",
                  self.noise_offset),
                 ("ip_noise_gamma_random_strength", self.ip_noise_gamma_random_strength, "ip_noise_gamma",
                  self.ip_noise_gamma))
        for name, given, base, base_value in needs:
            if given and not base_value:
                raise _problem(f"train.{name}", getattr(self, name), f"needs train.{base} (it scales it); set both")
        if self.scale_v_pred_loss_like_noise_pred and self.v_pred_like_loss:
            raise _problem("train.v_pred_like_loss", self.v_pred_like_loss,
                           "is for noise-prediction models and scale_v_pred_loss_like_noise_pred for v-prediction "
                           "ones; keep the one that fits the model")
        return self

    def step_math(self, bucket_counts: Mapping[Any, int], num_processes: int = 1,
                  batch_sizes: Mapping[Any, int] | None = None) -> StepMath:
        """How long this run is for a dataset's images x repeats per bucket, on ``num_processes`` processes:
        the curator's :func:`~curator.buckets.step_math` with this section's batch size (or one per count key
        in ``batch_sizes``: a dataset TOML's own), accumulation and length (``max_epochs`` wins over
        ``max_steps``; phases that all give a length set it themselves)."""
        from curator.buckets import step_math

        if self.phases and all(p.steps is not None or p.epochs is not None for p in self.phases):
            per_epoch = step_math(bucket_counts, self.batch_size, epochs=1,
                                  gradient_accumulation=self.gradient_accumulation_steps,
                                  num_processes=num_processes, batch_sizes=batch_sizes).steps_per_epoch
            only_epochs = all(p.epochs is not None for p in self.phases)
            total = sum(p.steps or (p.epochs or 0) * per_epoch for p in self.phases)
            return step_math(
                bucket_counts, self.batch_size,
                epochs=sum(p.epochs or 0 for p in self.phases) if only_epochs else None,
                max_steps=None if only_epochs else max(total, 1),
                gradient_accumulation=self.gradient_accumulation_steps, num_processes=num_processes,
                batch_sizes=batch_sizes,
            )
        return step_math(
            bucket_counts, self.batch_size, epochs=self.max_epochs,
            max_steps=None if self.max_epochs else (self.max_steps or DEFAULT_MAX_STEPS),
            gradient_accumulation=self.gradient_accumulation_steps, num_processes=num_processes,
            batch_sizes=batch_sizes,
        )

    def phase_spans(self, total_steps: int, steps_per_epoch: int) -> list[tuple[int, int, SchedulePhase]]:
        """Each phase's ``(first step, end step, phase)`` (0-based, end exclusive) over a run of
        ``total_steps``; the phase without a length takes what the others leave. Raises ``ValueError`` when
        the phases do not fit the run."""
        fixed = [p.steps or (p.epochs * steps_per_epoch if p.epochs else None) for p in self.phases]
        rest = total_steps - sum(n for n in fixed if n is not None)
        if None in fixed and rest < 1:
            raise ValueError(f"train.phases: the phases with a length take {total_steps - rest} steps, the whole "
                             f"run is {total_steps}; nothing is left for the open-ended phase")
        spans, start = [], 0
        for phase, n in zip(self.phases, fixed, strict=True):
            length = rest if n is None else n
            spans.append((start, start + length, phase))
            start += length
        if start != total_steps:
            raise ValueError(f"train.phases: the phases add up to {start} steps but the run is {total_steps}")
        return spans


class OutputSection(_Section):
    """Where the run directory goes and what is saved."""

    section = "output"

    dir: Path = Field(Path("runs"), description="parent folder of run directories (kohya: output_dir)")
    name: str = Field("lora", description="run and file name: <dir>/<name>/<name>.safetensors (kohya: output_name)")
    save_precision: Literal["fp16", "bf16", "float"] = Field("fp16", description="dtype of saved LoRA files")
    save_every_n_epochs: int | None = Field(None, ge=1, description="save <name>-000001.safetensors every N epochs")
    save_every_n_steps: int | None = Field(None, ge=1, description="save <name>-step00000100.safetensors every N steps")
    save_last_n: int | None = Field(None, ge=1, description="keep only the last N intermediate saves (unset: all)")
    save_state: bool = Field(False, description="also write a resumable state/ with every intermediate save")
    comment: str = Field("", description="free text stored as ss_training_comment in the LoRA metadata "
                         "(kohya: training_comment)")
    extract_dim: int | None = Field(
        None, ge=1, le=4096, description="full fine-tune: when the run ends, extract a LoRA of this rank from base "
        "-> tuned (<name>-lora<dim>.safetensors)",
    )
    extract_conv_dim: int | None = Field(None, ge=1, le=4096, description="rank of the 3x3 convs in that LoRA "
                                                                         "(unset: linear layers only)")
    extract_clamp_quantile: float = Field(0.99, gt=0, le=1, description="clamp the extracted factors at this "
                                                                         "quantile (1 = off; kohya's default 0.99)")
    extract_min_diff: float = Field(0.01, ge=0, description="a text encoder whose weights changed by no more than "
                                                            "this is left out of that LoRA (kohya's min_diff)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[\w][\w.\- ]*", v) or v in (".", ".."):
            raise ValueError(f"{_show(v)} is not allowed: use letters, digits, '_', '-', '.' or spaces")
        return v


class SampleSection(_Section):
    """Preview images rendered while training."""

    section = "sample"

    prompts: list[str] = Field(
        default_factory=list, description="prompts to render, each may end in kohya's options --n negative --w --h "
        "--d seed --s steps --l cfg --ss sampler (empty and no prompt_file = no samples)",
    )
    prompt_file: Path | None = Field(
        None, description="kohya sample-prompt file (.txt one prompt a line with --n --w --h --d --s --l --ss, or kohya's "
        ".toml / .json), rendered after prompts (kohya: sample_prompts)",
    )
    at_first: bool = Field(
        False, description="also render before the first step (kohya: sample_at_first)",
    )

    @field_validator("prompts", mode="before")
    @classmethod
    def _one_prompt(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v

    @field_validator("prompts")
    @classmethod
    def _kohya_options(cls, v: list[str]) -> list[str]:
        from train.prompts import PromptError, parse_prompt_line

        for index, text in enumerate(v):
            try:
                parse_prompt_line(text, f"prompt {index + 1}")
            except PromptError as exc:
                raise ValueError(f"{str(exc)!r} is not allowed: fix the prompt's options") from None
        return v
    negative_prompt: str = Field("", description="negative prompt for every sample")
    every_n_steps: int | None = Field(None, ge=1, description="render samples every N steps (kohya: sample_every_n_steps)")
    every_n_epochs: int | None = Field(None, ge=1, description="render samples every N epochs (kohya: sample_every_n_epochs)")
    steps: int = Field(20, ge=1, le=150, description="inference steps per sample")
    sampler: SamplerName = Field(
        "euler_a", description="sampler: kohya's names (euler_a, euler, ddim, dpmsolver++, dpmsolver, dpmsingle, pndm, lms, "
        "heun, dpm_2, dpm_2_a, k_*) (kohya: sample_sampler)",
    )
    cfg_scale: float = Field(7.0, ge=1, description="classifier-free guidance scale")
    width: int | None = Field(None, ge=64, description="sample width (unset: training resolution)")
    height: int | None = Field(None, ge=64, description="sample height (unset: training resolution)")
    seed: int = Field(1234, ge=0, description="seed of the first prompt (each next prompt +1)")
    enabled: bool = Field(True, description="false skips sampling (e.g. CPU test runs)")


class TrainConfig(_Section):
    """The whole training configuration."""

    model: ModelConfig
    dataset: DatasetConfig
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    train: TrainSection = Field(default_factory=TrainSection)
    output: OutputSection = Field(default_factory=OutputSection)
    sample: SampleSection = Field(default_factory=SampleSection)
    finetune: FinetuneSection = Field(default_factory=FinetuneSection)

    @model_validator(mode="after")
    def _cross_checks(self) -> TrainConfig:
        d, t = self.dataset, self.train
        for field, value, fix in finetune_problems(self):
            raise _problem(field, value, fix)
        caching = d.cache_latents or d.cache_latents_to_disk
        if caching and d.random_crop:
            raise _problem(
                "dataset.cache_latents", True,
                "cached latents cannot be randomly cropped; set dataset.random_crop = false or turn caching off",
            )
        if caching and d.color_aug:
            raise _problem(
                "dataset.cache_latents", True,
                "cached latents cannot be color-augmented (kohya refuses it too); set dataset.color_aug = false "
                "or turn caching off",
            )
        if d.caches_text_encoder_outputs:
            if self.trains_text_encoder:
                raise _problem(
                    "dataset.cache_text_encoder_outputs", True,
                    "the text encoders are being trained; set network.train_text_encoder = false "
                    "(or train.text_encoder_lr = 0) or turn this cache off",
                )
            if not d.static_captions:
                raise _problem(
                    "dataset.cache_text_encoder_outputs", True,
                    "captions change every epoch (shuffle_caption / caption dropout / tag dropout); "
                    "turn those off or turn this cache off",
                )
        if (t.fp8_base or t.fp8_base_unet) and self.network.is_lycoris:
            raise _problem("train.fp8_base", True, f"LyCORIS {self.network.type} modules read the base weights "
                           "themselves, which fp8 storage keeps in float8; use type lora, locon or dylora, or turn "
                           "fp8_base off")
        if t.optimizer == "Adafactor" and t.optimizer_args.get("relative_step"):
            raise _problem(
                "train.optimizer_args.relative_step", True,
                "kiln drives Adafactor with train.learning_rate and the LR scheduler; set relative_step = false",
            )
        return self

    # -- derived values the loop needs ---------------------------------------------------------------------
    @property
    def trains_text_encoder(self) -> bool:
        te = self.train.text_encoder_lr
        return self.network.train_text_encoder and any(te != 0 for te in (te if isinstance(te, list) else [te]))

    @property
    def unet_lr(self) -> float:
        return self.train.unet_lr if self.train.unet_lr is not None else self.train.learning_rate

    @property
    def text_encoder_lr(self) -> float:
        """The text encoder's rate (SDXL with two rates: the first encoder's)."""
        return self.text_encoder_lrs[0]

    @property
    def text_encoder_lrs(self) -> tuple[float, ...]:
        """One rate for every text encoder, or (TE1, TE2) when SDXL's encoders have their own; 0 when the
        text encoders are not trained."""
        if not self.trains_text_encoder:
            return (0.0,)
        te = self.train.text_encoder_lr
        if isinstance(te, list):
            return tuple(te)
        return (te if te is not None else self.train.learning_rate,)

    @property
    def run_dir(self) -> Path:
        return Path(self.output.dir) / self.output.name

    def summary(self, arch: str) -> dict[str, Any]:
        """The few values a run list shows (the ``config`` of the ``start`` event)."""
        return {
            "arch": arch, "model": str(self.model.path), "dataset": str(self.dataset.path),
            "network": "full fine-tune" if self.network.type == "full"
            else f"{self.network.type} dim {self.network.dim} alpha {self.network.alpha}",
            "optimizer": self.train.optimizer, "learning_rate": self.train.learning_rate, "unet_lr": self.unet_lr,
            "text_encoder_lr": self.text_encoder_lr, "resolution": list(self.dataset.resolution_wh),
            "batch_size": self.train.batch_size, "scheduler": self.train.lr_scheduler,
            "mixed_precision": self.train.mixed_precision,
        }


# ---------------------------------------------------------------------------------------------------------------
# Loading, --set overrides, presets
# ---------------------------------------------------------------------------------------------------------------


def parse_value(text: str) -> object:
    """A ``--set`` value: a TOML literal (``200``, ``true``, ``[1, 2]``, ``"x"``), else the plain string."""
    if text.strip().lower() in ("nan", "inf", "+inf", "-inf", "+nan", "-nan"):
        return text  # no setting wants NaN/inf; a name like "nan" stays a name
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to a raw config dict (in place; also returned). A kohya name
    (``network.network_dim=8``) sets kiln's key; both names of one setting in the same ``--set`` list are an
    error."""
    from train.aliases import both_names, canonical

    fields = _section_keys()
    given: dict[str, str] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError([f"--set {item!r}: expected section.key=value, e.g. train.max_steps=200"])
        *parents, leaf = key.split(".")
        if len(parents) == 1 and parents[0] in fields:
            kiln = canonical(parents[0], leaf, set(fields[parents[0]]))
            spelt = given.setdefault(f"{parents[0]}.{kiln}", leaf)
            if spelt != leaf:
                raise ConfigError([both_names(parents[0], leaf if kiln == spelt else spelt, kiln)], "--set")
            leaf = kiln
        node = raw
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError([f"--set {item!r}: {part} is a value, not a section"])
            node = child
        node[leaf] = parse_value(value.strip())
    return raw


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, merging nested tables (a new dict)."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "optimizer_args":
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_preset_raw(name: str) -> dict[str, Any]:
    path = PRESET_DIR / f"{name}.toml"
    if not path.is_file():
        close = difflib.get_close_matches(name, list_presets(), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError([f"preset {name!r} does not exist.{hint} Presets: {', '.join(list_presets())}"])
    return tomllib.loads(path.read_text(encoding="utf-8"))


def read_toml(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not a TOML text file (not UTF-8 at byte {exc.start})"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None


def load_config(
    path: Path | None = None, *, preset: str | None = None, overrides: list[str] | None = None,
    notes: list[str] | None = None,
) -> TrainConfig:
    """Build a validated TrainConfig from a preset and/or a TOML file plus ``--set`` overrides.

    A config file may name a preset itself with a top-level ``preset = "easy"``; its own keys win over the
    preset's. Relative paths in a file are resolved against the file's folder. When the file or ``--set``
    replaces the preset's optimizer, the preset's optimizer arguments and learning rates (tuned for its
    optimizer) are dropped; ``notes`` (when given) receives a sentence saying exactly what was dropped.
    """
    raw: dict[str, Any] = {}
    source = str(path) if path else f"preset {preset}" if preset else "--set"
    if path is not None:
        raw = read_toml(Path(path))
        _kiln_names(raw, source)
        _resolve_relative_paths(raw, Path(path).resolve().parent)
        preset = raw.pop("preset", None) or preset
    user_keys = set(_dotted_keys(raw)) | {item.partition("=")[0].strip() for item in overrides or []}
    preset_raw: dict[str, Any] = {}
    if preset:
        if not isinstance(preset, str):
            raise ConfigError([f"preset: {_show(preset)} is not allowed: give a preset name, one of "
                               f"{', '.join(list_presets())}"], source)
        preset_raw = load_preset_raw(preset)
        _kiln_names(preset_raw, f"preset {preset}")
        raw = deep_merge(copy.deepcopy(preset_raw), raw)
    apply_overrides(raw, list(overrides or []))
    if preset:
        note = drop_replaced_optimizer(raw, preset_raw, user_keys, preset)
        if note and notes is not None:
            notes.append(note)
    return validate_raw(raw, source)


def _dotted_keys(raw: dict[str, Any], prefix: str = "") -> list[str]:
    """Every key of a nested dict as a dotted path (tables and their keys)."""
    keys: list[str] = []
    for key, value in raw.items():
        keys.append(prefix + str(key))
        if isinstance(value, dict):
            keys += _dotted_keys(value, f"{prefix}{key}.")
    return keys


def _is_lr_key(key: str) -> bool:
    return key == "learning_rate" or key.endswith("_lr")


def drop_replaced_optimizer(raw: dict[str, Any], preset_raw: dict[str, Any], user_keys: set[str],
                            preset: str) -> str:
    """A preset is a starting point: when the user's file or ``--set`` replaced its optimizer, drop the
    preset's ``optimizer_args`` and its non-zero learning rates (0 keeps meaning "do not train this part")
    that the user did not set, and give ``learning_rate`` the new optimizer's usual value. Returns the sentence
    saying what was dropped ('' when nothing changed)."""
    from train.optim import spec_of

    theirs, train = preset_raw.get("train"), raw.get("train")
    if not isinstance(theirs, dict) or not isinstance(train, dict):
        return ""
    before, after = theirs.get("optimizer"), train.get("optimizer")
    if not isinstance(before, str) or not isinstance(after, str) or before.lower() == after.lower():
        return ""
    dropped: list[str] = []
    args = train.get("optimizer_args")
    if isinstance(args, dict) and "train.optimizer_args" not in user_keys:
        gone = {key: args.pop(key) for key in list(args)
                if f"train.optimizer_args.{key}" not in user_keys and key in (theirs.get("optimizer_args") or {})}
        if gone:
            dropped.append(f"optimizer_args = {toml_value(gone)}")
        if not args:
            train.pop("optimizer_args")
    for key, value in theirs.items():
        if (_is_lr_key(key) and f"train.{key}" not in user_keys and key in train
                and isinstance(value, int | float) and value != 0):
            dropped.append(f"{key} = {toml_value(train.pop(key))}")
    if not dropped:
        return ""
    name = next((n for n in BUILTIN_OPTIMIZERS if n.lower() == after.lower()), after)
    said = f"preset {preset!r} is tuned for {before} but train.optimizer = {after!r}: dropped the preset's " + \
        ", ".join(dropped)
    if "train.learning_rate" not in user_keys:
        train["learning_rate"] = spec_of(name).usual_lr
        said += f"; learning_rate = {train['learning_rate']:g} ({name}'s usual)"
    return said + ". Set any of them with --set train.KEY=VALUE."


def validate_raw(raw: dict[str, Any], source: str = "") -> TrainConfig:
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc), source) from None


def _kiln_names(raw: dict[str, Any], source: str) -> None:
    """One config layer (a file, a preset) in kiln's key names: kohya's names renamed (train/aliases.py)."""
    from train.aliases import to_kiln_names

    problems = to_kiln_names(raw, {k: set(v) for k, v in _section_keys().items()})
    if problems:
        raise ConfigError(problems, source)


def _resolve_relative_paths(raw: dict[str, Any], base: Path) -> None:
    """Relative paths written in a config file are relative to that file's folder (the layer is already in
    kiln's names)."""
    for section, field in PATH_FIELDS:
        table = raw.get(section)
        if not isinstance(table, dict):
            continue
        value = table.get(field)
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            table[field] = str((base / Path(value).expanduser()).resolve())


# ---------------------------------------------------------------------------------------------------------------
# Error formatting
# ---------------------------------------------------------------------------------------------------------------


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return repr(str(value))
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        return str(int(value)) if abs(value) < 1e15 else repr(value)
    if isinstance(value, dict | list | tuple):
        try:
            return json.dumps(value, default=str)
        except (TypeError, ValueError):
            return repr(value)
    return repr(value)


def _section_model(name: str) -> type[BaseModel] | None:
    """The model of the ``[name]`` section (None for a name that is no section)."""
    field = TrainConfig.model_fields.get(name)
    model = field.annotation if field is not None else None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """Valid keys of the section that ``loc`` points into (for 'did you mean')."""
    model: object = TrainConfig
    for part in loc[:-1]:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return []
        model = model.model_fields[part].annotation
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


KOHYA_DATASET_TOML_KEYS = ("general", "datasets", "subsets")


def _section_keys() -> dict[str, list[str]]:
    """Every section's keys, for suggestions across sections."""
    out: dict[str, list[str]] = {}
    for name in TrainConfig.model_fields:
        model = _section_model(name)
        if model is not None:
            out[name] = list(model.model_fields)
    return out


def _unknown_key_hint(loc: tuple[Any, ...]) -> str:
    """'did you mean' for an unknown key: a close key of the same section, else the same (or a close) key in
    another section, also for kohya's names (``network_dim`` -> network.dim, ``max_train_steps`` ->
    train.max_steps); else the section's valid keys."""
    key = str(loc[-1])
    here = _fields_at(loc)
    if len(loc) == 1:
        here = [*here, "preset"]
        if key in KOHYA_DATASET_TOML_KEYS:
            return ("this looks like a kohya dataset TOML ([general] / [[datasets]] / [[datasets.subsets]]): "
                    "pass it as dataset.path, not as the training config")
    section = str(loc[0]) if len(loc) > 1 else ""
    candidates = {key, key.replace("_train_", "_")}
    for prefix in ("network_", "train_", "output_", "dataset_", "sample_", "model_"):
        if key.startswith(prefix):
            candidates.add(key.removeprefix(prefix))
    for candidate in sorted(candidates):
        if candidate in here and candidate != key:
            return f"did you mean '{candidate}'?"
    close = difflib.get_close_matches(key, here, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    for other, keys in _section_keys().items():
        if other == section:
            continue
        for candidate in candidates:
            if candidate in keys:
                return f"did you mean '{other}.{candidate}'? (it belongs in [{other}])"
    close = difflib.get_close_matches(key, here, n=1, cutoff=0.5)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"valid keys: {', '.join(here)}"


_RULES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
}


def format_validation_error(exc: ValidationError) -> list[str]:
    """One readable line per pydantic error: ``field: value is not allowed: what would be right``."""
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not isinstance(p, str) or not p.startswith(("function-", "tagged")))
        # Union members show up as extra loc parts ('int', 'tuple[int, int]'); keep the field path only.
        loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in ("int", "float", "str", "bool"))))
        field = ".".join(str(p) for p in loc) or "config"
        kind, msg, ctx = err["type"], err["msg"], err.get("ctx") or {}
        value = err.get("input")
        if kind == "extra_forbidden":
            lines.append(f"{field}: unknown key; {_unknown_key_hint(loc)}")
        elif kind == "missing":
            section = _section_model(field)
            required = [k for k, f in section.model_fields.items() if f.is_required()] if section else []
            for key in [f"{field}.{r}" for r in required] or [field]:
                lines.append(f"{key}: required but missing; set it in the file or with --set {key}=...")
        elif kind in _RULES:
            lines.append(f"{field}: {_show(value)} is not allowed: {_RULES[kind].format(**{k: _show(v) for k, v in ctx.items()})}")
        elif kind == "literal_error":
            choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
            close = difflib.get_close_matches(str(value), choices, n=1) if isinstance(value, str) else []
            hint = f"did you mean '{close[0]}'? " if close else ""
            lines.append(f"{field}: {_show(value)} is not allowed: {hint}must be one of {ctx.get('expected', '')}")
        elif kind == "value_error":
            text = str(ctx.get("error", msg)).removeprefix("Value error, ")
            if text.startswith("@"):
                lines.append(text[1:])
            elif " is not allowed" in text:
                lines.append(f"{field}: {text}")
            else:
                lines.append(f"{field}: {_show(value)} is not allowed: {text}")
        elif kind == "path_type":
            lines.append(f"{field}: {_show(value)} is not allowed: must be a path (a quoted string)")
        elif kind in ("model_type", "dict_type") and isinstance(value, str | int | float | bool):
            lines.append(f"{field}: {_show(value)} is not allowed: must be a [{field}] table")
        else:
            lines.append(f"{field}: {_show(value)} is not allowed: {msg[0].lower() + msg[1:]}")
    # A union error is reported once per member; keep the first of identical field lines.
    seen: dict[str, str] = {}
    for line in lines:
        seen.setdefault(line.split(":", 1)[0], line)
    return list(seen.values())


# ---------------------------------------------------------------------------------------------------------------
# Commented config output (--print-config)
# ---------------------------------------------------------------------------------------------------------------

_PLACEHOLDERS = {("model", "path"): "/path/to/base-model.safetensors", ("dataset", "path"): "/path/to/dataset"}


def toml_value(value: object) -> str:
    """A value as a one-line TOML literal (inline tables for dicts)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }" if value else "{}"
    if hasattr(value, "value"):  # enums
        return toml_value(value.value)
    return json.dumps(str(value))


def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def commented_config(raw: dict[str, Any] | None = None, title: str = "") -> str:
    """A complete config file: every field with its value (preset or default) and a one-line comment."""
    raw = raw or {}
    out = [
        f"# kiln training config{f' — {title}' if title else ''}",
        "# Every key is listed with its default (or the preset's value). Unset optional keys are commented out.",
        "# Validate with `kiln train --check FILE`; train with `kiln train FILE [--set section.key=value]`.",
    ]
    for section in TrainConfig.model_fields:
        model = _section_model(section)
        assert model is not None, "every field of TrainConfig is a section"
        doc = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
        out += ["", f"[{section}]" + (f"  # {doc}" if doc else "")]
        given = raw.get(section, {}) if isinstance(raw.get(section), dict) else {}
        for name, info in model.model_fields.items():
            comment = info.description
            if comment:
                out.append(f"# {comment}")
            if name in given:
                value = given[name]
            elif (section, name) in _PLACEHOLDERS:
                value = _PLACEHOLDERS[(section, name)]
            elif info.is_required():
                out.append(f"# {name} =   (required)")
                continue
            else:
                value = info.get_default(call_default_factory=True)
            if value is None:
                out.append(f"# {name} =")
            else:
                out.append(f"{name} = {toml_value(value)}")
    return "\n".join(out) + "\n"


def dump_config(cfg: TrainConfig) -> str:
    """The resolved config as TOML (what a run directory stores as config.toml)."""
    raw = cfg.model_dump(mode="json", exclude_none=True)
    for section, key in PATH_FIELDS:
        if raw.get(section, {}).get(key):
            raw[section][key] = str(Path(raw[section][key]).expanduser().resolve())
    return commented_config(raw, title="resolved")
