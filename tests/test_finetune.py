"""Full fine-tune mode (network.type = "full") on tiny models: the single-file checkpoint (same keys as the
base, loads in diffusers offline), the LoRA extracted at the end, the step in backward equal to the plain step,
the EMA, bf16 weights (stochastic rounding, fp32 masters) with an exact resume, the memory plan, bad configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_train_loop import make_dataset, tiny_config, tiny_models
from train.config import ConfigError, load_config
from train.rundir import read_events, request_stop

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sd1(request: pytest.FixtureRequest) -> Path:
    return tiny_models(Path(request.config.cache.mkdir("kiln-tiny-models")), ("sd1",))["sd1"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), broken=False)


def full_config(sd1: Path, dataset: Path, out: Path, name: str, *extra: str):
    """Full fine-tune of the tiny SD1 single file, 2 steps, fp32 saves, no gradient clipping (unless asked), at
    the tiny tests' learning rates (far above a real fine-tune's: accepted explicitly)."""
    return tiny_config(sd1 / "tiny-sd1.safetensors", dataset, out, name, "network.type=full", "train.max_steps=2",
                       "output.save_precision=float", "train.max_grad_norm=0", "train.allow_unusual_lr=true", *extra)


def unet_keys(tensors: dict) -> dict:
    return {k: v for k, v in tensors.items() if k.startswith("model.diffusion_model.")}


# ---------------------------------------------------------------------------------------------- the run
@pytest.mark.slow
def test_full_finetune_saves_a_loadable_checkpoint_and_extracts_a_lora(sd1, dataset, tmp_path):
    import diffusers
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    from train.loop import train
    from train.models.loading import offline

    cfg = full_config(sd1, dataset, tmp_path, "ft", "train.learning_rate=1e-2", "output.extract_dim=4",
                      "output.extract_conv_dim=2", "output.extract_min_diff=0", "output.extract_clamp_quantile=1")
    result = train(cfg)
    assert result.reason == "finished", result.message
    ckpt, lora = tmp_path / "ft" / "ft.safetensors", tmp_path / "ft" / "ft-lora4.safetensors"
    assert result.outputs == [str(ckpt), str(lora)]

    base = load_file(str(sd1 / "tiny-sd1.safetensors"))
    tuned = load_file(str(ckpt))
    assert tuned.keys() == base.keys()  # the layout A1111/ComfyUI read: the base checkpoint's own keys
    changed = {k for k in base if not torch.equal(base[k].float(), tuned[k].float())}
    assert any(k.startswith("model.diffusion_model.") for k in changed)
    assert any(k.startswith("cond_stage_model.") for k in changed)  # the text encoder was trained too
    assert not any(k.startswith("first_stage_model.") for k in changed)  # the VAE never is
    with safe_open(str(ckpt), "pt") as fh:
        meta = fh.metadata()
    assert meta["modelspec.architecture"] == "stable-diffusion-v1" and meta["ss_steps"] == "2"
    assert meta["kiln_finetune_weights"] == "trained"

    with offline():
        pipe = diffusers.StableDiffusionPipeline.from_single_file(
            str(ckpt), config=str(sd1 / "config"), local_files_only=True, safety_checker=None,
            requires_safety_checker=False)
    key = "model.diffusion_model.input_blocks.0.0.weight"
    assert torch.equal(pipe.unet.conv_in.weight.detach(), tuned[key])

    lora_sd = load_file(str(lora))
    assert any(k.startswith("lora_unet_") for k in lora_sd) and any(k.startswith("lora_te_") for k in lora_sd)
    convs = [v for k, v in lora_sd.items() if "resnets_0_conv1.lora_down" in k]
    assert convs and all(v.shape[0] == 2 and v.ndim == 4 for v in convs)  # LoCon at extract_conv_dim
    with safe_open(str(lora), "pt") as fh:
        assert '"dim": 4' in fh.metadata()["ss_kiln_extract"]
    from train.lora.grid import lora_inputs

    assert [i.path for i in lora_inputs([tmp_path / "ft"])] == [lora]  # the grid tests the LoRA, not the checkpoint
    events = list(read_events(tmp_path / "ft"))
    assert [e["kind"] for e in events if e["type"] == "save"] == ["final", "extract"]
    plan = [e["phase"] for e in events if e["type"] == "phase" and e["phase"].startswith("full fine-tune memory")]
    assert plan and "optimizer state (AdamW)" in plan[0]


@pytest.mark.slow
def test_step_in_backward_equals_the_plain_step_and_ema_is_the_moving_average(sd1, dataset, tmp_path):
    from safetensors.torch import load_file

    from train.loop import train

    unet_only = ("network.train_text_encoder=false", "finetune.ema=true", "finetune.ema_decay=0.99")
    plain = train(full_config(sd1, dataset, tmp_path, "plain", *unet_only, "finetune.save_ema=false",
                              "output.save_every_n_steps=1"))
    fused = train(full_config(sd1, dataset, tmp_path, "fused", *unet_only, "finetune.save_ema=false",
                              "finetune.fused_backward=true"))
    ema = train(full_config(sd1, dataset, tmp_path, "ema", *unet_only))
    assert plain.reason == fused.reason == ema.reason == "finished", (plain.message, fused.message, ema.message)
    assert plain.losses == pytest.approx(fused.losses, abs=1e-6)
    w1 = unet_keys(load_file(str(tmp_path / "plain" / "plain-step00000001.safetensors")))
    w2 = unet_keys(load_file(str(tmp_path / "plain" / "plain.safetensors")))
    w2_fused = unet_keys(load_file(str(tmp_path / "fused" / "fused.safetensors")))
    assert max(float((w2[k] - w2_fused[k]).abs().max()) for k in w2) < 1e-6
    # diffusers' EMAModel: decay 0 at the first step (the average is the weights), then min(0.99, (1+1)/(10+1))
    e2 = unet_keys(load_file(str(tmp_path / "ema" / "ema.safetensors")))
    d = 2 / 11
    moved = max(float((w2[k] - w1[k]).abs().max()) for k in w2)
    error = max(float((e2[k] - (d * w1[k] + (1 - d) * w2[k])).abs().max()) for k in w2)
    assert moved > 1e-4 and error < 1e-6 * max(1.0, moved) + 1e-7, (moved, error)


@pytest.mark.slow
@pytest.mark.parametrize("update", ["stochastic", "master"])
def test_bf16_weights_train_and_resume_exactly(sd1, dataset, tmp_path, update):
    import torch
    from safetensors.torch import load_file

    from train.loop import train

    # stochastic rounding with the leanest combination (Adafactor, the step in backward); masters with AdamW
    lean = ("train.optimizer=Adafactor", "finetune.fused_backward=true") if update == "stochastic" else ()
    extra = ("finetune.weights=bf16", f"finetune.bf16_update={update}", "finetune.ema=true",
             "network.train_text_encoder=false", "train.max_steps=3", "train.learning_rate=1e-3", *lean)
    samples = ("sample.enabled=true", "sample.prompts=['alice woman']", "sample.steps=1", "sample.every_n_steps=2",
               "sample.width=64", "sample.height=64")
    straight = train(full_config(sd1, dataset, tmp_path, "straight", *extra, *samples))
    assert straight.reason == "finished", straight.message
    # samples render the bf16 UNet beside the fp32 VAE and text encoder (without mixed precision too)
    assert [e["step"] for e in read_events(tmp_path / "straight") if e["type"] == "sample"] == [2]
    base = unet_keys(load_file(str(sd1 / "tiny-sd1.safetensors")))
    trained = unet_keys(load_file(str(tmp_path / "straight" / "straight.safetensors")))
    assert any(not torch.equal(base[k], trained[k]) for k in base)

    cfg = full_config(sd1, dataset, tmp_path, "resumed", *extra)
    run = tmp_path / "resumed"

    def stop_after_one(event: dict) -> None:
        if event["type"] == "step" and event["step"] == 1:
            request_stop(run)

    first = train(cfg, listeners=[stop_after_one])
    assert first.reason == "stopped" and first.step == 1
    extra_state = load_file(str(run / "state" / "extra.safetensors"))
    assert "ema.0" in extra_state and ("master.0" in extra_state) == (update == "master")
    second = train(cfg, resume=run)
    assert second.reason == "finished", second.message
    assert first.losses + second.losses == pytest.approx(straight.losses, abs=1e-6)
    resumed = unet_keys(load_file(str(run / "resumed.safetensors")))
    assert all(torch.equal(trained[k], resumed[k]) for k in trained)  # the EMA, restored exactly


# ---------------------------------------------------------------------------------------------- the pieces
def test_stochastic_rounding_is_unbiased_and_keeps_small_updates():
    import torch

    from train.finetune.precision import stochastic_round_bf16

    exact = torch.tensor([1.0, -2.5, 0.0, 3.140625], dtype=torch.float32)
    assert torch.equal(stochastic_round_bf16(exact).float(), exact)
    gen = torch.Generator().manual_seed(0)
    value = torch.full((200_000,), 1.0 + 2**-10)  # a quarter of a bf16 step above 1.0
    rounded = stochastic_round_bf16(value, gen).float()
    assert set(rounded.unique().tolist()) == {1.0, 1.0078125}
    assert float(rounded.mean()) == pytest.approx(1.0 + 2**-10, abs=2e-5)
    # 100 updates of a quarter step each: nearest rounding loses all of them, stochastic keeps them on average
    nearest = torch.ones(10_000, dtype=torch.bfloat16)
    stochastic = torch.ones(10_000, dtype=torch.bfloat16)
    for _ in range(100):
        nearest = (nearest.float() + 2**-9).to(torch.bfloat16)
        stochastic = stochastic_round_bf16(stochastic.float() + 2**-9, gen)
    assert torch.equal(nearest, torch.ones_like(nearest))
    assert float(stochastic.float().mean()) == pytest.approx(1.0 + 100 * 2**-9, rel=2e-3)


def test_fused_backward_steps_each_tensor_like_the_optimizer():
    import torch

    from train.finetune.fused import FusedBackward

    def model_and_optimizer():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        params = list(model.parameters())
        groups = [{"params": params[:2], "lr": 0.1}, {"params": params[2:], "lr": 0.05}]
        return model, params, torch.optim.AdamW(groups, weight_decay=0.01)

    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    plain, plain_params, opt = model_and_optimizer()
    fused, fused_params, fused_opt = model_and_optimizer()
    FusedBackward(fused_opt, fused_params, lambda p: p, max_grad_norm=0)
    for _ in range(3):
        plain(x).square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        fused(x).square().mean().backward()
        assert all(p.grad is None for p in fused_params)  # stepped and freed inside backward
    for a, b in zip(plain_params, fused_params, strict=True):
        assert torch.allclose(a, b, atol=1e-7)
    assert all(len(g["params"]) == 2 for g in fused_opt.param_groups)  # the groups are whole again


def test_memory_plan_counts_what_each_option_costs():
    from train.finetune.config import FinetuneSection
    from train.finetune.memory import plan_memory

    n = 1_000_000
    plain = plan_memory(n, 0, finetune=FinetuneSection(), optimizer="AdamW", compute_bytes=2)
    assert plain.on("device") == n * (4 + 4 + 8)  # fp32 weights, fp32 gradients, two fp32 moments
    lean = plan_memory(n, 0, finetune=FinetuneSection(weights="bf16", fused_backward=True), optimizer="AdamW8bit",
                       compute_bytes=2)
    assert lean.on("device") == n * (2 + 2)  # bf16 weights, 8-bit moments, no full set of gradients
    master = plan_memory(n, 10, finetune=FinetuneSection(weights="bf16", bf16_update="master", ema=True,
                                                         ema_on_cpu=True), optimizer="Adafactor", compute_bytes=2)
    assert master.on("device") == n * (2 + 4 + 4) + 20 and master.on("cpu") == n * 4
    with_vae = plan_memory(n, 0, finetune=FinetuneSection(), optimizer="SGD", compute_bytes=2, vae=5)
    assert with_vae.on("device") == n * (4 + 4) + 5 * 4  # SGD without momentum keeps no state; the VAE is fp32
    assert any("Adafactor" in line for line in master.lines())


# ---------------------------------------------------------------------------------------------- bad configs
@pytest.mark.parametrize(("overrides", "message"), [
    (["finetune.ema=true"], "finetune.ema: true is not allowed: the [finetune] options apply to a full fine-tune"),
    (["output.extract_dim=64"], "output.extract_dim: 64 is not allowed: extracting a LoRA follows a full fine-tune"),
    (["network.type=full", "network.dropout=0.1"], "network.dropout: 0.1 is not allowed: a LoRA option"),
    (["network.type=full", "finetune.fused_backward=true", "train.gradient_accumulation_steps=4"],
     "cannot accumulate gradients over 4 batches"),
    (["network.type=full", "finetune.weights=bf16", "train.mixed_precision=fp16"],
     'needs train.mixed_precision = "bf16"'),
    (["network.type=full", "output.extract_conv_dim=8"], "output.extract_conv_dim: 8 is not allowed: needs output."),
    (["network.type=full", "network.conv_dim=8"], "a full fine-tune has no rank"),
])
def test_bad_finetune_configs_name_the_field_and_the_fix(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[f"model.path={tmp_path}", f"dataset.path={tmp_path}", *overrides])
    assert message in str(err.value)


def test_check_judges_a_full_finetune_by_its_own_rates_sizes_and_memory(sd1, dataset, tmp_path, capsys):
    from train.cli import main

    common = [f"--set=model.path={sd1 / 'tiny-sd1.safetensors'}", f"--set=model.config_dir={sd1 / 'config'}",
              f"--set=dataset.path={dataset}", "--set=dataset.resolution=64", "--set=dataset.min_bucket_reso=64",
              f"--set=output.dir={tmp_path}", "--set=network.type=full", "--check"]
    rc = main([*common, "--set=train.learning_rate=1e-4"])
    err = capsys.readouterr().err
    assert rc != 0 and "train.learning_rate: 0.0001 is high for a full fine-tune" in err and "1e-06" in err
    rc = main([*common, "--set=train.learning_rate=1e-6", "--set=finetune.ema=true"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "checkpoint save" in out  # the disk estimate counts whole checkpoints, not LoRA files
    # the memory plan, said up front
    assert "memory:" in out and "EMA (fp32, decay 0.9999)" in out and "optimizer state (AdamW)" in out
