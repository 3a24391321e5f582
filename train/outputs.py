"""Saved LoRA files: kohya's names, keeping the last K intermediate saves, and the ``ss_*`` training metadata."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from curator.buckets import StepMath
    from train.config import TrainConfig
    from train.data.dataset import TrainData, TrainItem
    from train.data.subsets import DatasetSpec, SubsetSpec
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


def training_metadata(cfg: TrainConfig, *, base: BaseModel, data: TrainData, step: int, epoch: int,
                      steps: StepMath, started: float, mixed_precision: str, optimizer: str,
                      zero_terminal_snr: bool) -> dict[str, str]:
    """kohya's ``ss_*`` training keys as ``train_network.py`` writes them (the network helper adds ss_network_*,
    ss_v2, ss_base_model_version, ss_scale_weight_norms and modelspec.*). ``None`` is written as kohya writes
    it ("None"); a folder dataset gets kohya's ``--train_data_dir`` keys (ss_resolution, ss_bucket_info, ...), a
    dataset TOML kohya's ``ss_datasets``. ``optimizer``: the optimizer's module-qualified class name."""
    d, t = cfg.dataset, cfg.train
    items, run = data.items, data.run
    train_images = sum(s.subset.repeats * len(data.subset_images.get(s.index, []))
                       for s in run.subsets if not s.subset.is_reg)
    reg_images = sum(s.subset.repeats * len(data.subset_images.get(s.index, []))
                     for s in run.subsets if s.subset.is_reg)
    processes = steps.num_processes
    meta: dict[str, object] = {
        "ss_session_id": int(started),
        "ss_training_started_at": started,
        "ss_output_name": cfg.output.name,
        "ss_learning_rate": t.learning_rate,
        "ss_text_encoder_lr": t.text_encoder_lr,
        "ss_unet_lr": t.unet_lr,
        "ss_num_train_images": train_images,
        "ss_num_validation_images": 0,
        "ss_num_reg_images": reg_images,
        "ss_num_batches_per_epoch": steps.batches_per_epoch,
        "ss_num_epochs": steps.epochs,
        "ss_gradient_checkpointing": t.gradient_checkpointing,
        "ss_gradient_accumulation_steps": t.gradient_accumulation_steps,
        "ss_max_train_steps": steps.total_steps,
        "ss_lr_warmup_steps": _whole(t.lr_warmup),
        "ss_lr_scheduler": t.lr_scheduler,
        "ss_mixed_precision": mixed_precision,
        "ss_full_fp16": t.full_fp16,
        "ss_clip_skip": t.clip_skip if t.clip_skip > 1 or "clip_skip" in t.model_fields_set else None,
        "ss_max_token_length": d.max_token_length if d.max_token_length != 75 else None,
        "ss_cache_latents": d.cache_latents or d.cache_latents_to_disk,
        "ss_seed": t.seed,
        "ss_lowram": False,
        "ss_noise_offset": t.noise_offset or None,
        "ss_multires_noise_iterations": t.multires_noise_iterations,
        "ss_multires_noise_discount": t.multires_noise_discount,
        "ss_adaptive_noise_scale": t.adaptive_noise_scale,
        "ss_zero_terminal_snr": zero_terminal_snr,
        "ss_training_comment": cfg.output.comment or None,
        "ss_sd_scripts_commit_hash": "(unknown)",  # kohya's value when it cannot tell; kiln is not sd-scripts
        "ss_optimizer": optimizer + (f"({_optimizer_args(t.optimizer_args)})" if t.optimizer_args else ""),
        "ss_max_grad_norm": t.max_grad_norm,
        "ss_caption_dropout_rate": d.caption_dropout_rate,
        "ss_caption_dropout_every_n_epochs": d.caption_dropout_every_n_epochs,
        "ss_caption_tag_dropout_rate": d.caption_tag_dropout_rate,
        "ss_face_crop_aug_range": None,
        "ss_prior_loss_weight": t.prior_loss_weight,
        "ss_min_snr_gamma": t.min_snr_gamma,
        "ss_ip_noise_gamma": t.ip_noise_gamma,
        "ss_debiased_estimation": t.debiased_estimation_loss,
        "ss_noise_offset_random_strength": t.noise_offset_random_strength,
        "ss_ip_noise_gamma_random_strength": t.ip_noise_gamma_random_strength,
        "ss_loss_type": t.loss_type,
        "ss_huber_schedule": t.huber_schedule,
        "ss_huber_scale": t.huber_scale,
        "ss_huber_c": t.huber_c,
        "ss_fp8_base": t.fp8_base,
        "ss_fp8_base_unet": t.fp8_base_unet,
        "ss_validation_seed": None,
        "ss_validation_split": 0.0,
        "ss_max_validation_steps": None,
        "ss_validate_every_n_epochs": None,
        "ss_validate_every_n_steps": None,
        "ss_resize_interpolation": None,
    }
    if data.dataset.layout.source == "toml":
        datasets, tag_frequency, dataset_dirs = _toml_datasets(data)
        meta["ss_datasets"] = json.dumps(datasets)
        meta["ss_tag_frequency"] = json.dumps(tag_frequency)
        meta["ss_dataset_dirs"] = json.dumps(dataset_dirs)
    else:
        spec = run.datasets[0]
        dc = spec.config
        res = dc.resolution_wh
        dirs: dict[str, dict[str, int]] = {}
        reg_dirs: dict[str, dict[str, int]] = {}
        for sub in run.subsets:
            (reg_dirs if sub.subset.is_reg else dirs)[sub.name] = {
                "n_repeats": sub.subset.repeats, "img_count": len(data.subset_images.get(sub.index, []))}
        meta.update({
            "ss_batch_size_per_device": t.batch_size,
            "ss_total_batch_size": t.batch_size * processes * t.gradient_accumulation_steps,
            "ss_resolution": f"({res[0]}, {res[1]})",
            "ss_color_aug": dc.color_aug,
            "ss_flip_aug": dc.flip_aug,
            "ss_random_crop": dc.random_crop,
            "ss_shuffle_caption": dc.shuffle_caption,
            "ss_enable_bucket": dc.enable_bucket,
            "ss_bucket_no_upscale": dc.bucket_no_upscale and dc.enable_bucket,
            "ss_min_bucket_reso": dc.min_bucket_reso if dc.enable_bucket else None,
            "ss_max_bucket_reso": dc.max_bucket_reso if dc.enable_bucket else None,
            "ss_keep_tokens": d.keep_tokens or 0,
            "ss_dataset_dirs": json.dumps(dirs),
            "ss_reg_dataset_dirs": json.dumps(reg_dirs),
            "ss_tag_frequency": json.dumps(tag_frequency_of(data, [s for s in run.subsets])),
            "ss_bucket_info": json.dumps(bucket_info(items, spec)),
        })
    source = base.source
    if source.is_file():
        try:
            meta["ss_sd_model_hash"] = base.model_hash.legacy
            meta["ss_new_sd_model_hash"] = base.model_hash.sha256()  # reads the whole checkpoint once (cached)
        except (OSError, ValueError):
            pass
    meta["ss_sd_model_name"] = source.name  # kohya: the file's (or folder's) base name, extension included
    if base.vae_source is not None:
        vae = Path(base.vae_source)
        if vae.is_file():
            from train.models.loading import legacy_model_hash, sha256_of

            meta["ss_vae_hash"] = legacy_model_hash(vae)
            meta["ss_new_vae_hash"] = sha256_of(vae)
        meta["ss_vae_name"] = vae.name
    meta["ss_training_finished_at"] = time.time()
    meta["ss_steps"] = step
    meta["ss_epoch"] = epoch
    meta["ss_kiln"] = kiln_version()
    return {k: str(v) for k, v in meta.items()}


def _whole(value: float) -> float | int:
    """kohya writes ints as ints: 10 steps of warmup is "10", a ratio stays "0.1"."""
    return int(value) if float(value).is_integer() else value


def _optimizer_args(args: dict[str, object]) -> str:
    """kohya's ``k=v`` list (values as Python writes them; kohya parses lists as tuples)."""
    return ",".join(f"{k}={tuple(v) if isinstance(v, list) else v}" for k, v in args.items())


def kiln_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lorakiln")
    except PackageNotFoundError:  # running from a checkout
        return "dev"


def tag_frequency_of(data: TrainData, subsets: list[SubsetSpec]) -> dict[str, dict[str, int]]:
    """kohya's ``set_tag_frequency``: per subset folder (base name; a metadata file's name), each lower-cased
    tag's count over the subset's images (once per image, repeats aside; reg folders too, as kohya counts
    them). A metadata_file subset counts its ``tags`` only."""
    freq: dict[str, dict[str, int]] = {}
    for sub in subsets:
        folder = freq.setdefault(sub.name, {})
        for text in data.subset_images.get(sub.index, []):
            for tag in text.split(","):
                tag = tag.strip().lower()
                if tag:
                    folder[tag] = folder.get(tag, 0) + 1
    return freq


def bucket_info(items: list[TrainItem], spec: DatasetSpec) -> dict[str, object] | None:
    """kohya's ``bucket_info`` of one dataset: ``{"buckets": {"<i>": {"resolution": [w, h], "count": n}},
    "mean_img_ar_error": e}`` where ``i`` is the bucket's place in kohya's sorted bucket list (the buckets the
    images use with bucket_no_upscale), ``n`` its images x repeats and ``e`` the mean |aspect error| over the
    images; None without buckets (JSON null)."""
    if not spec.config.enable_bucket:
        return None
    from curator.buckets import bucket_resolutions

    mine = [i for i in items if i.dataset == spec.index]
    counts: dict[tuple[int, int], int] = {}
    for item in mine:
        counts[item.bucket] = counts.get(item.bucket, 0) + item.repeats
    resos = sorted(counts) if spec.config.bucket_no_upscale else bucket_resolutions(spec.buckets)
    index = {reso: i for i, reso in enumerate(resos)}
    buckets = {str(index[r]): {"resolution": [r[0], r[1]], "count": counts[r]}
               for r in sorted(counts, key=lambda r: index.get(r, len(index))) if r in index}
    errors = [abs(i.assignment.ar_error) for i in mine]
    return {"buckets": buckets, "mean_img_ar_error": sum(errors) / len(errors) if errors else 0}


def _toml_datasets(data: TrainData) -> tuple[list[dict[str, object]], dict[str, dict[str, int]],
                                               dict[str, dict[str, int]]]:
    """kohya's ``ss_datasets`` (one entry per [[datasets]] block), the merged tag frequency (a folder used by
    several datasets counted once) and ``ss_dataset_dirs`` (training subsets and metadata files, names made
    unique with " (2)"), as ``train_network.py`` builds them for a dataset config."""
    datasets: list[dict[str, object]] = []
    tag_frequency: dict[str, dict[str, int]] = {}
    dataset_dirs: dict[str, dict[str, int]] = {}
    for spec in data.run.datasets:
        subs = [s for s in data.run.subsets if s.dataset == spec.index]
        dreambooth = all(s.subset.metadata_file is None for s in subs)
        dc = spec.config
        freq = tag_frequency_of(data, subs)
        entry: dict[str, object] = {
            "is_dreambooth": dreambooth,
            "batch_size_per_device": spec.batch_size,
            "num_train_images": sum(s.subset.repeats * len(data.subset_images.get(s.index, []))
                                    for s in subs if not s.subset.is_reg),
            "num_reg_images": sum(s.subset.repeats * len(data.subset_images.get(s.index, []))
                                  for s in subs if s.subset.is_reg),
            "resolution": list(dc.resolution_wh),
            "enable_bucket": dc.enable_bucket,
            "min_bucket_reso": dc.min_bucket_reso if dc.enable_bucket else None,
            "max_bucket_reso": dc.max_bucket_reso if dc.enable_bucket else None,
            "tag_frequency": freq,
            "bucket_info": bucket_info(data.items, spec),
            "resize_interpolation": None,
        }
        subsets_meta: list[dict[str, object]] = []
        for sub in subs:
            c = sub.config
            count = len(data.subset_images.get(sub.index, []))
            one: dict[str, object] = {
                "img_count": count, "num_repeats": sub.subset.repeats, "color_aug": c.color_aug,
                "flip_aug": c.flip_aug, "random_crop": c.random_crop, "shuffle_caption": c.shuffle_caption,
                "keep_tokens": sub.keep_tokens, "keep_tokens_separator": c.keep_tokens_separator,
                "secondary_separator": None, "enable_wildcard": False, "caption_prefix": c.caption_prefix or None,
                "caption_suffix": c.caption_suffix or None, "resize_interpolation": None,
            }
            if sub.subset.metadata_file is None or "image_dir" in sub.subset.options:
                one["image_dir"] = sub.subset.image_dir.name
            name: str | None = sub.subset.image_dir.name
            if dreambooth:
                one["class_tokens"] = sub.subset.class_tokens or None
                one["is_reg"] = sub.subset.is_reg
                if sub.subset.is_reg:
                    name = None  # kohya does not list reg folders in ss_dataset_dirs
            else:
                metadata = sub.subset.metadata_file
                one["metadata_file"] = metadata.name if metadata else None
                name = metadata.name if metadata else name
            subsets_meta.append(one)
            if name is not None:
                unique, n = name, 2
                while unique in dataset_dirs:
                    unique, n = f"{name} ({n})", n + 1
                dataset_dirs[unique] = {"n_repeats": sub.subset.repeats, "img_count": count}
        entry["subsets"] = subsets_meta
        datasets.append(entry)
        for folder, counts in freq.items():
            tag_frequency.setdefault(folder, counts)
    return datasets, tag_frequency, dataset_dirs
