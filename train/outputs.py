"""Saved LoRA files: kohya's names, keeping the last K intermediate saves, and the ``ss_*`` training metadata."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from curator.buckets import StepMath
    from train.config import TrainConfig
    from train.data.dataset import TrainItem
    from train.models.loading import BaseModel


def epoch_file(name: str, epoch: int) -> str:
    return f"{name}-{epoch:06d}.safetensors"


def step_file(name: str, step: int) -> str:
    return f"{name}-step{step:08d}.safetensors"


def final_file(name: str) -> str:
    return f"{name}.safetensors"


def prune(saves: list[str], keep: int | None) -> list[str]:
    """Delete all but the last ``keep`` of ``saves`` (paths, oldest first); returns what is kept."""
    if not keep or len(saves) <= keep:
        return saves
    for old in saves[:-keep]:
        try:
            Path(old).unlink()
        except FileNotFoundError:
            pass
    return saves[-keep:]


def training_metadata(cfg: TrainConfig, *, base: BaseModel, items: list[TrainItem], step: int, epoch: int,
                      steps: StepMath, started: float) -> dict[str, str]:
    """kohya's ``ss_*`` training keys (the network helper adds ss_network_* and modelspec.*)."""
    from train.data.dataset import bucket_counts

    d, t = cfg.dataset, cfg.train
    buckets = {f"{w}x{h}": n for (w, h), n in bucket_counts(items).items()}
    tag_freq: dict[str, dict[str, int]] = {}
    for item in items:
        folder = tag_freq.setdefault(item.path.rsplit("/", 1)[0] if "/" in item.path else ".", {})
        for tag in (x.strip() for x in item.caption.split(",")):
            if tag:
                folder[tag] = folder.get(tag, 0) + 1
    res = d.resolution_wh
    try:
        model_sha = base.model_hash.sha256()  # reads the whole checkpoint once (cached)
    except (OSError, ValueError):
        model_sha = None
    meta: dict[str, Any] = {
        "ss_session_id": str(int(started)),
        "ss_training_started_at": started,
        "ss_training_finished_at": time.time(),
        "ss_output_name": cfg.output.name,
        "ss_learning_rate": t.learning_rate,
        "ss_unet_lr": cfg.unet_lr,
        "ss_text_encoder_lr": cfg.text_encoder_lr,
        "ss_num_train_images": sum(i.repeats for i in items if not i.is_reg),
        "ss_num_reg_images": sum(i.repeats for i in items if i.is_reg),
        "ss_num_batches_per_epoch": steps.batches_per_epoch,
        "ss_num_epochs": steps.epochs,
        "ss_epoch": epoch,
        "ss_steps": step,
        "ss_max_train_steps": steps.total_steps,
        "ss_batch_size_per_device": t.batch_size,
        "ss_total_batch_size": steps.global_batch * t.gradient_accumulation_steps,
        "ss_gradient_accumulation_steps": t.gradient_accumulation_steps,
        "ss_gradient_checkpointing": t.gradient_checkpointing,
        "ss_lr_warmup_steps": t.lr_warmup,
        "ss_lr_scheduler": t.lr_scheduler,
        "ss_optimizer": t.optimizer + (f"({','.join(f'{k}={v}' for k, v in t.optimizer_args.items())})"
                                       if t.optimizer_args else ""),
        "ss_mixed_precision": t.mixed_precision,
        "ss_full_fp16": False,
        "ss_seed": t.seed,
        "ss_max_grad_norm": t.max_grad_norm,
        "ss_min_snr_gamma": t.min_snr_gamma,
        "ss_noise_offset": t.noise_offset or None,
        "ss_loss_type": t.loss_type,
        "ss_huber_c": t.huber_c if t.loss_type == "huber" else None,
        "ss_prior_loss_weight": t.prior_loss_weight,
        "ss_clip_skip": t.clip_skip if t.clip_skip > 1 else None,
        "ss_max_token_length": d.max_token_length,
        "ss_resolution": f"({res[0]}, {res[1]})",
        "ss_enable_bucket": d.enable_bucket,
        "ss_min_bucket_reso": d.min_bucket_reso,
        "ss_max_bucket_reso": d.max_bucket_reso,
        "ss_bucket_no_upscale": d.bucket_no_upscale,
        "ss_bucket_info": json.dumps({"buckets": buckets}),
        "ss_cache_latents": d.cache_latents or d.cache_latents_to_disk,
        "ss_flip_aug": d.flip_aug,
        "ss_random_crop": d.random_crop,
        "ss_shuffle_caption": d.shuffle_caption,
        "ss_keep_tokens": d.keep_tokens if d.keep_tokens is not None else max((i.keep_tokens for i in items), default=0),
        "ss_keep_tokens_separator": d.keep_tokens_separator or None,
        "ss_caption_dropout_rate": d.caption_dropout_rate,
        "ss_caption_dropout_every_n_epochs": d.caption_dropout_every_n_epochs,
        "ss_caption_tag_dropout_rate": d.caption_tag_dropout_rate,
        "ss_tag_frequency": json.dumps(tag_freq),
        "ss_dataset_dirs": json.dumps(_dataset_dirs(items)),
        "ss_sd_model_name": base.model_hash.name,
        "ss_new_sd_model_hash": model_sha,
        "ss_sd_model_hash": base.model_hash.legacy,
        "ss_vae_name": Path(base.vae_source).name if base.vae_source else None,
        "ss_v2": base.arch.value == "sd2",
        "ss_training_comment": cfg.output.comment or None,
        "ss_sd_scripts_commit_hash": None,
        "ss_kiln": "1",
    }
    return {k: str(v) for k, v in meta.items() if v is not None}


def _dataset_dirs(items: list[TrainItem]) -> dict[str, dict[str, int]]:
    dirs: dict[str, dict[str, int]] = {}
    for item in items:
        folder = item.path.rsplit("/", 1)[0] if "/" in item.path else "."
        entry = dirs.setdefault(folder, {"n_repeats": item.repeats, "img_count": 0})
        entry["img_count"] += 1
    return dirs
