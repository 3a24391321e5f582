"""kohya's network options on tiny models: LoRA+ groups, one rate per SDXL text encoder, block-wise dims and
alphas (kohya's 25 / 23-block layout), and DyLoRA (its training rule, and files that load as a kohya LoRA)."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from tests.test_network_helpers import randomize, tiny, unet_inputs, unet_output
from train.network import NetworkConfig, create_network
from train.network.dylora import DyLoRAModule
from train.network.load import load_into_network
from train.network.save import network_metadata
from train.optim import create_optimizer


@pytest.fixture(scope="module")
def sd1():
    return tiny("sd1")


@pytest.fixture(scope="module")
def sdxl():
    return tiny("sdxl")


# ------------------------------------------------------------------ LoRA+
def test_loraplus_puts_lora_up_in_groups_at_ratio_times_the_rate(sd1) -> None:
    cfg = NetworkConfig(dim=4, loraplus_lr_ratio=16, loraplus_text_encoder_lr_ratio=4)
    net = create_network("sd1", sd1.unet, sd1.text_encoders, cfg)
    groups = net.trainable_params(1e-4, 5e-5)
    assert [(g["name"], g["lr"]) for g in groups] == pytest.approx(
        [("textencoder", 5e-5), ("textencoder plus", 2e-4), ("unet", 1e-4), ("unet plus", 1.6e-3)])
    ups = {id(m.lora_up.weight) for m in net.modules_list}
    assert all(id(p) in ups for g in groups if g["name"].endswith("plus") for p in g["params"])
    assert not any(id(p) in ups for g in groups if not g["name"].endswith("plus") for p in g["params"])
    # the effect: one SGD step moves every lora_up 16x (UNet) / 4x (TE) as far as without LoRA+
    net.apply()
    try:
        randomize(net, seed=3)
        start = {k: v.clone() for k, v in net.state_dict_kohya().items()}
        opt = create_optimizer("SGD", net.trainable_params(1.0, 0.5), 1.0, {})  # large rates: moves above roundoff
        inputs = unet_inputs(sd1)
        enc = sd1.text_encoders[0](inputs["ids"])[0]
        sd1.unet(inputs["x"], inputs["t"], enc).sample.square().mean().backward()
        grads = {f"{m.lora_name}.lora_up.weight": m.lora_up.weight.grad.clone() for m in net.modules_list}
        opt.step()
        for key, grad in grads.items():
            lr = 16.0 if key.startswith("lora_unet") else 0.5 * 4
            moved = start[key] - net.state_dict_kohya()[key]
            assert torch.allclose(moved, lr * grad, rtol=1e-3, atol=1e-8), key
    finally:
        net.restore()
    args = json.loads(network_metadata(cfg, "sd1")["ss_network_args"])
    assert args["loraplus_lr_ratio"] == "16.0" and args["loraplus_text_encoder_lr_ratio"] == "4.0"


def test_loraplus_refuses_algorithms_without_lora_up() -> None:
    with pytest.raises(ValidationError, match="loha has none"):
        NetworkConfig(type="loha", loraplus_lr_ratio=16)


# ------------------------------------------------------------------ SDXL: one rate per text encoder
def test_sdxl_text_encoders_each_get_their_rate(sdxl) -> None:
    net = create_network("sdxl", sdxl.unet, sdxl.text_encoders, NetworkConfig(dim=4))
    groups = {g["name"]: g for g in net.trainable_params(1e-4, (4e-5, 1e-5))}
    assert {n: g["lr"] for n, g in groups.items()} == {"textencoder1": 4e-5, "textencoder2": 1e-5, "unet": 1e-4}
    te1 = {id(p) for m in net.modules_list if m.lora_name.startswith("lora_te1_") for p in m.parameters()}
    te2 = {id(p) for m in net.modules_list if m.lora_name.startswith("lora_te2_") for p in m.parameters()}
    assert {id(p) for p in groups["textencoder1"]["params"]} == te1 and te1
    assert {id(p) for p in groups["textencoder2"]["params"]} == te2 and te2
    # 0 leaves one encoder untrained; equal rates stay one group (as before)
    assert [g["name"] for g in net.trainable_params(1e-4, (0.0, 1e-5))] == ["textencoder2", "unet"]
    assert [g["name"] for g in net.trainable_params(1e-4, (1e-5, 1e-5))] == ["textencoder", "unet"]


def test_text_encoder_lr_list_in_the_config() -> None:
    from train.config import ConfigError, load_config

    base = ["model.path=/m.safetensors", "dataset.path=/d"]
    cfg = load_config(overrides=[*base, "train.text_encoder_lr=[4e-5, 1e-5]"])
    assert cfg.text_encoder_lrs == (4e-5, 1e-5) and cfg.trains_text_encoder
    assert load_config(overrides=[*base, "train.text_encoder_lr=[3e-5]"]).text_encoder_lrs == (3e-5,)
    assert not load_config(overrides=[*base, "train.text_encoder_lr=[0, 0]"]).trains_text_encoder
    with pytest.raises(ConfigError, match=r"text_encoder_lr: \[1.0, 2.0, 3.0\] is not allowed: give one rate"):
        load_config(overrides=[*base, "train.text_encoder_lr=[1, 2, 3]"])


# ------------------------------------------------------------------ block dims / alphas
def test_block_dims_and_alphas_follow_kohyas_layout(sd1) -> None:
    dims = [8] * 25
    dims[1], dims[2], dims[12] = 2, 0, 6  # IN01 rank 2, IN02 none, MID rank 6
    alphas = [4.0] * 25
    alphas[1] = 1.0
    cfg = NetworkConfig(dim=4, alpha=2, block_dims=dims, block_alphas=alphas)
    net = create_network("sd1", sd1.unet, sd1.text_encoders, cfg)
    ranks = {m.lora_name: (m.lora_dim, float(m.alpha)) for m in net.modules_list}
    block1 = [r for n, r in ranks.items() if n.startswith("lora_unet_down_blocks_0_attentions_0_")]
    assert block1 and set(block1) == {(2, 1.0)}
    assert not any(n.startswith("lora_unet_down_blocks_0_attentions_1_") for n in ranks)  # rank 0: no modules
    assert {r for n, r in ranks.items() if n.startswith("lora_unet_mid_block_")} == {(6, 4.0)}
    assert {r for n, r in ranks.items() if n.startswith("lora_unet_up_blocks_1_")} == {(8, 4.0)}
    assert {r for n, r in ranks.items() if n.startswith("lora_te_")} == {(4, 2.0)}  # text encoder keeps dim
    saved = net.state_dict_kohya()
    name = next(n for n in ranks if n.startswith("lora_unet_down_blocks_0_attentions_0_"))
    assert saved[f"{name}.lora_down.weight"].shape[0] == 2 and float(saved[f"{name}.alpha"]) == 1.0
    args = json.loads(network_metadata(cfg, "sd1")["ss_network_args"])
    assert args["block_dims"].split(",")[:3] == ["8", "2", "0"] and len(args["block_alphas"].split(",")) == 25


def test_conv_block_dims_for_locon(sd1) -> None:
    conv = [0] * 25
    conv[4] = 3  # down_blocks.1 resnets.0 (IN04)
    cfg = NetworkConfig(type="locon", dim=4, block_dims=[4] * 25, conv_block_dims=conv)
    net = create_network("sd1", sd1.unet, None, cfg)
    convs = {m.lora_name: m.lora_dim for m in net.modules_list if m.lora_down.weight.dim() == 4
             and m.lora_down.weight.shape[2:] != (1, 1)}
    assert convs and all(n.startswith("lora_unet_down_blocks_1_resnets_0_") for n in convs)
    assert set(convs.values()) == {3}
    assert {float(m.alpha) for m in net.modules_list if m.lora_name in convs} == {1.0}  # kohya's conv default


def test_block_dims_validation(sdxl) -> None:
    with pytest.raises(ValidationError, match="24 values given: kohya's layout has 25 blocks for SD1/SD2 and 23"):
        NetworkConfig(block_dims=[4] * 24)
    with pytest.raises(ValidationError, match="block_alphas needs block_dims"):
        NetworkConfig(block_alphas=[1.0] * 25)
    with pytest.raises(ValidationError, match="conv_block_dims: 3x3 convs are trained by type 'locon'"):
        NetworkConfig(block_dims=[4] * 25, conv_block_dims=[4] * 25)
    with pytest.raises(ValueError, match="network.block_dims: 25 values given, sdxl has 23 blocks"):
        create_network("sdxl", sdxl.unet, None, NetworkConfig(block_dims=[4] * 25))
    assert NetworkConfig(block_dims="2,4,4" + ",4" * 22).block_dims == [2, 4, 4] + [4] * 22  # kohya's string form


# ------------------------------------------------------------------ DyLoRA
def test_dylora_trains_one_rank_block_per_step_with_kohyas_scale() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(6, 5)
    module = DyLoRAModule("lora_unet_x", linear, lora_dim=8, alpha=4, unit=2)
    module.apply_to()
    with torch.no_grad():
        for p in module.lora_B:
            p.normal_()
    module.train()
    x = torch.randn(3, 6)
    torch.manual_seed(5)
    b = module.trained_rank()
    torch.manual_seed(5)
    out = linear(x)
    out.sum().backward()
    assert b % 2 == 0 and 0 <= b < 8
    grads = [i for i, p in enumerate(module.lora_A) if p.grad is not None]
    assert grads == [b, b + 1]  # only the drawn unit of ranks learns this step
    assert all(p.grad is None for i, p in enumerate(module.lora_B) if i not in (b, b + 1))
    with torch.no_grad():
        down = torch.cat(tuple(module.lora_A))
        up = torch.cat(tuple(module.lora_B), dim=1)
        plain = torch.nn.functional.linear(x, linear.weight, linear.bias)
        expected = plain + x @ down.T @ up.T * (4 / 8) * (8 / (b + 2)) ** 0.5  # kohya's forward
        assert torch.allclose(out, expected, atol=1e-5)
        module.eval()
        assert torch.allclose(linear(x), plain + x @ down.T @ up.T * 0.5, atol=1e-5)  # as a rank-8 LoRA


def test_dylora_file_loads_as_a_kohya_lora(sd1) -> None:
    cfg = NetworkConfig(type="dylora", dim=4, alpha=2, dylora_unit=2, conv_dim=4)
    dy = create_network("sd1", sd1.unet, sd1.text_encoders, cfg)
    randomize(dy, seed=7, scale=0.1)
    tensors = dy.state_dict_kohya()
    convs = [k for k, v in tensors.items() if k.endswith("lora_down.weight") and v.dim() == 4]
    assert convs and any(tensors[k].shape[2:] == (3, 3) for k in convs)  # 3x3 convs too (conv_dim)
    assert not any(".lora_A." in k for k in tensors)  # kohya's keys, LoRA shapes
    assert network_metadata(cfg, "sd1")["ss_network_module"] == "networks.dylora"
    assert json.loads(network_metadata(cfg, "sd1")["ss_network_args"])["unit"] == "2"
    plain = create_network("sd1", sd1.unet, sd1.text_encoders, NetworkConfig(type="locon", dim=4, alpha=2,
                                                                              conv_dim=4, conv_alpha=1))
    load_into_network(plain, tensors)  # every key and shape matches a kohya LoCon of that rank
    inputs = unet_inputs(sd1)
    dy.eval()
    dy.apply()
    try:
        with_dylora = unet_output(sd1, inputs)
    finally:
        dy.restore()
    plain.apply()
    try:
        with_plain = unet_output(sd1, inputs)
    finally:
        plain.restore()
    assert torch.allclose(with_dylora, with_plain, atol=1e-5)
    again = create_network("sd1", sd1.unet, sd1.text_encoders, cfg)
    load_into_network(again, tensors)  # and back into a DyLoRA network (init_from)
    assert all(torch.equal(v, again.state_dict_kohya()[k]) for k, v in tensors.items())


def test_dylora_rules() -> None:
    with pytest.raises(ValidationError, match="dim: 6 is not a multiple of dylora_unit 4"):
        NetworkConfig(type="dylora", dim=6, dylora_unit=4)
    with pytest.raises(ValidationError, match="DyLoRA trains convs at dim"):
        NetworkConfig(type="dylora", dim=8, conv_dim=4)
    with pytest.raises(ValidationError, match="unit"):  # kohya's network_args key: --from-kohya maps it
        NetworkConfig.model_validate({"type": "dylora", "dim": 8, "unit": 4})
