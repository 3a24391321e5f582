"""`kiln train --from-kohya`: kohya sd-scripts TOMLs and bmaltais GUI JSONs (tests/data/kohya/, written from
kohya's documented options and the seed guide's settings) become kiln configs; what cannot be mapped is
listed with its reason; the small ones train on tiny models as they are."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from train.config import validate_raw
from train.kohya_import import KohyaImportError, import_kohya, parse_cli_args, parse_prompt_line
from train.kohya_names import KOHYA_OPTIONS, known, section_aliases

DATA = Path(__file__).resolve().parent / "data" / "kohya"
ROOT = Path(__file__).resolve().parents[1]


def skipped(result) -> dict[str, str]:
    return {s.key: s.reason for s in result.skipped}


def test_every_sd_scripts_option_has_an_entry() -> None:
    names = (DATA / "sd-scripts-options.txt").read_text().split()
    assert len(names) > 150
    assert [n for n in names if not known(n)] == []


def test_aliases_are_plain_renames_within_a_section() -> None:
    assert section_aliases("network") == {"network_dim": "dim", "network_alpha": "alpha"}
    aliases = section_aliases("train")
    assert aliases["train_batch_size"] == "batch_size" and aliases["max_train_steps"] == "max_steps"
    assert "max_train_epochs" not in aliases  # converted (0 = unset), so not a plain alias
    assert all(KOHYA_OPTIONS[k].section == "train" for k in aliases)


def test_seed_script_toml(tmp_path: Path) -> None:
    r = import_kohya(DATA / "seed-script-lora-sd15.toml", cwd=tmp_path)
    assert r.form == "sd-scripts TOML"
    assert r.raw["model"] == {"path": "/mnt/DATA/AI/stable-diffusion-models/Stable-diffusion/animefinal-full-pruned.ckpt",
                              "allow_pickle": True}
    assert r.raw["dataset"]["path"] == "/mnt/DATA/AI/sd-scripts/SETS/penny"
    d, n, t, o = r.raw["dataset"], r.raw["network"], r.raw["train"], r.raw["output"]
    assert (d["caption_extension"], d["resolution"], d["min_bucket_reso"], d["max_bucket_reso"]) == (".txt", 512, 320, 768)
    assert d["max_token_length"] == 150 and d["shuffle_caption"] and d["flip_aug"] and d["enable_bucket"]
    assert (n["type"], n["dim"], n["alpha"]) == ("lora", 160, 160.0)
    assert (t["optimizer"], t["learning_rate"], t["unet_lr"], t["text_encoder_lr"]) == ("AdamW8bit", 1e-4, 1e-4, 5e-5)
    assert (t["max_epochs"], t["batch_size"], t["mixed_precision"], t["clip_skip"], t["seed"]) == (6, 2, "fp16", 2, 420)
    assert t["lr_scheduler"] == "cosine_with_restarts" and t["attention"] == "sdpa"
    assert "max_steps" not in t  # the epochs decide
    assert (o["name"], o["save_precision"], o["save_every_n_epochs"], o["comment"]) == \
        ("penny_last_e6_n160", "fp16", 2, "LORA:penny")
    assert set(skipped(r)) == {"face_crop_aug_range"}
    assert "face-crop" in skipped(r)["face_crop_aug_range"]
    validate_raw(r.raw)  # a complete, valid kiln config


def test_seed_easy_settings_with_relative_paths_and_reg_folder(tmp_path: Path) -> None:
    r = import_kohya(DATA / "seed-easy-prodigy.toml", cwd=tmp_path)
    assert r.raw["model"]["path"] == str(tmp_path / "models/anything-v3.safetensors")
    # bmaltais' img/ + reg/ layout: kiln reads the folder above them
    assert r.raw["dataset"]["path"] == str(tmp_path / "training/character")
    t = r.raw["train"]
    assert t["optimizer"] == "Prodigy" and t["learning_rate"] == 1.0
    assert t["optimizer_args"] == {"decouple": True, "weight_decay": 0.01, "betas": [0.9, 0.999],
                                   "use_bias_correction": True, "safeguard_warmup": True, "d_coef": 2}
    assert (t["max_steps"], t["min_snr_gamma"], t["gradient_checkpointing"]) == (1000, 5.0, True)
    assert r.raw["network"] == {"type": "lora", "dim": 64, "alpha": 1.0}
    assert r.raw["dataset"]["resolution"] == [512, 512] and r.raw["dataset"]["cache_latents_to_disk"]
    # kohya keeps the step saves of the last 400 steps at one per 200: 3 files
    assert r.raw["output"]["save_last_n"] == 3
    assert set(skipped(r)) == {"log_with", "logging_dir"}
    cfg = validate_raw(r.raw)
    assert cfg.output.dir == tmp_path / "training/character/model"


def test_lycoris_locon_sdxl_toml(tmp_path: Path) -> None:
    (tmp_path / "prompts.txt").write_text("# portraits\nsks style, a cat --n blurry --w 1024 --h 1024 --s 30\n\n"
                                          "sks style, a city at night --n blurry --w 1024 --h 1024 --s 30\n")
    ds = tmp_path / "dataset.toml"
    ds.write_text("[general]\nenable_bucket = true\nresolution = [1024, 1024]\nbatch_size = 4\n"
                  "[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'img'\n")
    text = (DATA / "lycoris-locon-sdxl.toml").read_text().replace("/datasets/style/dataset.toml", str(ds))
    (tmp_path / "cfg.toml").write_text(text)
    r = import_kohya(tmp_path / "cfg.toml", cwd=tmp_path)
    n = r.raw["network"]
    assert (n["type"], n["dim"], n["alpha"], n["conv_dim"], n["conv_alpha"]) == ("locon", 16, 8.0, 8, 4.0)
    assert n["train_text_encoder"] is False and "dropout" not in n
    t = r.raw["train"]
    assert (t["lr_warmup"], t["lr_scheduler"], t["noise_offset"], t["max_steps"]) == (0.05, "cosine", 0.0357, 3000)
    # with a dataset TOML, kohya takes resolution, buckets and batch size from it
    assert r.raw["dataset"]["path"] == str(ds)
    assert r.raw["dataset"]["resolution"] == [1024, 1024] and r.raw["dataset"]["enable_bucket"] is True
    assert t["batch_size"] == 4
    s = r.raw["sample"]
    assert s["prompts"] == ["sks style, a cat", "sks style, a city at night"]
    assert (s["negative_prompt"], s["width"], s["height"], s["steps"], s["sampler"]) == ("blurry", 1024, 1024, 30, "euler_a")
    assert r.raw["model"]["vae"] == "/models/sdxl_vae.safetensors"
    assert any("preset 'full'" in note for note in r.notes)
    assert skipped(r) == {}
    validate_raw(r.raw)


def test_bmaltais_locon_json(tmp_path: Path) -> None:
    r = import_kohya(DATA / "locon-adamw-gui.json", cwd=tmp_path)
    assert r.form == "bmaltais GUI JSON"
    n, t, d = r.raw["network"], r.raw["train"], r.raw["dataset"]
    assert (n["type"], n["dim"], n["alpha"], n["conv_dim"], n["conv_alpha"]) == ("locon", 16, 8.0, 16, 8.0)
    assert (n["dropout"], n["rank_dropout"], n["module_dropout"], n["scale_weight_norms"]) == (0.1, 0.1, 0.1, 1.0)
    assert d["resolution"] == [512, 512] and d["max_token_length"] == 75 and d["bucket_no_upscale"]
    assert t["max_epochs"] == 4 and t["seed"] == 1234 and t["gradient_accumulation_steps"] == 4
    assert (t["learning_rate"], t["unet_lr"], t["text_encoder_lr"], t["noise_offset"]) == (5e-4, 1e-4, 1e-4, 0.05)
    assert r.raw["sample"]["prompts"] == ["a painting of a gas mask , by darius kawasaki"]
    assert r.raw["sample"]["every_n_steps"] == 25
    why = skipped(r)
    assert "Hugging Face" in why["pretrained_model_name_or_path"] and "logging_dir" in why
    assert "model_list" in why and "huber_schedule" not in why  # a GUI-only key is listed; kohya's options map
    assert t["huber_schedule"] == "snr"
    assert not r.complete  # the model must be downloaded first
    assert r.raw["model"]["path"] == "/path/to/base-model.safetensors"


def test_bmaltais_sdxl_lokr_json() -> None:
    r = import_kohya(DATA / "sdxl-lokr-prodigy-gui.json")
    n, t, s = r.raw["network"], r.raw["train"], r.raw["sample"]
    assert r.raw["model"]["architecture"] == "sdxl"
    # LyCORIS' "full matrix" LoKr (dim 100000) is kiln's largest dim
    assert (n["type"], n["dim"], n["conv_dim"], n["lokr_factor"], n["alpha"]) == ("lokr", 4096, 4096, 8, 1.0)
    assert t["lr_warmup"] == 0.05  # lr_warmup 5 (%) is a ratio of the run
    assert "seed" not in t and any("random seed" in note for note in r.notes)  # the GUI's seed 0 = random
    assert s["prompts"] == ["a photo of sks woman, portrait", "sks woman walking in a park"]
    assert (s["negative_prompt"], s["steps"], s["cfg_scale"], s["width"]) == ("low quality, blurry", 28, 6.0, 1024)
    why = skipped(r)
    assert "additional_parameters --lowram" in why and "additional_parameters --log_prefix" in why
    assert "sample_prompts --w" in why and "first prompt" in why["sample_prompts --w"]
    validate_raw(r.raw)


def test_separate_reg_folder_becomes_a_dataset_toml(tmp_path: Path) -> None:
    from curator.layout import load_layout

    for folder in ("train/5_sks dog", "train/2_sks dog toy", "regs/1_dog"):
        (tmp_path / folder).mkdir(parents=True)
    cfg = tmp_path / "kohya.toml"
    cfg.write_text('pretrained_model_name_or_path = "m.safetensors"\ntrain_data_dir = "train"\n'
                   'reg_data_dir = "regs"\noutput_dir = "out"\n')
    out = tmp_path / "kiln.toml"
    proc = subprocess.run([sys.executable, "-m", "train.cli", "--from-kohya", str(cfg), "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    dataset_toml = tmp_path / "kiln.dataset.toml"
    assert f'path = "{dataset_toml}"' in out.read_text()
    layout = load_layout(dataset_toml)
    got = sorted((s.rel_dir, s.repeats, s.class_tokens, s.is_reg) for s in layout.subsets)
    assert got == [("regs/1_dog", 1, "dog", True), ("train/2_sks dog toy", 2, "sks dog toy", False),
                   ("train/5_sks dog", 5, "sks dog", False)]
    # nothing is overwritten without --force
    again = subprocess.run([sys.executable, "-m", "train.cli", "--from-kohya", str(cfg), "--out", str(out)],
                           cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert again.returncode == 1 and "--force" in again.stderr


def test_cli_prints_the_config_and_lists_what_was_not_mapped(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "train.cli", "--from-kohya", str(DATA / "seed-script-lora-sd15.toml")],
                          cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert "[network]" in proc.stdout and "dim = 160  # network_dim" in proc.stdout
    assert "color_aug = true" in proc.stdout and "not mapped: color_aug" not in proc.stderr
    assert "kiln train: not mapped: face_crop_aug_range:" in proc.stderr
    assert not list(tmp_path.iterdir())  # printing writes nothing


@pytest.mark.parametrize("content, message", [
    ("this is = = not toml", "neither TOML nor JSON"),
    ("[1, 2]", "JSON object"),
    ("[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'x'\n", "dataset config"),
])
def test_bad_files_get_a_clear_message(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / ("bad.json" if content.startswith("[1") else "bad.toml")
    path.write_text(content)
    with pytest.raises(KohyaImportError, match=message):
        import_kohya(path)
    with pytest.raises(KohyaImportError, match="cannot read"):
        import_kohya(tmp_path / "missing.toml")


def test_a_value_kiln_refuses_is_reported_and_the_rest_kept(tmp_path: Path) -> None:
    cfg = tmp_path / "k.toml"
    cfg.write_text('pretrained_model_name_or_path = "m.safetensors"\ntrain_data_dir = "d"\n'
                   'max_bucket_reso = 32\nnetwork_dim = 8\nlr_scheduler = "rex"\nsample_sampler = "unipc"\n')
    r = import_kohya(cfg, cwd=tmp_path)
    why = skipped(r)
    assert "lr_scheduler" in why and "constant is used" in why["lr_scheduler"]
    assert "sample_sampler" in why and "euler_a" in why["sample_sampler"]
    assert r.raw["network"]["dim"] == 8
    assert any("max_bucket_reso" in line for line in (*r.problems, *why))


def test_cli_argument_and_prompt_parsing() -> None:
    assert parse_cli_args("--lowram --log_prefix=x --network_args a=1 b=2 --max_grad_norm 0") == {
        "lowram": True, "log_prefix": "x", "network_args": ["a=1", "b=2"], "max_grad_norm": 0}
    p = parse_prompt_line("masterpiece, 1girl --n lowres, bad hands --w 512 --h 768 --l 7.5 --s 20 --d 3")
    assert (p.prompt, p.negative, p.width, p.height, p.cfg, p.steps, p.seed) == \
        ("masterpiece, 1girl", "lowres, bad hands", 512, 768, 7.5, 20, 3)
    assert parse_prompt_line("# a comment").prompt == ""


# ------------------------------------------------------------------------------------------ they train as they are


@pytest.fixture(scope="module")
def kohya_workdir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A folder laid out as the two tiny kohya configs expect: ./model (a tiny SD1 diffusers folder) and
    ./dataset (a kohya folder of real photos)."""
    from tests.test_train_loop import make_dataset, tiny_models

    models = tiny_models(Path(request.config.cache.mkdir("kiln-tiny-models")), archs=("sd1",))
    work = tmp_path_factory.mktemp("kohya-work")
    (work / "model").symlink_to(models["sd1"] / "diffusers", target_is_directory=True)
    data = make_dataset(work / "data", broken=False)
    (work / "dataset").symlink_to(data, target_is_directory=True)
    return work


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["tiny-train-sd1.toml", "tiny-train-gui.json"])
def test_small_kohya_configs_train_without_editing(kohya_workdir: Path, fixture: str) -> None:
    import torch
    from safetensors import safe_open

    from train.loop import train

    torch.set_num_threads(1)
    r = import_kohya(DATA / fixture, cwd=kohya_workdir)
    assert r.complete and not r.problems, (r.problems, r.skipped)
    cfg = validate_raw(r.raw)
    result = train(cfg, install_signals=False)
    assert result.reason == "finished", result.message
    saved = cfg.run_dir / f"{cfg.output.name}.safetensors"
    with safe_open(str(saved), "pt") as fh:
        keys = list(fh.keys())
        meta = fh.metadata()
    if fixture.endswith(".toml"):  # LoCon: 3x3 convs too; text encoder trained
        assert any("resnets" in k and "conv1" in k for k in keys)
        assert any(k.startswith("lora_te_") for k in keys)
        assert result.step == 3 and meta["ss_network_dim"] == "4"
        assert json.loads(meta["ss_network_args"])["conv_dim"] in ("4", 4)
    else:  # the GUI's text_encoder_lr = 0 with a UNet rate: UNet only; epoch 1 = 3 images x 2 repeats / 3
        assert not any(k.startswith("lora_te") for k in keys)
        assert result.step == 2


def test_torch_compile_maps_to_the_compile_mode(tmp_path: Path) -> None:
    cfg = tmp_path / "k.toml"
    cfg.write_text('pretrained_model_name_or_path = "m.safetensors"\ntrain_data_dir = "d"\ntorch_compile = true\n'
                   'dynamo_backend = "inductor"\n')
    r = import_kohya(cfg, cwd=tmp_path)
    assert r.raw["train"]["compile"] == "default"
    assert "inductor" in skipped(r)["dynamo_backend"]
    cfg.write_text('pretrained_model_name_or_path = "m.safetensors"\ntrain_data_dir = "d"\ntorch_compile = false\n')
    assert import_kohya(cfg, cwd=tmp_path).raw["train"]["compile"] == "off"


def test_validation_options_map_and_the_seed_follows_kohyas_default(tmp_path: Path) -> None:
    cfg = tmp_path / "k.toml"
    cfg.write_text('pretrained_model_name_or_path = "m.safetensors"\ntrain_data_dir = "d"\nseed = 42\n'
                   'validation_split = 0.1\nvalidate_every_n_steps = 50\nmax_validation_steps = 0\n')
    r = import_kohya(cfg, cwd=tmp_path)
    assert r.raw["dataset"]["validation_split"] == 0.1 and r.raw["dataset"]["validation_seed"] == 42
    assert r.raw["train"]["validate_every_n_steps"] == 50 and "max_validation_steps" not in r.raw["train"]
    cfg.write_text(cfg.read_text() + "validation_seed = 7\n")
    assert import_kohya(cfg, cwd=tmp_path).raw["dataset"]["validation_seed"] == 7
