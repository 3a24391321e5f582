"""The training process under faults, on tiny SD1 models (CPU, 64 px):

* out of memory at the first step and mid-run: a real CPU allocator failure (a 1 TiB request planted in the
  UNet's forward at step N) and CUDA's ``OutOfMemoryError``: one message with the options that cut memory;
  mid-run, the LoRA and state of the last completed step are saved and ``--resume`` finishes the run;
* NaN/inf losses: a step whose loss is not finite is skipped (no update), ``train.max_bad_steps`` in a row are
  tolerated, one more stops the run with the last good weights saved;
* a base checkpoint that is truncated: refused before anything loads, with the reason;
* the dataset folder deleted mid-run: a clear message, state saved, resume finishes once it is back;
* the run directory's disk full (a real tmpfs, root only): the previous saves and state are kept, the message
  names the disk and the space needed, resume finishes once there is space.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.faults import planted, tiny_disk
from tests.test_train_loop import make_dataset, models, one_thread, tiny_config  # noqa: F401 (fixtures)
from train.rundir import read_events, read_status

pytestmark = pytest.mark.slow  # trains tiny models on the CPU


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), broken=False)


def _base(cfg):
    import torch

    from train.models.loading import load_base_model

    return load_base_model(cfg.model, dtype=torch.float32)


def _fault_at(base, calls: set[int], fault) -> list[int]:
    """Run ``fault()`` in the UNet's forward on the given (1-based) calls; returns the call counter."""
    count = [0]

    def hook(_module, _args, _kwargs=None):
        count[0] += 1
        if count[0] in calls:
            planted("out of memory in a training step")
            fault()

    base.unet.register_forward_pre_hook(hook)
    return count


def _cpu_oom() -> None:
    import torch

    torch.empty(1 << 40, dtype=torch.uint8)  # 1 TiB: PyTorch's CPU allocator refuses it (a real failure)


def _cuda_oom() -> None:
    import torch

    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.6 GiB total)")


def _nan_output(base, calls: set[int]) -> None:
    count = [0]

    def hook(_module, _args, output):
        count[0] += 1
        if count[0] in calls:
            planted("NaN loss in a training step")
            output.sample.fill_(float("nan"))
        return output

    base.unet.register_forward_hook(hook)


@pytest.mark.parametrize("oom", [_cpu_oom, _cuda_oom], ids=["cpu-allocator", "cuda"])
def test_out_of_memory_at_the_first_step(models, dataset, tmp_path, oom) -> None:
    from train.loop import train

    cfg = tiny_config(models["sd1"] / "diffusers", dataset, tmp_path, "oom1", "train.max_steps=3")
    base = _base(cfg)
    _fault_at(base, {1}, oom)
    result = train(cfg, base=base)
    assert result.reason == "error" and result.step == 0
    memory = "CPU" if oom is _cpu_oom else "GPU"
    assert f"out of {memory} memory at step 1" in result.message
    for option in ("train.batch_size", "gradient_checkpointing", "cache_latents", "AdamW8bit", "resolution"):
        assert option in result.message
    assert "Traceback" not in result.message and not (tmp_path / "oom1" / "state").exists()
    assert read_status(tmp_path / "oom1")["state"] == "failed"


def test_out_of_memory_mid_run_saves_the_last_step_and_resumes(models, dataset, tmp_path) -> None:
    from train.loop import train
    from train.state import latest_state, load_progress

    cfg = tiny_config(models["sd1"] / "diffusers", dataset, tmp_path, "oom", "train.max_steps=4")
    base = _base(cfg)
    _fault_at(base, {3}, _cpu_oom)
    result = train(cfg, base=base)
    run = tmp_path / "oom"
    assert result.reason == "error" and "out of CPU memory at step 3" in result.message
    assert "state of step 2 were saved" in result.message and f"kiln train --resume {run}" in result.message
    assert (run / "oom-step00000002.safetensors").is_file()
    state = latest_state(run)
    assert state is not None and load_progress(state).step == 2
    resumed = train(cfg, resume=run)
    assert resumed.reason == "finished" and resumed.step == 4, resumed.message
    assert [e["resumed_step"] for e in read_events(run) if e["type"] == "start"] == [0, 2]


def test_a_few_nan_steps_are_skipped_and_the_run_finishes(models, dataset, tmp_path) -> None:
    from train.loop import train

    cfg = tiny_config(models["sd1"] / "diffusers", dataset, tmp_path, "blip", "train.max_steps=4")
    base = _base(cfg)
    _nan_output(base, {2, 3})  # two bad batches in a row (an fp16 overflow, say), fewer than max_bad_steps
    result = train(cfg, base=base)
    assert result.reason == "finished" and result.step == 4, result.message
    events = list(read_events(tmp_path / "blip"))
    warnings = [e["message"] for e in events if e["type"] == "warning" and "skipped" in e["message"]]
    assert len(warnings) == 2 and "nan" in warnings[0]
    assert all(loss == loss for loss in result.losses)  # no NaN reached the network: every loss is finite
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "blip" / "blip.safetensors"))
    assert all(bool(t.float().isfinite().all()) for t in weights.values())


def test_nan_steps_past_the_limit_stop_with_the_last_good_weights(models, dataset, tmp_path) -> None:
    from safetensors.torch import load_file

    from train.loop import train
    from train.state import latest_state, load_progress

    cfg = tiny_config(models["sd1"] / "diffusers", dataset, tmp_path, "nan", "train.max_steps=8",
                      "train.max_bad_steps=1", "output.save_every_n_steps=1", "output.save_last_n=2")
    base = _base(cfg)
    _nan_output(base, set(range(3, 100)))  # from the third batch on, every loss is NaN
    result = train(cfg, base=base)
    run = tmp_path / "nan"
    assert result.reason == "error" and "fp16 VAE" in result.message and "train.max_bad_steps = 1" in result.message
    assert "2 optimizer step(s) in a row" in result.message and "state of step 2 were saved" in result.message
    state = latest_state(run)
    assert state is not None and load_progress(state).step == 2
    for name in ("nan-step00000001.safetensors", "nan-step00000002.safetensors"):  # the good saves are kept
        weights = load_file(str(run / name))
        assert all(bool(t.float().isfinite().all()) for t in weights.values())


@pytest.mark.parametrize("cut", ["single-file", "diffusers-unet", "diffusers-text-encoder"])
def test_a_truncated_base_checkpoint_is_refused_before_loading(models, dataset, tmp_path, capsys, cut) -> None:
    """A download that stopped at 60 %: a single-file checkpoint, or one part of a diffusers folder."""
    from tui.cli import main

    single = models["sd1"] / "tiny-sd1.safetensors"
    if cut == "single-file":
        model, broken = tmp_path / "cut.safetensors", tmp_path / "cut.safetensors"
        shutil.copyfile(single, model)
        extra = ["--set", f"model.config_dir={single.parent / 'config'}"]
    else:
        model = tmp_path / "cut-model"
        shutil.copytree(models["sd1"] / "diffusers", model)
        part = "unet/diffusion_pytorch_model.safetensors" if cut == "diffusers-unet" else "text_encoder/model.safetensors"
        broken, extra = model / part, []
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) * 6 // 10])
    code = main(["train", "--set", f"model.path={model}", *extra, "--set", f"dataset.path={dataset}",
                 "--set", f"output.dir={tmp_path}", "--set", "dataset.resolution=64",
                 "--set", "dataset.min_bucket_reso=64", "--set", "dataset.max_bucket_reso=128",
                 "--set", "train.max_steps=1", "--set", "sample.enabled=false",
                 "--set", "train.mixed_precision=no"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    assert "truncated or corrupted download" in err and "model.path" in err and str(broken) in err
    planted("truncated base checkpoint")


def test_dataset_deleted_mid_run(models, tmp_path) -> None:
    from train.loop import train

    data = make_dataset(tmp_path / "gone", broken=False)
    keep = tmp_path / "copy"
    shutil.copytree(data, keep)
    cfg = tiny_config(models["sd1"] / "diffusers", data, tmp_path, "gone", "train.max_steps=5",
                      "dataset.cache_latents=false")

    def delete_at_step_two(event: dict) -> None:
        if event["type"] == "step" and event["step"] == 2:
            shutil.rmtree(data)  # the user removed (or unmounted) the dataset while training
            planted("dataset folder deleted mid-run")

    result = train(cfg, listeners=[delete_at_step_two])
    assert result.reason == "error", result.message
    assert "can no longer be read" in result.message and "moved, deleted or unmounted" in result.message
    assert "state of step 2 were saved" in result.message
    shutil.copytree(keep, data)  # back again
    resumed = train(cfg, resume=tmp_path / "gone")
    assert resumed.reason == "finished" and resumed.step == 5, resumed.message


def test_run_directory_disk_full(models, dataset, tmp_path, capsys) -> None:
    from train.loop import train
    from train.state import latest_state, load_progress

    with tiny_disk(tmp_path / "disk", "96m") as disk:  # room for what the pre-flight estimates
        cfg = tiny_config(models["sd1"] / "diffusers", dataset, disk.path, "full", "train.max_steps=6",
                          "output.save_every_n_steps=2", "output.save_state=true")
        run = disk.path / "full"
        kept: dict[str, bytes] = {}

        def fill_after_the_first_save(event: dict) -> None:
            if event["type"] == "save" and event.get("kind") == "state" and event["step"] == 2:
                kept.update({p.name: p.read_bytes() for p in run.glob("*.safetensors")})
                disk.fill(2048)

        result = train(cfg, listeners=[fill_after_the_first_save])
        err = capsys.readouterr().err
        assert result.reason == "error", result.message
        assert f"no space left on {disk.path}" in result.message and "needs" in result.message
        assert "last complete state is step 2" in result.message and "Traceback" not in result.message
        assert err.count("cannot write") <= 1  # the run log: one line, not one per event
        assert {p.name: p.read_bytes() for p in run.glob("*.safetensors")} == kept  # previous saves intact
        state = latest_state(run)
        assert state is not None and load_progress(state).step == 2
        assert not list(run.glob("*.tmp")) and not list(run.glob(".kiln-tmp-*"))
        disk.unfill()
        resumed = train(cfg, resume=run)
        assert resumed.reason == "finished" and resumed.step == 6, resumed.message


def test_run_directory_too_small_is_refused_before_training(models, dataset, tmp_path) -> None:
    """A run directory on a disk without room for the run's saves: the pre-flight refuses it before the model
    loads, naming output.dir, the space the run needs and what is free; no LoRA or state is written."""
    from train.loop import train
    from train.state import latest_state

    with tiny_disk(tmp_path / "disk", "8m") as disk:
        cfg = tiny_config(models["sd1"] / "diffusers", dataset, disk.path, "small", "train.max_steps=6",
                          "output.save_every_n_steps=2", "output.save_state=true")
        result = train(cfg)
        assert result.reason == "error" and result.step == 0
        assert "output.dir" in result.message and "the run needs about" in result.message
        assert "is free" in result.message and "Traceback" not in result.message
        run = disk.path / "small"
        assert not list(run.glob("*.safetensors")) and latest_state(run) is None
