"""End-to-end training on tiny SD1 / SDXL models (CPU, 64 px): both model formats, saved files, events,
loss falling, exact resume, NaN handling."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from train.config import TrainConfig, load_config
from train.rundir import read_events, read_status, request_stop

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
    cfg = tiny_config(model, dataset, tmp_path, "sd1", "output.save_every_n_steps=1", "output.save_last_n=1")
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
                      "train.max_steps=2", "train.gradient_accumulation_steps=2")
    result = train(cfg)
    assert result.reason == "finished", result.message
    start = next(e for e in read_events(tmp_path / "xl") if e["type"] == "start")
    assert start["steps_per_epoch"] == 3  # 6 batches of 1, two per optimizer step
    assert [e["step"] for e in read_events(tmp_path / "xl") if e["type"] == "step"] == [1, 2]
    cached = list((dataset / ".kiln" / "latents").rglob("*.safetensors"))
    assert len(cached) >= 6  # 3 images x 2 flips (a previous test may have added more)
    phases = [e for e in read_events(tmp_path / "xl") if e["type"] == "phase"]
    assert any(p["phase"] == "caching latents" for p in phases)
    assert any(p["phase"] == "caching text encoder outputs" and p["done"] == p["total"] for p in phases)


def test_loss_falls_when_overfitting_one_image(models, tmp_path) -> None:
    from train.loop import train

    one = make_dataset(tmp_path / "one", broken=False)
    for name in ("coffee", "chelsea"):
        (one / "2_alice woman" / f"{name}.png").unlink()
    cfg = tiny_config(models["sd1"] / "diffusers", one, tmp_path, "fit", "train.max_steps=40",
                      "train.learning_rate=3e-3", "network.dim=8", "train.min_timestep=300",
                      "train.max_timestep=700", "network.train_text_encoder=false", "dataset.cache_latents=true")
    result = train(cfg)
    assert result.reason == "finished", result.message
    first, last = result.losses[:8], result.losses[-8:]
    assert sum(last) / len(last) < 0.8 * (sum(first) / len(first)), result.losses


def test_resume_continues_with_identical_losses(models, dataset, tmp_path) -> None:
    from train.loop import train

    extra = ("train.max_steps=5", "train.batch_size=2", "train.lr_scheduler=cosine", "train.lr_warmup=1",
             "dataset.shuffle_caption=true", "dataset.flip_aug=true", "network.dropout=0.1")
    straight = train(tiny_config(models["sd1"] / "diffusers", dataset, tmp_path, "straight", *extra))
    assert straight.reason == "finished", straight.message

    cfg = tiny_config(models["sd1"] / "diffusers", dataset, tmp_path, "resumed", *extra)
    run = tmp_path / "resumed"

    def stop_after_two(event: dict) -> None:
        if event["type"] == "step" and event["step"] == 2:
            request_stop(run)

    first = train(cfg, listeners=[stop_after_two])
    assert first.reason == "stopped" and first.step == 2
    assert (run / "state" / "trainer.json").is_file() and (run / "resumed-step00000002.safetensors").is_file()
    assert read_status(run)["state"] == "stopped"
    second = train(cfg, resume=run)
    assert second.reason == "finished", second.message
    assert len(first.losses) == 2 and len(second.losses) == 3
    assert first.losses + second.losses == pytest.approx(straight.losses, abs=1e-6)
    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "straight" / "straight.safetensors")), load_file(str(run / "resumed.safetensors"))
    assert a.keys() == b.keys() and all((a[k].float() - b[k].float()).abs().max() < 1e-3 for k in a)
    starts = [e for e in read_events(run) if e["type"] == "start"]
    assert [s["resumed_step"] for s in starts] == [0, 2]


def test_non_finite_loss_stops_with_the_likely_causes(models, dataset, tmp_path) -> None:
    from train.loop import train

    cfg = tiny_config(models["sd1"] / "diffusers", dataset, tmp_path, "nan", "train.learning_rate=1e30",
                      "train.max_grad_norm=0", "train.optimizer=SGD", "train.max_steps=4")
    result = train(cfg)
    assert result.reason == "error"
    assert "fp16 VAE" in result.message and "learning rate" in result.message
    events = list(read_events(tmp_path / "nan"))
    assert events[-1]["type"] == "end" and events[-1]["reason"] == "error"
    assert read_status(tmp_path / "nan")["state"] == "failed"


def test_epoch_saves_samples_and_plain_display(models, dataset, tmp_path, capsys) -> None:
    import io

    from train.display import PlainDisplay
    from train.loop import train

    stream = io.StringIO()
    display = PlainDisplay(stream=stream, interval=0)
    cfg = tiny_config(models["sd1"] / "diffusers", dataset, tmp_path, "ep", "train.max_epochs=2",
                      "train.batch_size=3", "output.save_every_n_epochs=1", "sample.enabled=true",
                      'sample.prompts=["alice woman, photo"]', "sample.every_n_epochs=1", "sample.steps=2",
                      "sample.sampler=ddim")
    result = train(cfg, listeners=[display])
    assert result.reason == "finished", result.message
    run = tmp_path / "ep"
    # 3 images x 2 repeats / batch 3 = 2 steps per epoch; the last epoch is the final file, not an epoch save
    assert result.step == 4
    assert (run / "ep-000001.safetensors").is_file() and not (run / "ep-000002.safetensors").exists()
    assert (run / "ep.safetensors").is_file()
    samples = sorted(p.name for p in (run / "samples").glob("*.png"))
    assert samples == ["ep-000001-00.png"]
    events = list(read_events(run))
    assert [e["epoch"] for e in events if e["type"] == "epoch"] == [1, 2]
    assert any(e["type"] == "sample" for e in events)
    text = stream.getvalue()
    assert "training ep: 4 steps, 2 epochs" in text and "step 4/4" in text and "finished at step 4" in text


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
