"""load_base_model on tiny SD1/SD2/SDXL models: single files and diffusers folders, offline, bad inputs."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
import torch

from tests.model_fixtures import (  # noqa: F401
    kohya_lora_keys,
    models_cache,
    tiny_sd1,
    tiny_sd2,
    tiny_sdxl,
    write_safetensors_keys,
)
from train.models import Arch, ArchitectureError, ModelConfig, ModelLoadError, load_base_model, load_vae


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Fail any attempt to open a network connection (and record it)."""
    attempts: list[object] = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise AssertionError(f"network access attempted: {address!r}")

    def refuse_create(address, *args, **kwargs):
        attempts.append(address)
        raise AssertionError(f"network access attempted: {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse_create)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return attempts


def _same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Every tensor of `a` equals the same-named tensor of `b` (CLIP names normalised across transformers)."""

    def norm(sd: dict) -> dict:
        return {k.removeprefix("text_model."): v for k, v in sd.items() if not k.endswith("position_ids")}

    sa, sb = norm(a.state_dict()), norm(b.state_dict())
    assert sa.keys() == sb.keys()
    for key, value in sa.items():
        assert torch.equal(value, sb[key]), key


def _assert_loaded_equals_saved(bm, tiny) -> None:
    _same(bm.unet, tiny.unet)
    _same(bm.vae, tiny.vae)
    assert len(bm.text_encoders) == len(tiny.text_encoders)
    for loaded, saved in zip(bm.text_encoders, tiny.text_encoders, strict=True):
        _same(loaded, saved)


@pytest.mark.parametrize("name", ["tiny_sd1", "tiny_sd2", "tiny_sdxl"])
def test_single_file_loads_exact_weights_offline(request, name: str, no_network) -> None:
    import huggingface_hub.constants as hf

    tiny, paths = request.getfixturevalue(name)
    arch = "sd2-v" if tiny.arch is Arch.SD2 else "auto"
    seen = {}
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    cls = StableDiffusionXLPipeline if tiny.arch is Arch.SDXL else StableDiffusionPipeline
    original = cls.from_single_file.__func__

    def spy(klass, *args, **kwargs):
        import os

        seen["env"] = os.environ.get("HF_HUB_OFFLINE")
        seen["const"] = hf.HF_HUB_OFFLINE
        seen["kwargs"] = kwargs
        return original(klass, *args, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(cls, "from_single_file", classmethod(spy))
    try:
        bm = load_base_model(ModelConfig(path=paths.single_file, config_dir=paths.config_dir, architecture=arch))
    finally:
        mp.undo()
    assert seen["env"] == "1" and seen["const"] is True and seen["kwargs"]["local_files_only"] is True
    assert hf.HF_HUB_OFFLINE is False  # restored afterwards
    assert no_network == []
    assert bm.arch is tiny.arch
    _assert_loaded_equals_saved(bm, tiny)
    assert bm.v_prediction is (tiny.arch is Arch.SD2)
    assert bm.noise_scheduler.config.prediction_type == ("v_prediction" if bm.v_prediction else "epsilon")
    assert bm.noise_scheduler.config.beta_schedule == "scaled_linear"
    assert bm.noise_scheduler.config.num_train_timesteps == 1000
    assert (bm.noise_scheduler.config.beta_start, bm.noise_scheduler.config.beta_end) == (0.00085, 0.012)
    assert type(bm.noise_scheduler).__name__ == "DDPMScheduler"
    assert not any(p.requires_grad for p in bm.unet.parameters())
    assert bm.model_hash.legacy is not None and len(bm.model_hash.legacy) == 8
    import hashlib

    assert bm.model_hash.sha256() == hashlib.sha256(paths.single_file.read_bytes()).hexdigest()
    assert bm.tokenizers[0]("a cat").input_ids == [49406, 320, 2368, 49407]
    if tiny.arch is Arch.SDXL:
        assert bm.tokenizers[1].pad_token == "!"
        assert bm.arch_name == "sdxl"


@pytest.mark.parametrize("name", ["tiny_sd1", "tiny_sdxl"])
def test_diffusers_folder_loads_exact_weights(request, name: str, no_network) -> None:
    tiny, paths = request.getfixturevalue(name)
    bm = load_base_model(ModelConfig(path=paths.diffusers_dir), dtype=torch.float32)
    assert no_network == []
    assert bm.arch is tiny.arch and bm.v_prediction is False
    _assert_loaded_equals_saved(bm, tiny)
    assert bm.model_hash.legacy is None and bm.model_hash.name == "diffusers"


def test_sd2_folder_takes_prediction_type_from_its_scheduler(tiny_sd2) -> None:
    tiny, paths = tiny_sd2
    bm = load_base_model(ModelConfig(path=paths.diffusers_dir))
    assert bm.arch is Arch.SD2 and bm.v_prediction is True and bm.arch_name == "sd2-v"
    from train.models.probe import inspect_base_model

    assert inspect_base_model(ModelConfig(path=paths.diffusers_dir, v_prediction=False)).v_prediction is False


def test_dtype_and_device(tiny_sd1) -> None:
    tiny, paths = tiny_sd1
    bm = load_base_model(ModelConfig(path=paths.single_file, config_dir=paths.config_dir), dtype=torch.bfloat16,
                         device="cpu")
    assert next(bm.unet.parameters()).dtype == torch.bfloat16
    assert next(bm.text_encoders[0].parameters()).dtype == torch.bfloat16


def test_separate_vae_single_file_and_folder(tiny_sd1, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from train.models.convert import vae_to_ldm
    from train.models.tiny import build_tiny

    tiny, paths = tiny_sd1
    other = build_tiny("sd1", seed=99).vae
    # standalone VAE file in the original layout (no first_stage_model. prefix), like sd-vae-ft-mse-original
    vae_file = tmp_path / "vae-ft.safetensors"
    save_file({k: v.contiguous() for k, v in vae_to_ldm(other.state_dict(), 2, prefix="").items()}, vae_file)
    cfg = ModelConfig(path=paths.single_file, config_dir=paths.config_dir, vae=vae_file)
    bm = load_base_model(cfg)
    _same(bm.vae, other)
    _same(bm.unet, tiny.unet)
    assert bm.vae_source == vae_file
    # diffusers-layout single file (diffusion_pytorch_model.safetensors renamed)
    flat = tmp_path / "vae-diffusers.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, flat)
    _same(load_vae(flat, paths.config_dir), other)
    # diffusers VAE folder, given as the VAE folder or as the model folder holding vae/
    other.save_pretrained(tmp_path / "model" / "vae")
    _same(load_vae(tmp_path / "model" / "vae", paths.config_dir), other)
    _same(load_vae(tmp_path / "model", paths.config_dir), other)


def test_bad_vae_inputs(tiny_sd1, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    tiny, paths = tiny_sd1
    cfg = ModelConfig(path=paths.single_file, config_dir=paths.config_dir)
    with pytest.raises(ModelLoadError, match="model.vae: .* does not exist"):
        load_base_model(cfg.model_copy(update={"vae": tmp_path / "nope.safetensors"}))
    lora = write_safetensors_keys(tmp_path / "lora.safetensors", kohya_lora_keys())
    with pytest.raises(ModelLoadError, match="does not look like a VAE"):
        load_base_model(cfg.model_copy(update={"vae": lora}))
    wrong = tmp_path / "wrong-size.safetensors"
    save_file({"encoder.conv_in.weight": torch.zeros(128, 3, 3, 3), "encoder.down.0.block.0.conv1.weight":
               torch.zeros(128, 128, 3, 3)}, wrong)
    with pytest.raises(ModelLoadError, match="model.vae: wrong-size.safetensors does not fit"):
        load_base_model(cfg.model_copy(update={"vae": wrong}))
    pt = tmp_path / "vae.pt"
    torch.save({"encoder.conv_in.weight": torch.zeros(1)}, pt)
    with pytest.raises(ModelLoadError, match="allow-pickle"):
        load_base_model(cfg.model_copy(update={"vae": pt}))


def test_pickle_refused_unless_allowed(tiny_sd1, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    tiny, paths = tiny_sd1
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": load_file(paths.single_file)}, ckpt)
    before = ckpt.read_bytes()
    with pytest.raises(ModelLoadError) as err:
        load_base_model(ModelConfig(path=ckpt, config_dir=paths.config_dir))
    msg = str(err.value)
    assert "--allow-pickle" in msg and "safetensors" in msg and "model.ckpt" in msg
    bm = load_base_model(ModelConfig(path=ckpt, config_dir=paths.config_dir), allow_pickle=True)
    _assert_loaded_equals_saved(bm, tiny)
    from train.models.probe import inspect_base_model

    info = inspect_base_model(ModelConfig(path=ckpt, config_dir=paths.config_dir, allow_pickle=True))
    assert info.arch is Arch.SD1 and info.pickled
    assert ckpt.read_bytes() == before


def test_bad_base_model_inputs(tiny_sd1, tmp_path: Path) -> None:
    tiny, paths = tiny_sd1
    cases: list[tuple[Path, str]] = []
    cases.append((tmp_path / "missing.safetensors", "does not exist"))
    lora = write_safetensors_keys(tmp_path / "my_lora.safetensors", kohya_lora_keys())
    cases.append((lora, "LoRA"))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(paths.single_file.read_bytes()[: paths.single_file.stat().st_size // 2])
    cases.append((cut, "truncated"))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    cases.append((gguf, "unsupported extension"))
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(paths.single_file, folder / "inside.safetensors")
    cases.append((folder, "inside.safetensors"))
    for path, needle in cases:
        with pytest.raises(ModelLoadError) as err:
            load_base_model(ModelConfig(path=path))
        assert needle in str(err.value), (path, str(err.value))
        assert "model.path" in str(err.value) or str(path) in str(err.value)
    assert paths.single_file.stat().st_size > cut.stat().st_size  # nothing was touched


def test_architecture_override_mismatch_is_clear(tiny_sd1, tiny_sdxl) -> None:
    with pytest.raises(ArchitectureError, match="model.architecture = 'sdxl' but .* is an SD1 checkpoint"):
        load_base_model(ModelConfig(path=tiny_sd1[1].single_file, architecture="sdxl"))
    with pytest.raises(ArchitectureError, match="is an SDXL checkpoint"):
        load_base_model(ModelConfig(path=tiny_sdxl[1].diffusers_dir, architecture="sd1"))


def test_sd2_single_file_needs_prediction_type(tiny_sd2, tmp_path: Path) -> None:
    tiny, paths = tiny_sd2
    with pytest.raises(ArchitectureError, match="sd2-v"):
        load_base_model(ModelConfig(path=paths.single_file))
    # a `v_pred` marker key settles it
    from safetensors.torch import load_file, save_file

    sd = load_file(paths.single_file)
    sd["v_pred"] = torch.tensor([])
    marked = tmp_path / "sd2-vpred.safetensors"
    save_file(sd, marked)
    from train.models.probe import inspect_base_model

    assert inspect_base_model(ModelConfig(path=marked)).v_prediction is True
    with pytest.raises(ArchitectureError, match="v_pred"):
        inspect_base_model(ModelConfig(path=marked, architecture="sd2"))
    info = inspect_base_model(ModelConfig(path=paths.single_file, architecture="sd2"))
    assert info.v_prediction is False and info.arch_name == "sd2"


def test_shipped_configs_are_used_for_full_size_names(tiny_sd1, tmp_path: Path) -> None:
    """Without config_dir the shipped (full-size) config is used: a tiny file then fails with a clear message."""
    tiny, paths = tiny_sd1
    with pytest.raises(ModelLoadError, match="could not load .* as an SD1 model"):
        load_base_model(ModelConfig(path=paths.single_file))


def test_diffusers_folder_with_pickled_weights_needs_allow_pickle(tiny_sd1, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    tiny, paths = tiny_sd1
    folder = tmp_path / "old-diffusers"
    shutil.copytree(paths.diffusers_dir, folder)
    te = folder / "text_encoder"
    for f in te.glob("*.safetensors"):
        torch.save(load_file(f), te / "pytorch_model.bin")
        f.unlink()
    with pytest.raises(ModelLoadError, match="pytorch_model.bin is a pickled checkpoint.*--allow-pickle"):
        load_base_model(ModelConfig(path=folder))
    bm = load_base_model(ModelConfig(path=folder, allow_pickle=True))
    _same(bm.text_encoders[0], tiny.text_encoders[0])


def test_bad_config_dir(tiny_sd1, tmp_path: Path) -> None:
    tiny, paths = tiny_sd1
    with pytest.raises(ModelLoadError, match="model.config_dir: .*no model_index.json"):
        load_base_model(ModelConfig(path=paths.single_file, config_dir=tmp_path))
