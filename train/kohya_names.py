"""kohya sd-scripts option names and where each one lives in kiln's training config: the one table that the
config's kohya aliases and ``kiln train --from-kohya`` (train/kohya_import.py) both read.

A kohya option is an argparse name of ``train_network.py`` / ``sdxl_train_network.py`` (what a
``--config_file`` TOML holds, sections flattened). Three kinds:

* :data:`KOHYA_OPTIONS`: options with a kiln home, ``kohya name -> KohyaOption(section, field)``, optionally
  with a value conversion. A plain rename (no conversion) is also an alias kiln's config accepts in that
  section (:func:`section_aliases`). A target kiln does not have yet (an option another part of kiln adds) is
  reported as "not supported yet" by the importer until the field exists: add the row first, the field later.
* :data:`KOHYA_DEFAULTS`: kohya's argparse defaults where they differ from kiln's, so an imported config
  trains as kohya would when the kohya file leaves the option out.
* :data:`KOHYA_NOT_APPLICABLE`: options that have no meaning in kiln, each with the reason shown to the user;
  :data:`KOHYA_UNSUPPORTED`: options kiln does not offer, with what it does instead.

Options whose value needs context (network_module + network_args, optimizer_type + optimizer_args, v2 +
v_parameterization, the dataset folders, warmup, sample prompts) are translated in train/kohya_import.py; they
are listed in :data:`KOHYA_CONTEXTUAL` so that every kohya name has exactly one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class KohyaOption:
    """Where a kohya option goes: ``[section] field``; ``convert`` turns kohya's value into kiln's."""

    section: str
    field: str
    convert: Callable[[object], object] | None = None

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.field}"


def _none_if_zero(value: object) -> object:
    """kohya writes 0 for 'off' in several options that kiln leaves unset."""
    return None if value in (0, 0.0, "0", "") else value


def _sampler(value: object) -> object:
    """kohya's sampler names as kiln's (train/prompts.py has each of kohya's; its ``k_`` spellings are the same
    samplers, written without the prefix); an unknown one passes through and fails validation with the list."""
    name = str(value).lower()
    return name.removeprefix("k_") if name.startswith("k_") else name


def _compile(value: object) -> object:
    """kohya's ``torch_compile`` (a flag) as kiln's ``train.compile`` mode."""
    return "default" if value in (True, "true", "True", 1, "1") else "off"


def _max_token_length(value: object) -> object:
    return 75 if value in (None, "", 0, "0") else value


KOHYA_OPTIONS: dict[str, KohyaOption] = {
    # ---- model
    "pretrained_model_name_or_path": KohyaOption("model", "path"),
    "vae": KohyaOption("model", "vae"),
    # ---- dataset (a kohya folder or dataset TOML; see kohya_import for train_data_dir / reg_data_dir)
    "caption_extension": KohyaOption("dataset", "caption_extension"),
    "caption_extention": KohyaOption("dataset", "caption_extension"),  # kohya's old misspelling, still accepted
    "resolution": KohyaOption("dataset", "resolution"),
    "enable_bucket": KohyaOption("dataset", "enable_bucket"),
    "min_bucket_reso": KohyaOption("dataset", "min_bucket_reso"),
    "max_bucket_reso": KohyaOption("dataset", "max_bucket_reso"),
    "bucket_reso_steps": KohyaOption("dataset", "bucket_reso_steps"),
    "bucket_no_upscale": KohyaOption("dataset", "bucket_no_upscale"),
    "shuffle_caption": KohyaOption("dataset", "shuffle_caption"),
    "keep_tokens": KohyaOption("dataset", "keep_tokens"),
    "keep_tokens_separator": KohyaOption("dataset", "keep_tokens_separator"),
    "caption_prefix": KohyaOption("dataset", "caption_prefix"),
    "caption_suffix": KohyaOption("dataset", "caption_suffix"),
    "caption_dropout_rate": KohyaOption("dataset", "caption_dropout_rate"),
    "caption_dropout_every_n_epochs": KohyaOption("dataset", "caption_dropout_every_n_epochs"),
    "caption_tag_dropout_rate": KohyaOption("dataset", "caption_tag_dropout_rate"),
    "max_token_length": KohyaOption("dataset", "max_token_length", _max_token_length),
    "flip_aug": KohyaOption("dataset", "flip_aug"),
    "color_aug": KohyaOption("dataset", "color_aug"),
    "random_crop": KohyaOption("dataset", "random_crop"),
    "cache_latents": KohyaOption("dataset", "cache_latents"),
    "cache_latents_to_disk": KohyaOption("dataset", "cache_latents_to_disk"),
    "cache_text_encoder_outputs": KohyaOption("dataset", "cache_text_encoder_outputs"),
    "cache_text_encoder_outputs_to_disk": KohyaOption("dataset", "cache_text_encoder_outputs_to_disk"),
    "vae_batch_size": KohyaOption("dataset", "vae_batch_size", lambda v: _none_if_zero(v) or 1),
    "max_data_loader_n_workers": KohyaOption("dataset", "num_workers"),
    "validation_split": KohyaOption("dataset", "validation_split"),
    "validation_seed": KohyaOption("dataset", "validation_seed"),
    "masked_loss": KohyaOption("train", "masked_loss"),
    "alpha_mask": KohyaOption("dataset", "alpha_mask"),
    # ---- network (network_module / network_args are contextual)
    "network_dim": KohyaOption("network", "dim"),
    "network_alpha": KohyaOption("network", "alpha"),
    "network_dropout": KohyaOption("network", "dropout", _none_if_zero),
    "network_weights": KohyaOption("network", "init_from", _none_if_zero),
    "scale_weight_norms": KohyaOption("network", "scale_weight_norms", _none_if_zero),
    "dim_from_weights": KohyaOption("network", "dim_from_weights"),
    # ---- train
    "learning_rate": KohyaOption("train", "learning_rate"),
    "unet_lr": KohyaOption("train", "unet_lr", _none_if_zero),
    "lr_scheduler": KohyaOption("train", "lr_scheduler"),
    "lr_scheduler_num_cycles": KohyaOption("train", "lr_scheduler_num_cycles"),
    "lr_scheduler_power": KohyaOption("train", "lr_scheduler_power"),
    "lr_scheduler_min_lr_ratio": KohyaOption("train", "lr_scheduler_min_lr_ratio"),
    "lr_decay_steps": KohyaOption("train", "lr_decay_steps"),
    "max_train_steps": KohyaOption("train", "max_steps"),
    "max_train_epochs": KohyaOption("train", "max_epochs", _none_if_zero),
    "train_batch_size": KohyaOption("train", "batch_size"),
    "gradient_accumulation_steps": KohyaOption("train", "gradient_accumulation_steps"),
    "mixed_precision": KohyaOption("train", "mixed_precision"),
    "full_fp16": KohyaOption("train", "full_fp16"),
    "full_bf16": KohyaOption("train", "full_bf16"),
    "fp8_base": KohyaOption("train", "fp8_base"),
    "fp8_base_unet": KohyaOption("train", "fp8_base_unet"),
    "gradient_checkpointing": KohyaOption("train", "gradient_checkpointing"),
    "max_grad_norm": KohyaOption("train", "max_grad_norm"),
    "clip_skip": KohyaOption("train", "clip_skip", lambda v: _none_if_zero(v) or 1),
    "seed": KohyaOption("train", "seed"),
    "loss_type": KohyaOption("train", "loss_type"),
    "huber_c": KohyaOption("train", "huber_c"),
    "huber_schedule": KohyaOption("train", "huber_schedule"),
    "huber_scale": KohyaOption("train", "huber_scale"),
    "min_snr_gamma": KohyaOption("train", "min_snr_gamma", _none_if_zero),
    "noise_offset": KohyaOption("train", "noise_offset", lambda v: _none_if_zero(v) or 0.0),
    "noise_offset_random_strength": KohyaOption("train", "noise_offset_random_strength"),
    "adaptive_noise_scale": KohyaOption("train", "adaptive_noise_scale", _none_if_zero),
    "multires_noise_iterations": KohyaOption("train", "multires_noise_iterations", _none_if_zero),
    "multires_noise_discount": KohyaOption("train", "multires_noise_discount"),
    "ip_noise_gamma": KohyaOption("train", "ip_noise_gamma", _none_if_zero),
    "ip_noise_gamma_random_strength": KohyaOption("train", "ip_noise_gamma_random_strength"),
    "zero_terminal_snr": KohyaOption("train", "zero_terminal_snr"),
    "scale_v_pred_loss_like_noise_pred": KohyaOption("train", "scale_v_pred_loss_like_noise_pred"),
    "v_pred_like_loss": KohyaOption("train", "v_pred_like_loss", _none_if_zero),
    "debiased_estimation_loss": KohyaOption("train", "debiased_estimation_loss"),
    "prior_loss_weight": KohyaOption("train", "prior_loss_weight"),
    "min_timestep": KohyaOption("train", "min_timestep", lambda v: _none_if_zero(v) or 0),
    "max_timestep": KohyaOption("train", "max_timestep", lambda v: _none_if_zero(v) or 1000),
    "validate_every_n_steps": KohyaOption("train", "validate_every_n_steps", _none_if_zero),
    "validate_every_n_epochs": KohyaOption("train", "validate_every_n_epochs", _none_if_zero),
    "max_validation_steps": KohyaOption("train", "max_validation_steps", _none_if_zero),
    # ---- output
    "output_dir": KohyaOption("output", "dir"),
    "output_name": KohyaOption("output", "name"),
    "save_precision": KohyaOption("output", "save_precision"),
    "save_every_n_epochs": KohyaOption("output", "save_every_n_epochs", _none_if_zero),
    "save_every_n_steps": KohyaOption("output", "save_every_n_steps", _none_if_zero),
    "save_state": KohyaOption("output", "save_state"),
    "training_comment": KohyaOption("output", "comment", lambda v: "" if v is None else v),
    # ---- sample
    "sample_every_n_steps": KohyaOption("sample", "every_n_steps", _none_if_zero),
    "sample_every_n_epochs": KohyaOption("sample", "every_n_epochs", _none_if_zero),
    "sample_sampler": KohyaOption("sample", "sampler", _sampler),
    "sample_at_first": KohyaOption("sample", "at_first"),
    "torch_compile": KohyaOption("train", "compile", _compile),
}

# kohya's argparse defaults (train_network.py, library/train_util.py, networks/lora.py) where kiln's default
# differs: an imported config states them, so it trains as kohya would.
KOHYA_DEFAULTS: dict[str, object] = {
    "learning_rate": 2e-6,
    "network_dim": 4,  # networks/lora.py: network_dim None -> 4
    "network_alpha": 1.0,
    "mixed_precision": "no",
    "enable_bucket": False,
    "caption_extension": ".caption",
    "save_precision": "float",  # None: the network's own dtype (float32)
    "output_name": "last",  # train_util.DEFAULT_LAST_OUTPUT_NAME
    "sample_sampler": "ddim",
    "max_train_steps": 1600,
    "clip_skip": 1,
    "keep_tokens": 0,
}

KOHYA_CONTEXTUAL: dict[str, str] = {
    "network_module": "network.type (with network_args)",
    "network_args": "network.* (conv_dim, algo, dropouts, block weights, ...)",
    "network_train_unet_only": "network.train_text_encoder = false",
    "network_train_text_encoder_only": "network.train_unet = false",
    "optimizer_type": "train.optimizer",
    "optimizer_args": "train.optimizer_args",
    "use_8bit_adam": "train.optimizer = AdamW8bit",
    "use_lion_optimizer": "train.optimizer = Lion",
    "lr_warmup_steps": "train.lr_warmup",
    "text_encoder_lr": "train.text_encoder_lr",
    "v2": "model.architecture",
    "v_parameterization": "model.v_prediction",
    "train_data_dir": "dataset.path",
    "reg_data_dir": "dataset.path (a dataset TOML with is_reg subsets)",
    "dataset_config": "dataset.path",
    "save_last_n_epochs": "output.save_last_n",
    "save_last_n_steps": "output.save_last_n",
    "save_model_as": "kiln saves .safetensors",
    "sample_prompts": "sample.prompts",
    "xformers": "train.attention",
    "sdpa": "train.attention",
    "mem_eff_attn": "train.attention",
}

KOHYA_NOT_APPLICABLE: dict[str, str] = {
    "config_file": "the file being imported",
    "output_config": "kohya's own config writer",
    "logging_dir": "kiln logs to the run directory (events.jsonl, train.log); `kiln watch` shows the losses",
    "log_with": "kiln logs to the run directory (events.jsonl); no tensorboard/wandb",
    "log_prefix": "kiln logs to the run directory (events.jsonl)",
    "log_tracker_name": "kiln logs to the run directory (events.jsonl)",
    "log_tracker_config": "kiln logs to the run directory (events.jsonl)",
    "log_config": "kiln always writes the resolved config.toml into the run directory",
    "wandb_api_key": "kiln does not upload to wandb",
    "wandb_run_name": "kiln does not upload to wandb",
    "huggingface_repo_id": "kiln does not upload to the Hugging Face hub",
    "huggingface_repo_type": "kiln does not upload to the Hugging Face hub",
    "huggingface_path_in_repo": "kiln does not upload to the Hugging Face hub",
    "huggingface_token": "kiln does not upload to the Hugging Face hub",
    "huggingface_repo_visibility": "kiln does not upload to the Hugging Face hub",
    "save_state_to_huggingface": "kiln does not upload to the Hugging Face hub",
    "resume_from_huggingface": "kiln does not upload to the Hugging Face hub",
    "async_upload": "kiln does not upload to the Hugging Face hub",
    "resume": "kiln resumes its own runs: `kiln train --resume RUN_DIR` (a kohya state folder cannot be read)",
    "save_state_on_train_end": "kiln writes state/ when a run stops early; a finished run needs none",
    "save_last_n_epochs_state": "kiln keeps one state/ (the latest)",
    "save_last_n_steps_state": "kiln keeps one state/ (the latest)",
    "save_n_epoch_ratio": "use output.save_every_n_epochs",
    "lowram": "kiln stages the models itself (cached models wait on the CPU)",
    "highvram": "kiln stages the models itself (cached models wait on the CPU)",
    "no_half_vae": "kiln always runs the VAE in float32 while training",
    "persistent_data_loader_workers": "kiln starts the loader workers once per epoch",
    "ddp_timeout": "kiln uses accelerate's defaults for several processes",
    "ddp_gradient_as_bucket_view": "kiln uses accelerate's defaults for several processes",
    "ddp_static_graph": "kiln uses accelerate's defaults for several processes",
    "dynamo_backend": "with torch_compile kiln compiles the UNet with torch.compile's default backend (inductor); "
                      "train.compile picks the mode",
    "skip_cache_check": "kiln checks its caches by content hash",
    "cache_info": "kiln checks its caches by content hash",
    "debug_dataset": "use `kiln buckets` / `kiln train --check` to inspect the dataset",
    "no_metadata": "kiln always writes the ss_* metadata",
    "use_safetensors": "kiln saves .safetensors",
    "tokenizer_cache_dir": "kiln ships the CLIP tokenizer files",
    "disable_mmap_load_safetensors": "kiln loads safetensors with the library's defaults",
    "initial_epoch": "kiln resumes from its own state/",
    "initial_step": "kiln resumes from its own state/",
    "skip_until_initial_step": "kiln resumes from its own state/",
    "text_encoder_batch_size": "kiln encodes captions with the batch",
    "dataset_class": "kiln reads kohya folders and dataset TOMLs",
    "dataset_repeats": "fine-tuning (in_json) datasets: kiln reads kohya folders and dataset TOMLs",
    "in_json": "fine-tuning metadata datasets: use a dataset TOML with metadata_file subsets",
    "conditioning_data_dir": "ControlNet training is not a LoRA run",
}


# kohya options kiln does not have (and is not planning to), with what happens instead. A value equal to
# kohya's default (KOHYA_UNSUPPORTED_DEFAULTS) asks for nothing and is accepted silently.
KOHYA_UNSUPPORTED: dict[str, str] = {
    "base_weights": "merge those LoRAs into the base model first (`kiln lora merge`), then train on the result",
    "base_weights_multiplier": "merge those LoRAs into the base model first (`kiln lora merge`)",
    "caption_separator": "kiln splits tags at commas, as kohya does by default",
    "secondary_separator": "kiln splits tags at commas only",
    "enable_wildcard": "kiln reads captions as they are ({a|b} wildcards are not expanded)",
    "weighted_captions": "kiln reads captions as plain text ((word:1.2) weights are not parsed)",
    "token_warmup_min": "kiln trains on the whole caption from the first step",
    "token_warmup_step": "kiln trains on the whole caption from the first step",
    "face_crop_aug_range": "kiln has no face-crop augmentation",
    "resize_interpolation": "kiln resizes with Lanczos (Pillow)",
    "lr_scheduler_type": "kiln's schedulers are chosen by name (lr_scheduler)",
    "lr_scheduler_args": "kiln's schedulers take lr_warmup, lr_scheduler_num_cycles and lr_scheduler_power",
    "lr_scheduler_timescale": "kiln has no inverse_sqrt schedule",
    "blocks_to_swap": "an SD3/FLUX option; kiln trains SD1.x, SD2.x and SDXL",
    "cpu_offload_checkpointing": "an SD3/FLUX option; kiln trains SD1.x, SD2.x and SDXL",
    "fused_backward_pass": "an SD3/FLUX fine-tuning option",
    "logit_mean": "an SD3/FLUX timestep sampling option",
    "logit_std": "an SD3/FLUX timestep sampling option",
    "mode_scale": "an SD3/FLUX timestep sampling option",
    "weighting_scheme": "an SD3/FLUX loss weighting option",
}
KOHYA_UNSUPPORTED_DEFAULTS: dict[str, object] = {"caption_separator": ",", "resize_interpolation": "lanczos",
                                                 "weighting_scheme": "uniform", "token_warmup_step": 0,
                                                 "token_warmup_min": 1}


def section_aliases(section: str) -> dict[str, str]:
    """``kohya name -> kiln field`` for the kohya options that are a plain rename inside ``section``: the names
    kiln's config accepts there as aliases (``network_dim`` in ``[network]`` means ``dim``)."""
    return {
        name: option.field for name, option in KOHYA_OPTIONS.items()
        if option.section == section and option.convert is None and option.field != name
    }


def known(name: str) -> bool:
    """Whether ``name`` is a kohya option this module knows (mapped, contextual or not applicable)."""
    return (name in KOHYA_OPTIONS or name in KOHYA_CONTEXTUAL or name in KOHYA_NOT_APPLICABLE
            or name in KOHYA_UNSUPPORTED)
