"""The pre-flight checks of kohya's options (train/preflight/): each fails with its message on a config that
would fail (or train something else than asked) once the model is loaded, and says nothing otherwise."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from train.preflight import DeviceFacts, run_preflight

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_preflight import cfg_for, messages, models, world  # noqa: F401 (fixtures)

CPU = DeviceFacts(cuda=False)
TURING = DeviceFacts(cuda=True, name="Tesla T4", capability=(7, 5), count=1)
AMPERE = DeviceFacts(cuda=True, name="A100", capability=(8, 0), count=1)


def found(report: object, name: str) -> list[str]:
    return [line for f, line in zip(report, messages(report), strict=True)  # type: ignore[call-overload]
            if f.check == name]


def test_full_fp16_and_bf16_need_their_mixed_precision_on_this_device(world, tmp_path) -> None:
    cfg = cfg_for(world, tmp_path, "train.full_bf16=true", "train.mixed_precision=auto")
    assert not found(run_preflight(cfg, device=AMPERE), "full fp16 / bf16 training")  # auto = bf16 there
    (line,) = found(run_preflight(cfg, device=TURING), "full fp16 / bf16 training")
    assert line.startswith("train.full_bf16: it needs bf16, and Tesla T4 only emulates it")
    (line,) = found(run_preflight(cfg, device=CPU), "full fp16 / bf16 training")
    assert "needs a CUDA GPU" in line and "--set train.full_bf16=false" in line
    cfg = cfg_for(world, tmp_path, "train.full_fp16=true", "train.mixed_precision=auto")
    (line,) = found(run_preflight(cfg, device=AMPERE), "full fp16 / bf16 training")  # auto picks bf16 there
    assert "this run's is 'bf16'" in line and "--set train.mixed_precision=fp16" in line
    assert not found(run_preflight(cfg, device=TURING), "full fp16 / bf16 training")


def test_fp8_base_without_mixed_precision_is_a_warning(world, tmp_path) -> None:
    report = run_preflight(cfg_for(world, tmp_path, "train.fp8_base=true"), device=CPU)
    (finding,) = [f for f in report if f.check == "fp8 base weights"]
    assert finding.severity == "warning" and "up-cast to fp32" in finding.problem
    cfg = cfg_for(world, tmp_path, "train.fp8_base=true", "train.mixed_precision=bf16")
    assert not [f for f in run_preflight(cfg, device=AMPERE) if f.check == "fp8 base weights"]


def test_v_prediction_loss_options_must_fit_the_model(world, tmp_path) -> None:
    # the tiny SD1 model predicts noise
    (line,) = found(run_preflight(cfg_for(world, tmp_path, "train.scale_v_pred_loss_like_noise_pred=true")),
                    "loss options for the prediction type")
    assert line.startswith("train.scale_v_pred_loss_like_noise_pred: the model predicts noise, not v")
    assert not found(run_preflight(cfg_for(world, tmp_path, "train.v_pred_like_loss=0.1")),
                     "loss options for the prediction type")
    cfg = cfg_for(world, tmp_path, "train.v_pred_like_loss=0.1", "model.v_prediction=true")
    (line,) = found(run_preflight(cfg), "loss options for the prediction type")
    assert line.startswith("train.v_pred_like_loss: the model already predicts v")


def test_zero_terminal_snr_on_a_noise_model_is_a_warning(world, tmp_path) -> None:
    report = run_preflight(cfg_for(world, tmp_path, "train.zero_terminal_snr=true"))
    (finding,) = [f for f in report if f.check == "zero terminal SNR"]
    assert finding.severity == "warning" and "v-prediction" in finding.problem
    cfg = cfg_for(world, tmp_path, "train.zero_terminal_snr=true", "model.v_prediction=true")
    assert not [f for f in run_preflight(cfg) if f.check == "zero terminal SNR"]


def test_block_dims_need_one_value_per_block_of_the_architecture(world, tmp_path) -> None:
    sdxl_layout = "[" + ", ".join(["4"] * 23) + "]"  # the config takes 23 or 25; the model says which
    cfg = cfg_for(world, tmp_path, f"network.block_dims={sdxl_layout}")
    (line,) = found(run_preflight(cfg), "block dims for the architecture")
    assert line.startswith("network.block_dims: 23 values, and sd1 has 25 blocks") and "give 25 values" in line
    ok = "[" + ", ".join(["4"] * 25) + "]"
    assert not found(run_preflight(cfg_for(world, tmp_path, f"network.block_dims={ok}")),
                     "block dims for the architecture")


def test_text_encoder_rates_per_encoder_fit_the_model(world, tmp_path) -> None:
    cfg = cfg_for(world, tmp_path, "train.text_encoder_lr=[1e-5, 2e-5]")
    (line,) = found(run_preflight(cfg), "text encoder learning rates")
    assert "gives 2 rates and sd1 has 1 text encoder" in line and "--set train.text_encoder_lr=1e-05" in line
    same = cfg_for(world, tmp_path, "train.text_encoder_lr=[1e-5, 1e-5]")  # one rate for all: fine
    assert not found(run_preflight(same), "text encoder learning rates")


def test_sample_prompt_files_are_parsed_before_training(world, tmp_path) -> None:
    missing = cfg_for(world, tmp_path, f"sample.prompt_file={tmp_path / 'none.txt'}")
    (line,) = found(run_preflight(missing), "sample prompts")
    assert line.startswith("sample.prompt_file: ") and "does not exist" in line
    bad = tmp_path / "prompts.txt"
    bad.write_text("a photo of alice --w 500 --h 512\n", encoding="utf-8")
    (line,) = found(run_preflight(cfg_for(world, tmp_path, f"sample.prompt_file={bad}")), "sample prompts")
    assert "500 is not a multiple of 8" in line
    bad.write_text("# kohya's prompt file\na photo of alice --w 512 --h 512 --d 1 --s 20 --l 7\n", encoding="utf-8")
    assert not found(run_preflight(cfg_for(world, tmp_path, f"sample.prompt_file={bad}")), "sample prompts")
    cfg = cfg_for(world, tmp_path, "sample.enabled=true", "sample.every_n_steps=1")
    report = run_preflight(cfg)
    assert [f.severity for f in report if f.check == "sample prompts"] == ["warning"]


def test_loss_masks_from_a_conditioning_folder_must_exist(world, tmp_path) -> None:
    from PIL import Image

    from train.data.dataset import build_items

    images = tmp_path / "imgs"
    masks = tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (64, 64), (200, 10, 10)).save(images / f"{name}.png")
    Image.new("L", (64, 64), 255).save(masks / "a.png")
    toml = tmp_path / "ds.toml"
    toml.write_text(f'[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nimage_dir = "{images}"\n'
                    f'conditioning_data_dir = "{masks}"\nnum_repeats = 1\n', encoding="utf-8")
    cfg = cfg_for(world, tmp_path, f"dataset.path={toml}", "train.masked_loss=true")
    data = build_items(cfg.dataset, lambda m, p: None, batch_size=1, masked_loss=True)
    report = run_preflight(cfg, stages=("dataset",), data=data)
    (finding,) = [f for f in report if f.check == "loss masks"]
    assert finding.severity == "error" and "1 of 2 images have no mask image" in finding.problem
    assert "b.png" in finding.problem
    # alpha masks on images without alpha: a warning (the loss would not be masked)
    toml.write_text(f'[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nimage_dir = "{images}"\n'
                    'alpha_mask = true\nnum_repeats = 1\n', encoding="utf-8")
    cfg = cfg_for(world, tmp_path, f"dataset.path={toml}")
    data = build_items(cfg.dataset, lambda m, p: None, batch_size=1)
    (finding,) = [f for f in run_preflight(cfg, stages=("dataset",), data=data) if f.check == "loss masks"]
    assert finding.severity == "warning" and "none of its 2 images has one" in finding.problem
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(images / "b.png")
    data = build_items(cfg.dataset, lambda m, p: None, batch_size=1)
    assert not [f for f in run_preflight(cfg, stages=("dataset",), data=data) if f.check == "loss masks"]


@pytest.mark.parametrize("name", ["full fp16 / bf16 training", "fp8 base weights", "loss masks",
                                  "loss options for the prediction type", "zero terminal SNR",
                                  "block dims for the architecture", "text encoder learning rates", "sample prompts"])
def test_the_checks_are_registered(name: str) -> None:
    from train.preflight import CHECKS, load_checks

    load_checks()
    assert name in {c.name for c in CHECKS}


def test_each_text_encoder_rate_is_checked_for_the_optimizer(world, tmp_path) -> None:
    from train.preflight.optimizer import learning_rates_in_effect

    cfg = cfg_for(world, tmp_path, "train.optimizer=Prodigy", "train.learning_rate=1.0",
                  "train.text_encoder_lr=[1.0, 1e-4]")
    assert learning_rates_in_effect(cfg) == [("train.learning_rate", 1.0), ("train.text_encoder_lr[0]", 1.0),
                                             ("train.text_encoder_lr[1]", 1e-4)]
    lines = found(run_preflight(cfg), "learning rates")
    assert len(lines) == 1 and lines[0].startswith("train.text_encoder_lr[1]: ")
    assert "--set 'train.text_encoder_lr=[1, 1]'" in lines[0]


def test_disk_estimate_counts_the_text_encoder_cache_and_each_subsets_flip(world, tmp_path) -> None:
    from train.data.dataset import build_items
    from train.preflight.core import Context
    from train.preflight.storage import ENTRY_OVERHEAD, estimate_disk

    cfg = cfg_for(world, tmp_path, "dataset.cache_text_encoder_outputs_to_disk=true",
                  "network.train_text_encoder=false", "dataset.max_token_length=150")
    need = estimate_disk(Context(cfg=cfg, data=build_items(cfg.dataset, lambda m, p: None), given_device=CPU))
    assert need is not None
    per = 152 * 768 * 4 + ENTRY_OVERHEAD  # SD1: 150 + 2 tokens x 768, fp32 on the CPU
    (part,) = [p for p in need.parts if p.startswith("text-encoder cache")]
    assert part == f"text-encoder cache {3 * per / 2**20:.1f} MB"  # 3 distinct captions
    # a dataset TOML subset's own flip_aug doubles its latents (not [dataset] flip_aug)
    images = world.dataset / "2_alice woman"
    toml = tmp_path / "ds.toml"
    toml.write_text(f'[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nimage_dir = "{images}"\n'
                    'flip_aug = true\nnum_repeats = 1\ncaption_extension = ".txt"\n', encoding="utf-8")
    cfg = cfg_for(world, tmp_path, f"dataset.path={toml}", "dataset.cache_latents_to_disk=true")
    flipped = estimate_disk(Context(cfg=cfg, data=build_items(cfg.dataset, lambda m, p: None)))
    plain = cfg_for(world, tmp_path, "dataset.cache_latents_to_disk=true")
    unflipped = estimate_disk(Context(cfg=plain, data=build_items(plain.dataset, lambda m, p: None)))
    assert flipped is not None and unflipped is not None
    latent = [p for p in flipped.parts if p.startswith("latent cache")]
    assert latent and latent != [p for p in unflipped.parts if p.startswith("latent cache")]
