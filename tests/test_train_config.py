"""The training config: clear errors for bad values, --set overrides, presets, the commented config."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from train.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    commented_config,
    dump_config,
    list_presets,
    load_config,
    load_preset_raw,
    parse_value,
)

ROOT = Path(__file__).resolve().parents[1]
BASE = ["model.path=/models/base.safetensors", "dataset.path=/data/set"]


def errors_for(*overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[*BASE, *overrides])
    return info.value.lines


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.learning_rate=-1", "train.learning_rate: -1 is not allowed: must be > 0"),
        ("train.batch_size=0", "train.batch_size: 0 is not allowed: must be >= 1"),
        ("train.max_steps=0", "train.max_steps: 0 is not allowed: must be >= 1"),
        ("train.lr_scheduler=cosin", "train.lr_scheduler: 'cosin' is not allowed: did you mean 'cosine'? must be one of"),
        ("train.optimizer=AdamX", "train.optimizer: 'AdamX' is not allowed: did you mean 'AdamW'?"),
        ("train.mixed_precision=fp8", "train.mixed_precision: 'fp8' is not allowed: must be one of 'auto'"),
        ("train.loss_type=l3", "train.loss_type: 'l3' is not allowed: must be one of 'l2', 'l1', 'huber' or 'smooth_l1'"),
        ("train.min_snr_gamma=0", "train.min_snr_gamma: 0 is not allowed: must be > 0"),
        ("train.noise_offset=-0.1", "train.noise_offset: -0.1 is not allowed: must be >= 0"),
        ("train.lerning_rate=1e-4", "train.lerning_rate: unknown key; did you mean 'learning_rate'?"),
        ("dataset.resolution=500", "dataset.resolution: 500 is not allowed: each side must be >= 64 and a multiple of 8"),
        ("dataset.resolution=[512, 512, 3]", "dataset.resolution: [512, 512, 3] is not allowed: use a side like 512"),
        ("network.type=lorra", "network.type: 'lorra' is not allowed: did you mean 'lora'?"),
        ("dataset.max_token_length=100", "dataset.max_token_length: 100 is not allowed: must be one of 75, 150 or 225"),
        ("dataset.caption_dropout_rate=1.5", "dataset.caption_dropout_rate: 1.5 is not allowed: must be <= 1"),
        ("dataset.shufle_caption=true", "dataset.shufle_caption: unknown key; did you mean 'shuffle_caption'?"),
        ("network.dim=0", "network.dim: 0 is not allowed: must be >= 1"),
        ("output.name=a/b", "output.name: 'a/b' is not allowed: use letters"),
        ("output.save_precision=fp8", "output.save_precision: 'fp8' is not allowed: must be one of 'fp16'"),
        ("sample.steps=0", "sample.steps: 0 is not allowed: must be >= 1"),
        ("trian.max_steps=5", "trian: unknown key; did you mean 'train'?"),
    ],
)
def test_each_bad_value_names_field_value_and_fix(override: str, expected: str) -> None:
    lines = errors_for(override)
    assert any(line.startswith(expected) for line in lines), lines


def test_several_problems_are_reported_together() -> None:
    lines = errors_for("train.learning_rate=-1", "network.dim=0", "dataset.flip_aug=maybe")
    fields = [line.split(":")[0] for line in lines]
    assert {"train.learning_rate", "network.dim", "dataset.flip_aug"} <= set(fields)


def test_cross_field_rules_name_the_field_and_the_fix() -> None:
    (line,) = errors_for("dataset.cache_latents=true", "dataset.random_crop=true")
    assert line.startswith("dataset.cache_latents: true is not allowed") and "random_crop = false" in line
    (line,) = errors_for("dataset.cache_text_encoder_outputs=true")
    assert "network.train_text_encoder = false" in line
    (line,) = errors_for("dataset.cache_text_encoder_outputs=true", "network.train_text_encoder=false",
                         "dataset.shuffle_caption=true")
    assert "shuffle_caption" in line
    # learning rates per optimizer family are the pre-flight's (tests/test_preflight.py): the config loads
    assert load_config(overrides=[*BASE, "train.optimizer=Prodigy", "train.learning_rate=1e-4"]).train.learning_rate
    (line,) = errors_for("train.min_timestep=500", "train.max_timestep=400")
    assert line.startswith("train.min_timestep: 500 is not allowed: must be < max_timestep (400)")
    (line,) = errors_for("dataset.min_bucket_reso=640")
    assert "min_bucket 640" in line and "512" in line


def test_missing_required_paths_are_named() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["dataset.path=/d"])
    assert any(line.startswith("model") and "missing" in line for line in info.value.lines)


def test_set_values_are_toml_literals_with_string_fallback() -> None:
    assert parse_value("200") == 200
    assert parse_value("1e-4") == 1e-4
    assert parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value("{ decouple = true }") == {"decouple": True}
    assert parse_value("cosine") == "cosine"
    assert parse_value("/some/path with space") == "/some/path with space"
    raw = apply_overrides({}, ["train.max_steps=200", "train.optimizer_args={ weight_decay = 0.01 }"])
    assert raw == {"train": {"max_steps": 200, "optimizer_args": {"weight_decay": 0.01}}}
    with pytest.raises(ConfigError, match="expected section.key=value"):
        apply_overrides({}, ["train.max_steps"])
    cfg = load_config(overrides=[*BASE, "train.max_steps=200", "train.optimizer=adamw"])
    assert cfg.train.max_steps == 200 and cfg.train.optimizer == "AdamW"


def test_config_file_relative_paths_and_preset_key(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    config = tmp_path / "my.toml"
    config.write_text('preset = "character"\n[model]\npath = "base.safetensors"\n[dataset]\npath = "data"\n'
                      "[train]\nmax_steps = 42\n", encoding="utf-8")
    cfg = load_config(config)
    assert cfg.dataset.path == tmp_path / "data"
    assert cfg.model.path == tmp_path / "base.safetensors"
    assert cfg.train.max_steps == 42  # the file wins over the preset
    assert cfg.network.dim == 32  # from the preset


def test_broken_toml_is_reported_with_position(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nmax_steps = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_validates_and_prints_a_complete_config(name: str, tmp_path: Path) -> None:
    cfg = load_config(preset=name, overrides=BASE)
    assert isinstance(cfg, TrainConfig)
    text = commented_config(load_preset_raw(name), title=name)
    raw = tomllib.loads(text)  # the printed config is valid TOML ...
    again = TrainConfig.model_validate(raw)  # ... and a valid config on its own (placeholder paths)
    assert again.train == cfg.train and again.network == cfg.network and again.dataset.resolution == cfg.dataset.resolution
    lines = text.splitlines()
    for section, model in TrainConfig.model_fields.items():
        for key in model.annotation.model_fields:
            at = [i for i, line in enumerate(lines) if line.startswith((f"{key} =", f"# {key} ="))]
            assert at, f"{section}.{key} missing from printed config"
            prev = lines[at[0] - 1]
            unset = {f"# {k} =" for k in model.annotation.model_fields}
            assert prev.startswith("# ") and prev not in unset, f"{section}.{key} has no comment"


def test_shipped_presets_follow_the_brief() -> None:
    easy = load_config(preset="easy", overrides=BASE)
    assert easy.train.optimizer in ("Prodigy", "DAdaptAdam") and easy.train.learning_rate == 1.0
    assert easy.unet_lr == 1.0 and easy.text_encoder_lr == 1.0 and easy.train.lr_scheduler == "constant"
    assert easy.network.dim in (32, 64) and easy.network.alpha == 1
    assert easy.dataset.resolution == 512 and (easy.dataset.min_bucket_reso, easy.dataset.max_bucket_reso) == (320, 1024)
    assert easy.train.min_snr_gamma == 5 and easy.dataset.max_token_length == 225
    assert easy.train.optimizer_args["decouple"] is True and easy.train.optimizer_args["betas"] == [0.9, 0.999]
    low = load_config(preset="sdxl-lowmem", overrides=BASE)
    assert not low.trains_text_encoder and low.dataset.cache_text_encoder_outputs and low.train.gradient_checkpointing
    assert low.train.optimizer in ("Adafactor", "AdamW8bit")
    assert {"character", "character-few", "style", "concept"} <= set(list_presets())


def test_cli_print_config_and_check_errors_without_heavy_imports(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "train.cli", "--print-config", "easy"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "[train]" in out.stdout and 'optimizer = "Prodigy"' in out.stdout
    bad = subprocess.run([sys.executable, "-c", (
        "import sys; from train.cli import main; rc = main(['--check', '--set', 'model.path=/m', '--set', "
        "'dataset.path=/d', '--set', 'train.learning_rate=-1']); "
        "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; print(heavy); sys.exit(rc)")],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert "train.learning_rate: -1 is not allowed: must be > 0" in bad.stderr
    assert bad.stdout.strip() == "[]"
    unknown = subprocess.run([sys.executable, "-m", "train.cli", "--preset", "esay"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 1 and "did you mean 'easy'" in unknown.stderr.lower()


def test_check_reports_an_unusable_optimizer_and_every_other_problem(capsys) -> None:
    import torch

    from train.cli import main

    rc = main(["--check", "--set", "model.path=/m", "--set", "dataset.path=/nonexistent", "--set",
               "train.optimizer=nosuchpkg.Opt"])
    assert rc == 1 and "pip install nosuchpkg" in capsys.readouterr().err
    if not torch.cuda.is_available():
        rc = main(["--check", "--set", "model.path=/m", "--set", "dataset.path=/d", "--set",
                   "train.optimizer=AdamW8bit"])
        assert rc == 1 and 'CUDA GPUs only' in capsys.readouterr().err
    rc = main(["--check", "--set", "model.path=/m", "--set", "dataset.path=/nonexistent"])
    err = capsys.readouterr().err  # every problem at once (the pre-flight, tests/test_preflight.py)
    assert rc == 1 and "dataset.path: /nonexistent does not exist" in err and "model.path: /m does not exist" in err


def test_kohya_option_names_are_accepted_as_aliases(tmp_path: Path) -> None:
    cfg = load_config(overrides=[
        "model.pretrained_model_name_or_path=/models/base.safetensors",
        "dataset.path=/data/set", "dataset.max_data_loader_n_workers=2", "dataset.caption_extention=.cap",
        "train.max_train_steps=7", "train.train_batch_size=2", "network.network_dim=8", "network.network_alpha=4",
        "output.output_name=x", "output.output_dir=/out", "sample.sample_at_first=true",
    ])
    assert (cfg.model.path, cfg.dataset.path, cfg.dataset.num_workers, cfg.dataset.caption_extension) == \
        (Path("/models/base.safetensors"), Path("/data/set"), 2, ".cap")
    assert (cfg.train.max_steps, cfg.train.batch_size) == (7, 2)
    assert (cfg.network.dim, cfg.network.alpha, cfg.output.name, cfg.output.dir) == (8, 4, "x", Path("/out"))
    assert cfg.sample.at_first is True
    # a file's relative paths resolve under kohya's names too, and the resolved config uses kiln's names
    (tmp_path / "k.toml").write_text('[model]\npretrained_model_name_or_path = "m.safetensors"\n'
                                     '[dataset]\npath = "data"\n[network]\nnetwork_dim = 4\n', encoding="utf-8")
    cfg = load_config(tmp_path / "k.toml")
    assert cfg.model.path == tmp_path / "m.safetensors" and cfg.dataset.path == tmp_path / "data"
    assert "pretrained_model_name_or_path =" not in dump_config(cfg) and cfg.network.dim == 4
    # a kohya name in the user's layer overrides the preset's kiln name (no "both names" error across layers)
    cfg = load_config(preset="easy", overrides=["model.path=/m", "dataset.path=/d", "network.network_dim=4"])
    assert cfg.network.dim == 4


def test_every_plain_kohya_rename_of_the_name_table_is_accepted() -> None:
    """Each row of train/kohya_names.py that renames a key of this config works, in the section model itself
    (direct construction) and through --set."""
    from train.kohya_names import section_aliases

    base = load_config(overrides=["model.path=/m.safetensors", "dataset.path=/d"])
    seen = 0
    for section in TrainConfig.model_fields:
        sec = getattr(base, section)
        for alias, key in section_aliases(section).items():
            if key not in type(sec).model_fields:
                continue  # a row for a field another branch adds
            seen += 1
            value = getattr(sec, key)
            rebuilt = type(sec).model_validate({**sec.model_dump(exclude={key}), alias: value})
            assert getattr(rebuilt, key) == value, f"{section}.{alias}"
            with pytest.raises(ValueError, match=f"{key} and {alias} are one setting"):
                type(sec).model_validate({**sec.model_dump(), alias: value})
    assert seen >= 10


def test_a_setting_given_under_both_names_is_an_error() -> None:
    (line,) = errors_for("train.max_steps=5", "train.max_train_steps=6")
    assert line.startswith("train.max_train_steps: max_steps and max_train_steps are one setting") \
        and "keep one" in line
