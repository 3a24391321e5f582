"""Architecture detection, shipped configs, key conversion and full-size parameter counts (meta device)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.model_fixtures import models_cache, write_safetensors_keys  # noqa: F401
from train.models.arch import (
    Arch,
    ArchitectureError,
    detect_architecture,
    detect_diffusers_folder,
    has_v_prediction_marker,
)
from train.models.assemble import CONFIGS_DIR, SHIPPED_CONFIGS, assemble_config_dir, clip_tokenizer_files
from train.models.config import ModelConfig


@pytest.fixture(scope="module")
def full_keys() -> dict[str, dict[str, tuple[int, ...]]]:
    """Key -> shape of full-size SD1.5 / SD2.1 / SDXL single-file checkpoints, built from meta models."""
    from train.models.convert import pipeline_to_single_file
    from train.models.meta import meta_model

    out = {}
    for arch in ("sd1", "sd2", "sdxl"):
        m = meta_model(arch, with_vae=True)
        sd = pipeline_to_single_file(m.arch, m.unet, m.vae, m.text_encoders)
        out[arch] = {k: tuple(v.shape) for k, v in sd.items()}
    return out


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl"])
def test_detects_each_full_size_layout(full_keys, arch: str) -> None:
    keys = full_keys[arch]
    assert detect_architecture(keys.keys(), keys) is Arch(arch)
    assert detect_architecture(keys.keys()) is Arch(arch)  # shapes optional


def test_full_size_keys_match_known_checkpoint_names(full_keys) -> None:
    sd1, sd2, xl = full_keys["sd1"], full_keys["sd2"], full_keys["sdxl"]
    # names and shapes every SD1.5 / SD2.1 / SDXL-base single file has
    assert sd1["model.diffusion_model.output_blocks.11.0.skip_connection.weight"] == (320, 640, 1, 1)
    assert sd1["model.diffusion_model.output_blocks.2.1.conv.weight"] == (1280, 1280, 3, 3)
    assert sd1["model.diffusion_model.input_blocks.3.0.op.weight"] == (320, 320, 3, 3)
    assert sd1["first_stage_model.encoder.mid.attn_1.q.weight"] == (512, 512, 1, 1)
    assert sd1["first_stage_model.decoder.up.3.upsample.conv.weight"] == (512, 512, 3, 3)
    assert sd1["cond_stage_model.transformer.text_model.final_layer_norm.weight"] == (768,)
    assert sd2["model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"] == (320, 1024)
    assert sd2["cond_stage_model.model.transformer.resblocks.22.attn.in_proj_weight"] == (3072, 1024)
    assert sd2["cond_stage_model.model.positional_embedding"] == (77, 1024)
    assert xl["model.diffusion_model.label_emb.0.0.weight"] == (1280, 2816)
    assert xl["model.diffusion_model.output_blocks.2.2.conv.weight"] == (1280, 1280, 3, 3)
    assert xl["conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight"] == (3840, 1280)
    assert xl["conditioner.embedders.1.model.text_projection"] == (1280, 1280)
    assert xl["conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight"] == (49408, 768)
    assert len(sd1) == 1130 and len(xl) == 2513


def test_diffusers_reads_our_full_size_layout_back() -> None:
    """diffusers' own single-file converter maps our UNet/VAE/CLIP keys back onto the meta models exactly."""
    from diffusers.loaders import single_file_utils as sfu

    from train.models.convert import pipeline_to_single_file
    from train.models.meta import meta_model

    for arch, expected in (("sd1", "v1"), ("sd2", "v2"), ("sdxl", "xl_base")):
        m = meta_model(arch, with_vae=True)
        ckpt = pipeline_to_single_file(m.arch, m.unet, m.vae, m.text_encoders)
        assert sfu.infer_diffusers_model_type(ckpt) == expected
        unet = sfu.convert_ldm_unet_checkpoint(ckpt, dict(m.unet.config))
        assert set(unet) == set(m.unet.state_dict())
        assert all(unet[k].shape == v.shape for k, v in m.unet.state_dict().items())
        vae = sfu.convert_ldm_vae_checkpoint(ckpt, dict(m.vae.config))
        assert set(vae) == set(m.vae.state_dict())
        te = m.text_encoders[-1]
        if arch == "sd1":
            conv = sfu.convert_ldm_clip_checkpoint(ckpt)
        else:
            prefix = "cond_stage_model.model." if arch == "sd2" else "conditioner.embedders.1.model."
            conv = sfu.convert_open_clip_checkpoint(te, ckpt, prefix=prefix)
        want = {k if k.startswith(("text_model.", "text_projection")) else "text_model." + k
                for k in te.state_dict()}
        assert set(conv) == want


def test_full_size_parameter_counts() -> None:
    from train.models.meta import count_parameters, meta_text_encoders, meta_unet

    assert count_parameters(meta_unet("sd1")) == 859_520_964
    assert count_parameters(meta_unet("sd2")) == 865_910_724
    assert count_parameters(meta_unet("sdxl")) == 2_567_463_684
    clip_l, big_g = meta_text_encoders("sdxl")
    assert count_parameters(clip_l) == 123_060_480
    assert count_parameters(big_g) == 694_659_840
    assert count_parameters(meta_text_encoders("sd1")[0]) == 123_060_480
    assert next(meta_unet("sdxl").parameters()).device.type == "meta"


def test_materialize_gives_real_random_weights() -> None:
    import torch

    from train.models.meta import materialize, meta_text_encoders

    te = materialize(meta_text_encoders("sd1")[0])
    w = te.state_dict()
    key = next(k for k in w if k.endswith("token_embedding.weight"))
    assert w[key].device.type == "cpu" and 0.01 < float(w[key].std()) < 0.03
    out = te(torch.tensor([[49406, 320, 1125, 49407]]))
    assert torch.isfinite(out.last_hidden_state).all()


def _with(keys: dict, **extra) -> dict:
    out = dict(keys)
    out.update(extra)
    return out


def test_rejects_non_base_checkpoints(full_keys) -> None:
    sd1, xl = full_keys["sd1"], full_keys["sdxl"]
    cases = {
        "inpainting": _with(sd1, **{"model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3)}),
        "instruct-pix2pix": _with(sd1, **{"model.diffusion_model.input_blocks.0.0.weight": (320, 8, 3, 3)}),
        "refiner": {k.replace("conditioner.embedders.1.", "conditioner.embedders.0."): v
                    for k, v in xl.items() if not k.startswith("conditioner.embedders.0.")},
        "LoRA": {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320)},
        "Stable Diffusion 3": {"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": (4608, 1536),
                               "text_encoders.clip_l.transformer.text_model.final_layer_norm.weight": (768,)},
        "Flux": {"double_blocks.0.img_attn.qkv.weight": (9216, 3072)},
        "VAE": {"encoder.down.0.block.0.conv1.weight": (128, 128, 3, 3), "decoder.up.0.block.0.conv1.weight": ()},
        "vae file": {k: v for k, v in sd1.items() if k.startswith("first_stage_model.")},
        "lora file": {"unet.down_blocks.0.attentions.0.proj_in.lora.down.weight": (4, 320)},
        "diffusers-layout": {"down_blocks.0.resnets.0.conv1.weight": (320, 320, 3, 3)},
    }
    for label, keys in cases.items():
        with pytest.raises(ArchitectureError) as err:
            detect_architecture(keys.keys(), keys, where="x.safetensors")
        assert label.split()[0].lower() in str(err.value).lower(), (label, str(err.value))
        assert "x.safetensors" in str(err.value)
    with pytest.raises(ArchitectureError, match="no text encoder"):
        detect_architecture([k for k in sd1 if k.startswith("model.")])
    with pytest.raises(ArchitectureError, match="no tensors"):
        detect_architecture([])


def test_unet_only_file_falls_back_on_cross_attention_width(full_keys) -> None:
    for arch in ("sd1", "sd2", "sdxl"):
        unet = {k: v for k, v in full_keys[arch].items() if k.startswith("model.diffusion_model.")}
        assert detect_architecture(unet.keys(), unet) is Arch(arch)


def test_v_pred_marker() -> None:
    assert has_v_prediction_marker(["model.diffusion_model.out.2.weight", "v_pred"])
    assert not has_v_prediction_marker(["model.diffusion_model.out.2.weight"])


def test_shipped_diffusers_configs_detect_as_their_architecture() -> None:
    assert detect_diffusers_folder(CONFIGS_DIR / "sd15") == (Arch.SD1, False)
    assert detect_diffusers_folder(CONFIGS_DIR / "sd2") == (Arch.SD2, True)
    assert detect_diffusers_folder(CONFIGS_DIR / "sd2-base") == (Arch.SD2, False)
    assert detect_diffusers_folder(CONFIGS_DIR / "sdxl") == (Arch.SDXL, False)


def test_diffusers_folder_rejections(tmp_path: Path) -> None:
    (tmp_path / "unet").mkdir()
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLImg2ImgPipeline"}))
    with pytest.raises(ArchitectureError, match="refiner"):
        detect_diffusers_folder(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"in_channels": 9, "cross_attention_dim": 768}))
    with pytest.raises(ArchitectureError, match="9 input channels"):
        detect_diffusers_folder(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(ArchitectureError, match="Flux"):
        detect_diffusers_folder(tmp_path)
    with pytest.raises(ArchitectureError, match="model_index.json"):
        detect_diffusers_folder(tmp_path / "unet")


def test_shipped_config_values() -> None:
    def cfg(name: str, sub: str) -> dict:
        return json.loads((CONFIGS_DIR / name / sub).read_text())

    assert set(SHIPPED_CONFIGS) == {p.name for p in CONFIGS_DIR.iterdir() if p.is_dir()}
    assert cfg("sd2", "scheduler/scheduler_config.json")["prediction_type"] == "v_prediction"
    assert cfg("sd2-base", "scheduler/scheduler_config.json")["prediction_type"] == "epsilon"
    assert cfg("sd2", "unet/config.json")["sample_size"] == 96
    assert cfg("sdxl", "vae/config.json")["scaling_factor"] == 0.13025
    assert cfg("sd15", "vae/config.json")["scaling_factor"] == 0.18215
    assert cfg("sdxl", "tokenizer_2/special_tokens_map.json")["pad_token"] == "!"
    assert cfg("sd2", "tokenizer/special_tokens_map.json")["pad_token"] == "!"
    assert cfg("sd15", "tokenizer/tokenizer_config.json")["pad_token"] == "<|endoftext|>"
    for name in SHIPPED_CONFIGS:
        for sched in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps"):
            assert cfg(name, "scheduler/scheduler_config.json")[sched] == {
                "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                "num_train_timesteps": 1000}[sched]


def test_assembled_tokenizers_match_clip(models_cache: Path) -> None:
    from transformers import CLIPTokenizer

    vocab = json.loads((clip_tokenizer_files() / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 49408 and vocab["<|endoftext|>"] == 49407 and vocab["a</w>"] == 320
    folder = assemble_config_dir("sdxl")
    assert assemble_config_dir("sdxl") == folder  # cached
    tok = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    tok2 = CLIPTokenizer.from_pretrained(folder / "tokenizer_2", local_files_only=True)
    ids = tok("a photo of a cat", padding="max_length", max_length=10).input_ids
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407, 49407, 49407, 49407]
    assert tok2("a photo of a cat", padding="max_length", max_length=9).input_ids[-2:] == [0, 0]
    assert tok.model_max_length == 77
    # the shipped folders themselves stay free of megabyte tokenizer files
    assert not list(CONFIGS_DIR.rglob("vocab.json")) and not list(CONFIGS_DIR.rglob("merges.txt"))


def test_tokenizer_built_in_the_cache_matches_shipped_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without curator's vocab.json/merges.txt the loader builds them from the BPE .gz into the cache."""
    from train.models import assemble

    shipped_dir = assemble.CLIP_TOKENIZER_DIR
    monkeypatch.setattr(assemble, "CLIP_TOKENIZER_DIR", tmp_path / "missing")
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path / "cache"))
    built = assemble.clip_tokenizer_files()
    assert built.is_relative_to(tmp_path / "cache")
    for name in ("vocab.json", "merges.txt"):
        assert (built / name).read_bytes() == (shipped_dir / name).read_bytes(), name


def test_model_config_fields(tmp_path: Path) -> None:
    from pydantic import ValidationError

    cfg = ModelConfig(path="~/models/x.safetensors", architecture="SD15")
    assert cfg.architecture == "sd1" and cfg.path == Path("~/models/x.safetensors").expanduser()
    assert ModelConfig(path="m", architecture="xl").architecture == "sdxl"
    assert ModelConfig(path="m", architecture="sd2-v").wanted_v_prediction is True
    with pytest.raises(ValidationError, match="unknown architecture 'sd3'"):
        ModelConfig(path="m", architecture="sd3")
    with pytest.raises(ValidationError, match="model.path is empty"):
        ModelConfig(path="")
    with pytest.raises(ValidationError, match="v_prediction = false"):
        ModelConfig(path="m", architecture="sd2-v", v_prediction=False)
    with pytest.raises(ValidationError, match="extra"):
        ModelConfig(path="m", pretrained="x")


def test_importing_models_package_loads_no_heavy_library() -> None:
    import subprocess
    import sys

    code = ("import sys, train.models, train.models.tiny, train.models.meta, train.models.convert;"
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('torch','diffusers','transformers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


def test_safetensors_header_reader(tmp_path: Path) -> None:
    from train.models.arch import ModelLoadError
    from train.models.probe import read_safetensors_header

    path = write_safetensors_keys(tmp_path / "a.safetensors", {"x": (2, 3), "v_pred": ()}, {"k": "v"})
    header = read_safetensors_header(path)
    assert header.shapes == {"x": (2, 3), "v_pred": ()} and header.metadata == {"k": "v"}
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-4])
    with pytest.raises(ModelLoadError, match="truncated"):
        read_safetensors_header(tmp_path / "cut.safetensors")
    (tmp_path / "html.safetensors").write_bytes(b"<!DOCTYPE html><html>Not found</html>")
    with pytest.raises(ModelLoadError, match="not a valid .safetensors"):
        read_safetensors_header(tmp_path / "html.safetensors")
