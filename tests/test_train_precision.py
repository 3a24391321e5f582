"""full_fp16 / full_bf16 (the network in the mixed-precision dtype) and fp8_base (frozen weights stored in
float8, each layer up-cast while it runs) on a tiny SD1 model on the CPU."""

from __future__ import annotations

import pytest
import torch

from tests.test_network_helpers import randomize, tiny, unet_inputs, unet_output
from train.config import ConfigError, TrainSection, load_config
from train.errors import TrainingError
from train.network import NetworkConfig, create_network
from train.precision import network_dtype, store_in_fp8


def test_fp8_base_stores_float8_and_the_output_stays_close() -> None:
    reference = tiny("sd1")
    model = tiny("sd1")  # the same seed: identical weights
    inputs = unet_inputs(reference)
    before = unet_output(reference, inputs)
    assert store_in_fp8(model.unet) > 20 and store_in_fp8(model.text_encoders[0]) > 10
    linear = model.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    conv = model.unet.down_blocks[0].resnets[0].conv1
    assert linear.weight.dtype == torch.float8_e4m3fn and conv.weight.dtype == torch.float8_e4m3fn
    te_linear = model.text_encoders[0].text_model.encoder.layers[0].self_attn.q_proj \
        if hasattr(model.text_encoders[0], "text_model") else model.text_encoders[0].encoder.layers[0].self_attn.q_proj
    assert te_linear.weight.dtype == torch.float8_e4m3fn
    stored = sum(p.numel() for p in model.unet.parameters() if p.dtype == torch.float8_e4m3fn)
    assert stored > 0.9 * sum(p.numel() for p in model.unet.parameters())  # norms and biases-only layers aside
    after = unet_output(model, inputs)
    assert linear.weight.dtype == torch.float8_e4m3fn  # back to storage after the forward
    error = (after - before).norm() / before.norm()
    assert 0 < error < 0.1, error  # e4m3's 3 mantissa bits: a few percent
    # a LoRA hooked onto float8 layers trains in float32
    net = create_network("sd1", model.unet, model.text_encoders, NetworkConfig(dim=4))
    net.apply()
    try:
        randomize(net, seed=2)
        enc = model.text_encoders[0](inputs["ids"])[0]
        model.unet(inputs["x"], inputs["t"], enc).sample.square().mean().backward()
        grads = [m.lora_down.weight.grad for m in net.modules_list]
        assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    finally:
        net.restore()


def test_full_precision_options_need_their_mixed_precision() -> None:
    assert network_dtype(TrainSection(), "no") == torch.float32
    assert network_dtype(TrainSection(full_bf16=True, mixed_precision="bf16"), "bf16") == torch.bfloat16
    assert network_dtype(TrainSection(full_fp16=True, mixed_precision="fp16"), "fp16") == torch.float16
    with pytest.raises(TrainingError, match=r"train.full_bf16: true is not allowed: it needs mixed precision bf16, "
                                            r"and this run's is 'no'"):
        network_dtype(TrainSection(full_bf16=True), "no")  # auto resolved to no (CPU)
    base = ["model.path=/m.safetensors", "dataset.path=/d"]
    with pytest.raises(ConfigError, match="train.full_fp16: true is not allowed: it needs mixed_precision = \"fp16\""):
        load_config(overrides=[*base, "train.full_fp16=true", "train.mixed_precision=bf16"])
    with pytest.raises(ConfigError, match="full_fp16 and full_bf16 exclude each other"):
        load_config(overrides=[*base, "train.full_fp16=true", "train.full_bf16=true"])


def test_full_fp16_lets_the_scaler_unscale_fp16_gradients() -> None:
    from types import SimpleNamespace

    from train.processes import allow_fp16_gradients

    def step(patched: bool) -> torch.Tensor:
        weight = torch.nn.Parameter(torch.ones(4, dtype=torch.float16))
        opt = torch.optim.SGD([weight], lr=0.5)
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
        if patched:
            allow_fp16_gradients(SimpleNamespace(scaler=scaler))
        scaler.scale((weight.float() * 2).sum()).backward()
        scaler.unscale_(opt)  # torch refuses fp16 gradients here unless patched (kohya's full_fp16 patch)
        scaler.step(opt)
        return weight.detach()

    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients"):
        step(patched=False)
    assert step(patched=True).tolist() == [0.0, 0.0, 0.0, 0.0]  # 1 - 0.5 * 2: the true, unscaled gradient
    allow_fp16_gradients(SimpleNamespace(scaler=None))  # no scaler (CPU, bf16): nothing to do
