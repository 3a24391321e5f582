"""kohya options in the training loop on tiny models (CPU, 64 px, a few steps): each shows its effect."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.test_train_loop import dataset, models, one_thread, tiny_config  # noqa: F401 - fixtures
from train.rundir import read_events

pytestmark = pytest.mark.slow  # trains tiny models on the CPU


def test_schedule_free_optimizer_samples_and_saves_its_evaluation_weights(models, dataset, tmp_path,
                                                                          monkeypatch) -> None:
    from train.loop import train
    from train.network.network import Network

    modes: list[tuple[str, bool]] = []
    original = Network.save

    def save(self, path, *args, **kwargs):  # the optimizer's mode at the moment a LoRA file is written
        modes.append(("save", optimizer_mode()))
        return original(self, path, *args, **kwargs)

    import train.optim as optim

    created = []
    make = optim.create_optimizer

    def create(*args, **kwargs):
        opt = make(*args, **kwargs)
        created.append(opt)
        return opt

    def optimizer_mode() -> bool:
        return bool(created[0].param_groups[0]["train_mode"])

    monkeypatch.setattr(Network, "save", save)
    monkeypatch.setattr(optim, "create_optimizer", create)
    cfg = tiny_config(models["sd1"] / "diffusers", dataset, tmp_path, "sf", "train.optimizer=AdamWScheduleFree",
                      "output.save_every_n_steps=1", "train.max_steps=2")
    result = train(cfg)
    assert result.reason == "finished", result.message
    assert modes == [("save", False), ("save", False)]  # step 1 and the final file: evaluation weights
    assert optimizer_mode()  # back in train mode after each save
    assert len([e for e in read_events(tmp_path / "sf") if e["type"] == "step"]) == 2


def test_fp8_base_with_full_bf16_trains(models, dataset, tmp_path, monkeypatch) -> None:
    """bf16 on the CPU: the frozen UNet and text encoder stored in float8, the network and its optimizer in bf16."""
    import torch

    import train.optim as optim
    from train.loop import train

    seen: list[torch.dtype] = []
    make = optim.create_optimizer

    def create(name, groups, *args, **kwargs):
        seen.extend(p.dtype for g in groups for p in g["params"])
        return make(name, groups, *args, **kwargs)

    monkeypatch.setattr(optim, "create_optimizer", create)
    cfg = tiny_config(models["sd1"] / "diffusers", dataset, tmp_path, "f8", "train.mixed_precision=bf16",
                      "train.full_bf16=true", "train.fp8_base=true", "train.max_steps=2", "network.dim=8",
                      "network.alpha=8")
    result = train(cfg, checked=True)  # the pre-flight refuses bf16 on a CPU (emulated, slow): test it anyway
    assert result.reason == "finished", result.message
    assert seen and set(seen) == {torch.bfloat16}
    assert all(math.isfinite(x) for x in result.losses) and len(result.losses) == 2
    from safetensors import safe_open

    with safe_open(str(tmp_path / "f8" / "f8.safetensors"), "pt") as fh:
        meta = fh.metadata()
    assert meta["ss_fp8_base"] == "True" and meta["ss_mixed_precision"] == "bf16"


def test_dataset_toml_with_two_datasets_masks_and_cached_latents(models, tmp_path) -> None:
    """Two [[datasets]] (own resolution and batch size), alpha masks kept with the cached latents."""
    from PIL import Image
    from skimage import data as skdata

    from train.config import load_config
    from train.loop import train

    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("astronaut", "coffee", "chelsea"):
        rgba = Image.fromarray(getattr(skdata, name)()).resize((64, 64)).convert("RGBA")
        rgba.putalpha(Image.new("L", (64, 64), 255).crop((0, 0, 64, 64)))
        rgba.paste((0, 0, 0, 0), (0, 0, 16, 64))
        rgba.save(folder / f"{name}.png")
        (folder / f"{name}.caption").write_text(f"{name}, photo", encoding="utf-8")
    (tmp_path / "ds.toml").write_text(
        "[general]\nalpha_mask = true\n"
        "[[datasets]]\nresolution = 64\nmin_bucket_reso = 64\nmax_bucket_reso = 128\nbatch_size = 3\n"
        "[[datasets.subsets]]\nimage_dir = 'imgs'\nnum_repeats = 2\n"
        "[[datasets]]\nresolution = 96\nmin_bucket_reso = 64\nmax_bucket_reso = 128\nbucket_reso_steps = 32\n"
        "[[datasets.subsets]]\nimage_dir = 'imgs'\n", encoding="utf-8")
    cfg = load_config(overrides=[
        f"model.path={models['sd1'] / 'diffusers'}", f"dataset.path={tmp_path / 'ds.toml'}",
        f"output.dir={tmp_path}", "output.name=toml", "network.dim=4", "network.alpha=4", "train.max_epochs=1",
        "train.mixed_precision=no", "sample.enabled=false", "dataset.cache_latents=true",
    ])
    result = train(cfg)
    assert result.reason == "finished", result.message
    start = next(e for e in read_events(tmp_path / "toml") if e["type"] == "start")
    assert start["steps_per_epoch"] == 2 + 3  # 6 samples in batches of 3, then 3 at 96 px in batches of 1
    assert len(result.losses) == 5 and all(math.isfinite(x) for x in result.losses)


def test_text_encoder_outputs_cached_on_disk_are_reused(models, dataset, tmp_path) -> None:
    from train.loop import train

    extra = ("network.train_text_encoder=false", "dataset.cache_text_encoder_outputs_to_disk=true",
             "train.max_steps=1")
    first = train(tiny_config(models["sd1"] / "diffusers", dataset, tmp_path, "te1", *extra))
    assert first.reason == "finished", first.message
    files = list((dataset / ".kiln" / "text").rglob("*.safetensors"))
    assert len(files) >= 3  # one per caption
    second = train(tiny_config(models["sd1"] / "diffusers", dataset, tmp_path, "te2", *extra))
    assert second.reason == "finished", second.message
    phases = [e for e in read_events(tmp_path / "te2") if e["type"] == "phase"
              and e["phase"] == "caching text encoder outputs"]
    assert phases and phases[-1]["total"] == 0  # nothing left to encode
    assert first.losses == second.losses  # the same conditioning, read back from disk


def test_ztsnr_checkpoint_prompt_file_and_samples_at_first(request, dataset, tmp_path) -> None:
    """A v-prediction checkpoint whose scheduler says zero terminal SNR: the rescaled schedule is used (with a
    note), kohya's sample-prompt file renders with its per-prompt options, before the first step too."""
    import json
    import shutil

    from PIL import Image
    from safetensors import safe_open

    from tests.test_train_loop import tiny_models
    from train.loop import train

    sd2 = tiny_models(Path(request.config.cache.mkdir("kiln-tiny-models")), ("sd2",))["sd2"]
    model = tmp_path / "ztsnr-model"
    shutil.copytree(sd2 / "diffusers", model)
    config = model / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "rescale_betas_zero_snr": True}))
    (tmp_path / "prompts.txt").write_text("# kohya's form\nalice woman --w 64 --h 96 --s 2 --d 5 --ss euler\n"
                                          "a photo --n blurry --s 1\n", encoding="utf-8")
    cfg = tiny_config(model, dataset, tmp_path, "z", "train.max_steps=1", "sample.enabled=true",
                      f"sample.prompt_file={tmp_path / 'prompts.txt'}", "sample.at_first=true", "sample.steps=2",
                      "train.scale_v_pred_loss_like_noise_pred=true", "train.min_snr_gamma=5")
    result = train(cfg)
    assert result.reason == "finished", result.message
    events = list(read_events(tmp_path / "z"))
    assert any(e["type"] == "warning" and "zero terminal SNR" in e["message"] for e in events)
    with safe_open(str(tmp_path / "z" / "z.safetensors"), "pt") as fh:
        assert fh.metadata()["ss_zero_terminal_snr"] == "True"
    kinds = [(e["type"], Path(e.get("path", "")).name) for e in events if e["type"] in ("sample", "step")]
    assert kinds[:3] == [("sample", "z-step00000000-00.png"), ("sample", "z-step00000000-01.png"), ("step", "")]
    samples = tmp_path / "z" / "samples"
    assert Image.open(samples / "z-step00000000-00.png").size == (64, 96)  # --w 64 --h 96
    assert Image.open(samples / "z-final-01.png").size == (64, 64)  # the training resolution
