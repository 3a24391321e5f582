"""The ss_* metadata against a golden set taken by hand from kohya sd-scripts' train_network.py (the keys it
writes, their value shapes, "None" where kohya writes None, ss_bucket_info's shape and bucket indices), for a
kohya folder dataset and for a dataset TOML (ss_datasets); and `kiln lora info` reading such a file."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from train.config import load_config
from train.data.dataset import build_items
from train.models.arch import Arch
from train.models.loading import ModelHash, legacy_model_hash
from train.network.save import network_metadata
from train.outputs import training_metadata

# train_network.py: the `metadata = {...}` dict every run writes (the network keys come from the network)
KOHYA_COMMON = {
    "ss_session_id", "ss_training_started_at", "ss_output_name", "ss_learning_rate", "ss_text_encoder_lr",
    "ss_unet_lr", "ss_num_train_images", "ss_num_validation_images", "ss_num_reg_images",
    "ss_num_batches_per_epoch", "ss_num_epochs", "ss_gradient_checkpointing", "ss_gradient_accumulation_steps",
    "ss_max_train_steps", "ss_lr_warmup_steps", "ss_lr_scheduler", "ss_network_module", "ss_network_dim",
    "ss_network_alpha", "ss_network_dropout", "ss_mixed_precision", "ss_full_fp16", "ss_v2",
    "ss_base_model_version", "ss_clip_skip", "ss_max_token_length", "ss_cache_latents", "ss_seed", "ss_lowram",
    "ss_noise_offset", "ss_multires_noise_iterations", "ss_multires_noise_discount", "ss_adaptive_noise_scale",
    "ss_zero_terminal_snr", "ss_training_comment", "ss_sd_scripts_commit_hash", "ss_optimizer",
    "ss_max_grad_norm", "ss_caption_dropout_rate", "ss_caption_dropout_every_n_epochs",
    "ss_caption_tag_dropout_rate", "ss_face_crop_aug_range", "ss_prior_loss_weight", "ss_min_snr_gamma",
    "ss_scale_weight_norms", "ss_ip_noise_gamma", "ss_debiased_estimation", "ss_noise_offset_random_strength",
    "ss_ip_noise_gamma_random_strength", "ss_loss_type", "ss_huber_schedule", "ss_huber_scale", "ss_huber_c",
    "ss_fp8_base", "ss_fp8_base_unet", "ss_validation_seed", "ss_validation_split", "ss_max_validation_steps",
    "ss_validate_every_n_epochs", "ss_validate_every_n_steps", "ss_resize_interpolation",
}
# the `else` branch (--train_data_dir / --reg_data_dir, no dataset config)
KOHYA_FOLDER = {
    "ss_batch_size_per_device", "ss_total_batch_size", "ss_resolution", "ss_color_aug", "ss_flip_aug",
    "ss_random_crop", "ss_shuffle_caption", "ss_enable_bucket", "ss_bucket_no_upscale", "ss_min_bucket_reso",
    "ss_max_bucket_reso", "ss_keep_tokens", "ss_dataset_dirs", "ss_reg_dataset_dirs", "ss_tag_frequency",
    "ss_bucket_info",
}
KOHYA_TOML = {"ss_datasets", "ss_tag_frequency", "ss_dataset_dirs"}  # the `use_user_config` branch
KOHYA_MODEL = {"ss_sd_model_hash", "ss_new_sd_model_hash", "ss_sd_model_name"}  # the model exists as a file
KOHYA_AT_SAVE = {"ss_training_finished_at", "ss_steps", "ss_epoch"}
KOHYA_NONE_BY_DEFAULT = {  # argparse defaults of None, written str(None)
    "ss_text_encoder_lr", "ss_unet_lr", "ss_network_dropout", "ss_clip_skip", "ss_max_token_length",
    "ss_noise_offset", "ss_multires_noise_iterations", "ss_adaptive_noise_scale", "ss_training_comment",
    "ss_face_crop_aug_range", "ss_min_snr_gamma", "ss_scale_weight_norms", "ss_ip_noise_gamma",
    "ss_validation_seed", "ss_max_validation_steps", "ss_validate_every_n_epochs", "ss_validate_every_n_steps",
    "ss_resize_interpolation",
}
BOOLS = {"ss_gradient_checkpointing", "ss_full_fp16", "ss_v2", "ss_cache_latents", "ss_lowram",
         "ss_zero_terminal_snr", "ss_debiased_estimation", "ss_noise_offset_random_strength",
         "ss_ip_noise_gamma_random_strength", "ss_fp8_base", "ss_fp8_base_unet", "ss_color_aug", "ss_flip_aug",
         "ss_random_crop", "ss_shuffle_caption", "ss_enable_bucket", "ss_bucket_no_upscale"}
# kohya's make_bucket_resolutions for resolution 128, buckets 64..256 in steps of 64, sorted
KOHYA_BUCKETS_128 = [(64, 192), (64, 256), (128, 128), (192, 64), (256, 64)]


def image(path: Path, size: tuple[int, int], caption: str | None = None, ext: str = ".txt") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 80, 40)).save(path)
    if caption is not None:
        path.with_suffix(ext).write_text(caption, encoding="utf-8")


def fake_base(tmp_path: Path) -> SimpleNamespace:
    model = tmp_path / "base-model.safetensors"
    model.write_bytes(b"\0" * (0x100000 + 0x10000))
    return SimpleNamespace(source=model, vae_source=None, arch=Arch.SD1,
                           model_hash=ModelHash(name=model.stem, path=model, legacy=legacy_model_hash(model)))


def metadata_for(cfg, data, base) -> dict[str, str]:
    steps = data.step_math(cfg.train)
    meta = training_metadata(cfg, base=base, data=data, step=3, epoch=1, steps=steps, started=time.time(),
                             mixed_precision="bf16", optimizer="torch.optim.adamw.AdamW", zero_terminal_snr=False)
    return {**meta, **network_metadata(cfg.network, "sd1")}


def test_folder_dataset_metadata_has_kohyas_keys_and_shapes(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    image(root / "2_alice woman" / "a.png", (128, 128), "Alice Woman, Smiling, RED hair")
    image(root / "2_alice woman" / "b.png", (192, 64))  # no caption: the class tokens
    for i in range(3):
        image(root / "reg" / "1_woman" / f"{i}.png", (160, 160), "woman, photo")
    cfg = load_config(overrides=["model.path=/m.safetensors", f"dataset.path={root}", "dataset.resolution=128",
                                 "dataset.min_bucket_reso=64", "dataset.max_bucket_reso=256",
                                 "train.optimizer_args={ weight_decay = 0.01, betas = [0.9, 0.99] }"])
    data = build_items(cfg.dataset, lambda m, p: None, batch_size=cfg.train.batch_size)
    meta = metadata_for(cfg, data, fake_base(tmp_path))
    assert set(meta) - {"ss_kiln"} == KOHYA_COMMON | KOHYA_FOLDER | KOHYA_MODEL | KOHYA_AT_SAVE
    assert all(isinstance(v, str) for v in meta.values())
    assert {k for k, v in meta.items() if v == "None"} == KOHYA_NONE_BY_DEFAULT
    assert all(meta[k] in ("True", "False") for k in BOOLS)
    bucket_info = json.loads(meta["ss_bucket_info"])
    assert set(bucket_info) == {"buckets", "mean_img_ar_error"}
    for index, bucket in bucket_info["buckets"].items():  # keyed "0", "1", ...: kohya's bucket index
        assert set(bucket) == {"resolution", "count"} and isinstance(bucket["count"], int)
        assert KOHYA_BUCKETS_128[int(index)] == tuple(bucket["resolution"])
    counts = {tuple(b["resolution"]): b["count"] for b in bucket_info["buckets"].values()}
    assert counts == {(128, 128): 2 + 4, (192, 64): 2}  # images x repeats, reg images balanced to 4
    assert bucket_info["mean_img_ar_error"] == pytest.approx(0.0)
    freq = json.loads(meta["ss_tag_frequency"])
    assert freq == {"2_alice woman": {"alice woman": 2, "smiling": 1, "red hair": 1},
                    "1_woman": {"woman": 3, "photo": 3}}  # by folder name, lower-cased, reg folders too (kohya)
    assert json.loads(meta["ss_dataset_dirs"]) == {"2_alice woman": {"n_repeats": 2, "img_count": 2}}
    assert json.loads(meta["ss_reg_dataset_dirs"]) == {"1_woman": {"n_repeats": 1, "img_count": 3}}
    assert (meta["ss_num_train_images"], meta["ss_num_reg_images"]) == ("4", "3")  # kohya: repeats x images
    assert meta["ss_mixed_precision"] == "bf16" and meta["ss_sd_model_name"] == "base-model.safetensors"
    assert meta["ss_resolution"] == "(128, 128)" and meta["ss_min_bucket_reso"] == "64"
    assert meta["ss_optimizer"] == "torch.optim.adamw.AdamW(weight_decay=0.01,betas=(0.9, 0.99))"
    assert meta["ss_huber_c"] == "0.1" and meta["ss_huber_schedule"] == "snr" and meta["ss_lr_warmup_steps"] == "0"
    assert meta["ss_sd_model_hash"] == legacy_model_hash(fake_base(tmp_path).source)
    assert len(meta["ss_new_sd_model_hash"]) == 64 and meta["ss_sd_scripts_commit_hash"] == "(unknown)"
    # set options are written as kohya writes them
    cfg = load_config(overrides=["model.path=/m.safetensors", f"dataset.path={root}", "dataset.resolution=128",
                                 "dataset.min_bucket_reso=64", "dataset.max_bucket_reso=256", "train.clip_skip=2",
                                 "dataset.max_token_length=225", "train.unet_lr=1e-4", "dataset.enable_bucket=false"])
    meta = metadata_for(cfg, build_items(cfg.dataset, lambda m, p: None), fake_base(tmp_path))
    assert (meta["ss_clip_skip"], meta["ss_max_token_length"], meta["ss_unet_lr"]) == ("2", "225", "0.0001")
    assert meta["ss_bucket_info"] == "null" and meta["ss_min_bucket_reso"] == "None"  # no buckets


def test_toml_dataset_metadata_is_kohyas_ss_datasets(tmp_path: Path) -> None:
    image(tmp_path / "chars" / "a.png", (128, 128), "alice, smile", ext=".caption")
    image(tmp_path / "regs" / "r.png", (128, 128), "person", ext=".caption")
    image(tmp_path / "ft" / "x.png", (128, 128))
    (tmp_path / "meta.json").write_text(json.dumps({"x": {"caption": "a photo", "tags": "Cat, tree"}}))
    (tmp_path / "ds.toml").write_text(
        "[general]\nresolution = 128\nmin_bucket_reso = 64\nmax_bucket_reso = 256\nenable_bucket = true\n"
        "[[datasets]]\nbatch_size = 2\n"
        "[[datasets.subsets]]\nimage_dir = 'chars'\nnum_repeats = 3\nclass_tokens = 'alice'\n"
        "[[datasets.subsets]]\nimage_dir = 'regs'\nis_reg = true\n"
        "[[datasets]]\nresolution = 64\nmin_bucket_reso = 64\nmax_bucket_reso = 128\n"
        "[[datasets.subsets]]\nimage_dir = 'chars'\nnum_repeats = 1\n"
        "[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'ft'\nmetadata_file = 'meta.json'\n", encoding="utf-8")
    cfg = load_config(overrides=["model.path=/m.safetensors", f"dataset.path={tmp_path / 'ds.toml'}"])
    data = build_items(cfg.dataset, lambda m, p: None, batch_size=cfg.train.batch_size)
    meta = metadata_for(cfg, data, fake_base(tmp_path))
    assert set(meta) - {"ss_kiln"} == KOHYA_COMMON | KOHYA_TOML | KOHYA_MODEL | KOHYA_AT_SAVE
    datasets = json.loads(meta["ss_datasets"])
    assert [d["is_dreambooth"] for d in datasets] == [True, True, False]
    assert set(datasets[0]) == {"is_dreambooth", "batch_size_per_device", "num_train_images", "num_reg_images",
                                "resolution", "enable_bucket", "min_bucket_reso", "max_bucket_reso",
                                "tag_frequency", "bucket_info", "resize_interpolation", "subsets"}
    assert [d["resolution"] for d in datasets] == [[128, 128], [64, 64], [128, 128]]
    assert [d["batch_size_per_device"] for d in datasets] == [2, 1, 1]
    assert (datasets[0]["num_train_images"], datasets[0]["num_reg_images"]) == (3, 1)
    db = datasets[0]["subsets"][0]
    assert set(db) == {"img_count", "num_repeats", "color_aug", "flip_aug", "random_crop", "shuffle_caption",
                       "keep_tokens", "keep_tokens_separator", "secondary_separator", "enable_wildcard",
                       "caption_prefix", "caption_suffix", "resize_interpolation", "image_dir", "class_tokens",
                       "is_reg"}
    assert (db["image_dir"], db["num_repeats"], db["class_tokens"], db["img_count"]) == ("chars", 3, "alice", 1)
    ft = datasets[2]["subsets"][0]
    assert ft["metadata_file"] == "meta.json" and "is_reg" not in ft
    assert datasets[1]["bucket_info"]["buckets"] == {"0": {"resolution": [64, 64], "count": 1}}
    # the folder used twice is one ss_dataset_dirs entry per use, reg folders left out, metadata files named
    assert json.loads(meta["ss_dataset_dirs"]) == {"chars": {"n_repeats": 3, "img_count": 1},
                                                   "chars (2)": {"n_repeats": 1, "img_count": 1},
                                                   "meta.json": {"n_repeats": 1, "img_count": 1}}
    assert json.loads(meta["ss_tag_frequency"]) == {"chars": {"alice": 1, "smile": 1}, "regs": {"person": 1},
                                                    "meta.json": {"cat": 1, "tree": 1}}  # .caption files read


def test_kiln_lora_info_reads_kohya_shaped_metadata(tmp_path: Path) -> None:
    import torch

    from train.lora.info import bucket_summary, tag_frequency
    from train.network.save import save_kohya

    image(tmp_path / "ds" / "1_x" / "a.png", (128, 128), "one, two")
    cfg = load_config(overrides=["model.path=/m.safetensors", f"dataset.path={tmp_path / 'ds'}",
                                 "dataset.resolution=128", "dataset.min_bucket_reso=64", "dataset.max_bucket_reso=256"])
    meta = metadata_for(cfg, build_items(cfg.dataset, lambda m, p: None), fake_base(tmp_path))
    key = "lora_unet_down_blocks_0_attentions_0_proj_in"
    written = save_kohya(tmp_path / "x.safetensors", {f"{key}.lora_down.weight": torch.zeros(4, 8),
                                                      f"{key}.lora_up.weight": torch.zeros(8, 4),
                                                      f"{key}.alpha": torch.tensor(4.0)}, "fp16", meta)
    summary = bucket_summary(written)
    assert summary is not None and summary["buckets"] == [[128, 128, 1]]
    assert dict(tag_frequency(written, 5)) == {"one": 1, "two": 1}
