"""End-to-end training on tiny SD1 / SDXL models (CPU, 64 px): both model formats, saved files, events,
loss falling, exact resume, NaN handling."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from train.config import TrainConfig, load_config
from train.rundir import read_events, read_status

pytestmark = pytest.mark.slow  # trains tiny models on the CPU

ROOT = Path(__file__).resolve().parents[1]


def tiny_models(cache_root: Path, archs: tuple[str, ...] = ("sd1", "sdxl")) -> dict[str, Path]:
    """Tiny models as diffusers folders and single files, built once per tiny.py version."""
    from train.models.tiny import save_tiny

    digest = hashlib.sha256((ROOT / "train/models/tiny.py").read_bytes()).hexdigest()[:12]
    out = {}
    for arch in archs:
        folder = cache_root / f"{arch}-{digest}"
        done = folder / "ok"
        if not done.exists():
            save_tiny(arch, folder)
            done.write_text("ok")
        out[arch] = folder
    return out


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared CPU: one thread is several times faster than oversubscribed threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models(request: pytest.FixtureRequest) -> dict[str, Path]:
    return tiny_models(Path(request.config.cache.mkdir("kiln-tiny-models")))


def make_dataset(root: Path, broken: bool = True) -> Path:
    """A kohya dataset of real photographs (scikit-image) with captions, plus one broken file."""
    from PIL import Image
    from skimage import data

    folder = root / "ds" / "2_alice woman"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("astronaut", "coffee", "chelsea"):
        Image.fromarray(getattr(data, name)()).resize((96, 64) if name == "coffee" else (64, 64)).save(
            folder / f"{name}.png")
        (folder / f"{name}.txt").write_text(f"alice woman, {name}, photo", encoding="utf-8")
    if broken:
        (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return root / "ds"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"))


def tiny_config(model: Path, dataset: Path, out: Path, name: str, *extra: str, arch: str = "sd1") -> TrainConfig:
    overrides = [
        f"model.path={model}", f"dataset.path={dataset}", "dataset.resolution=64", "dataset.min_bucket_reso=64",
        "dataset.max_bucket_reso=128", f"output.dir={out}", f"output.name={name}", "network.dim=4",
        "network.alpha=4", "train.max_steps=3", "train.learning_rate=1e-3", "train.mixed_precision=no",
        "sample.enabled=false",
    ]
    if model.is_file():  # single-file tiny checkpoints need their (tiny) config folder
        overrides.append(f"model.config_dir={model.parent / 'config'}")
    return load_config(overrides=overrides + list(extra))


@pytest.mark.parametrize("fmt", ["diffusers", "single"])
def test_tiny_sd1_trains_from_each_model_format(models, dataset, tmp_path, fmt) -> None:
    from safetensors import safe_open

    from train.loop import train

    model = models["sd1"] / "diffusers" if fmt == "diffusers" else models["sd1"] / "tiny-sd1.safetensors"
    workers = "dataset.num_workers=1" if fmt == "single" else "dataset.num_workers=0"  # a loader worker too
    cfg = tiny_config(model, dataset, tmp_path, "sd1", "output.save_every_n_steps=1", "output.save_last_n=1", workers)
    result = train(cfg)
    assert result.reason == "finished", result.message
    run = tmp_path / "sd1"
    final = run / "sd1.safetensors"
    assert [Path(p).name for p in result.outputs][-1] == "sd1.safetensors" and final.is_file()
    # step saves named as kohya names them, only the last one kept
    assert sorted(p.name for p in run.glob("sd1-step*.safetensors")) == ["sd1-step00000002.safetensors"]
    with safe_open(str(final), "pt") as fh:
        meta = fh.metadata()
        keys = list(fh.keys())
    assert meta["ss_steps"] == "3" and meta["ss_learning_rate"] == "0.001" and meta["ss_output_name"] == "sd1"
    assert json.loads(meta["ss_tag_frequency"])["2_alice woman"]["alice woman"] == 3
    assert any(k.startswith("lora_unet_") for k in keys) and any(k.startswith("lora_te_") for k in keys)
    events = list(read_events(run))
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "end" and events[-1]["reason"] == "finished"
    start = next(e for e in events if e["type"] == "start")
    assert start["total_steps"] == 3 and start["pid"] > 0 and start["config"]["arch"] == "sd1"
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3]
    assert all({"loss", "avg_loss", "lr", "it_s", "eta_s", "mem_mb", "epoch", "t"} <= set(e) for e in steps)
    warnings = [e for e in events if e["type"] == "warning"]
    assert any("broken.png" in w["message"] for w in warnings)
    status = read_status(run)
    assert status["state"] == "finished" and status["step"] == 3 and status["total_steps"] == 3
    assert (run / "config.toml").is_file() and "[network]" in (run / "config.toml").read_text()


@pytest.mark.parametrize("fmt", ["diffusers", "single"])
def test_tiny_sdxl_trains_low_memory_style(models, dataset, tmp_path, fmt) -> None:
    """SDXL with UNet only, cached text-encoder outputs, latents cached on disk (both flips)."""
    from train.loop import train

    model = models["sdxl"] / "diffusers" if fmt == "diffusers" else models["sdxl"] / "tiny-sdxl.safetensors"
    cfg = tiny_config(model, dataset, tmp_path, "xl", "network.train_text_encoder=false",
                      "dataset.cache_text_encoder_outputs=true", "dataset.cache_latents_to_disk=true",
                      "dataset.flip_aug=true", "train.gradient_checkpointing=true", "train.min_snr_gamma=5",
                      "train.max_steps=2", "train.gradient_accumulation_steps=2", "sample.enabled=true",
                      'sample.prompts=["alice woman, photo"]', "sample.steps=2", "sample.sampler=euler")
    result = train(cfg)
    assert result.reason == "finished", result.message
    start = next(e for e in read_events(tmp_path / "xl") if e["type"] == "start")
    assert start["steps_per_epoch"] == 3  # 6 batches of 1, two per optimizer step
    assert [e["step"] for e in read_events(tmp_path / "xl") if e["type"] == "step"] == [1, 2]
    assert (tmp_path / "xl" / "samples" / "xl-final-00.png").is_file()  # SDXL pipeline from the loaded parts
    cached = list((dataset / ".kiln" / "latents").rglob("*.safetensors"))
    assert len(cached) >= 6  # 3 images x 2 flips (a previous test may have added more)
    phases = [e for e in read_events(tmp_path / "xl") if e["type"] == "phase"]
    assert any(p["phase"] == "caching latents" for p in phases)
    assert any(p["phase"] == "caching text encoder outputs" and p["done"] == p["total"] for p in phases)


def test_tiny_sd2_v_prediction_with_min_snr(request, dataset, tmp_path) -> None:
    from train.loop import train

    sd2 = tiny_models(Path(request.config.cache.mkdir("kiln-tiny-models")), ("sd2",))["sd2"]
    cfg = tiny_config(sd2 / "diffusers", dataset, tmp_path, "v", "train.min_snr_gamma=5", "train.max_steps=2",
                      "train.clip_skip=2", "dataset.max_token_length=150")
    result = train(cfg)
    assert result.reason == "finished", result.message
    start = next(e for e in read_events(tmp_path / "v") if e["type"] == "start")
    assert start["config"]["arch"] == "sd2"
    from safetensors import safe_open

    with safe_open(str(tmp_path / "v" / "v.safetensors"), "pt") as fh:
        meta = fh.metadata()
    assert meta["ss_base_model_version"] == "sd_v2_v"  # trained as v-prediction
    assert meta["ss_v2"] == "True" and meta["ss_min_snr_gamma"] == "5.0" and meta["ss_max_token_length"] == "150"


@pytest.mark.parametrize("preset", ["easy", "style"])
def test_presets_train_on_tiny_models(models, dataset, tmp_path, preset) -> None:
    """The shipped presets run as shipped (optimizer, scheduler, 225 tokens, checkpointing with the text
    encoder trained, LoCon), only shrunk to 64 px and 2 steps."""
    from train.loop import train

    cfg = load_config(preset=preset, overrides=[
        f"model.path={models['sd1'] / 'diffusers'}", f"dataset.path={dataset}", "dataset.resolution=64",
        "dataset.min_bucket_reso=64", "dataset.max_bucket_reso=128", f"output.dir={tmp_path}",
        "output.name=p", "train.max_steps=2", "train.batch_size=1", "train.mixed_precision=no",
    ])
    result = train(cfg)
    assert result.reason == "finished", result.message
    steps = [e for e in read_events(tmp_path / "p") if e["type"] == "step"]
    assert len(steps) == 2 and all(len(e["lr"]) == 2 for e in steps)  # text encoder + UNet groups
