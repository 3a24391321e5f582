"""NetworkConfig validation and the Network API the training loop uses."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from pydantic import ValidationError

from tests.test_network_helpers import randomize, tiny, unet_inputs, unet_output
from train.network import NetworkConfig, create_network
from train.network.network import block_lr_weights


@pytest.fixture(scope="module")
def sd1():
    return tiny("sd1")


# ------------------------------------------------------------------ config
@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        ({"type": "lycoris"}, "type", "'lora'"),
        ({"dim": 0}, "dim", "greater than or equal to 1"),
        ({"alpha": -1}, "alpha", "greater than 0"),
        ({"dropout": 1.5}, "dropout", "less than 1"),
        ({"conv_dim": 8}, "", "set type = 'locon'"),
        ({"train_unet": False, "train_text_encoder": False}, "", "trains nothing"),
        ({"down_lr_weight": "wavy"}, "down_lr_weight", "not a block lr preset"),
        ({"down_lr_weight": "sine+x"}, "down_lr_weight", "must be a number"),
        ({"up_lr_weight": [1, -1]}, "up_lr_weight", ">= 0"),
        ({"scale_weight_norms": 0}, "scale_weight_norms", "greater than 0"),
        ({"dimm": 4}, "dimm", "Extra inputs"),
    ],
)
def test_config_errors_name_field_and_fix(kwargs, field, words):
    with pytest.raises(ValidationError) as err:
        NetworkConfig(**kwargs)
    text = str(err.value)
    assert field in text and words in text


def test_config_defaults_and_derived_values():
    cfg = NetworkConfig()
    assert (cfg.type, cfg.train_unet, cfg.train_text_encoder, cfg.init_from) == ("lora", True, True, None)
    assert cfg.effective_conv_dim is None
    locon = NetworkConfig(type="locon", dim=16, alpha=8)
    assert (locon.effective_conv_dim, locon.effective_conv_alpha) == (16, 8)  # conv follows dim/alpha
    kohya = NetworkConfig(type="locon", dim=16, alpha=8, conv_dim=4)
    assert (kohya.effective_conv_dim, kohya.effective_conv_alpha) == (4, 1.0)  # kohya: conv_alpha defaults 1
    assert NetworkConfig(type="loha").trains_convs is False
    assert NetworkConfig(type="loha", conv_dim=4).trains_convs is True


def test_importing_the_package_does_not_import_torch():
    code = "import sys, train.network; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


# ------------------------------------------------------------------ forward hooks
def test_apply_keeps_base_weights_and_multiplier_scales(sd1):
    before = {k: v.clone() for k, v in sd1.unet.state_dict().items()}
    net = create_network("sd1", sd1.unet, sd1.text_encoders, NetworkConfig(type="locon", dim=4, conv_dim=2))
    inputs = unet_inputs(sd1)
    base = unet_output(sd1, inputs)
    net.apply()
    assert torch.equal(unet_output(sd1, inputs), base)  # fresh LoRA: up weights are zero
    randomize(net)
    full = unet_output(sd1, inputs)
    net.set_multiplier(0.0)
    assert torch.equal(unet_output(sd1, inputs), base)
    net.set_multiplier(1.0)
    assert torch.equal(unet_output(sd1, inputs), full)
    net.restore()
    assert torch.equal(unet_output(sd1, inputs), base)
    after = sd1.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(k.startswith("lora") for k in after)


def test_dropouts_act_only_in_training(sd1):
    cfg = NetworkConfig(dim=4, dropout=0.5, rank_dropout=0.5, module_dropout=0.5, train_text_encoder=False)
    net = create_network("sd1", sd1.unet, sd1.text_encoders, cfg)
    randomize(net)
    net.apply()
    try:
        inputs = unet_inputs(sd1)
        net.eval()
        a, b = unet_output(sd1, inputs), unet_output(sd1, inputs)
        assert torch.equal(a, b)
        net.train()
        torch.manual_seed(0)
        c = unet_output(sd1, inputs)
        assert not torch.equal(a, c)
    finally:
        net.restore()


def test_gradients_reach_only_the_network(sd1):
    net = create_network("sd1", sd1.unet, sd1.text_encoders, NetworkConfig(dim=4))
    net.apply()
    try:
        sd1.unet.requires_grad_(False)
        for te in sd1.text_encoders:
            te.requires_grad_(False)
        groups = net.trainable_params(1e-4, 5e-5)
        inputs = unet_inputs(sd1)
        enc = sd1.text_encoders[0](inputs["ids"])[0]
        sd1.unet(inputs["x"], inputs["t"], enc).sample.square().mean().backward()
        ups = [m.lora_up.weight.grad for m in net.modules_list]
        assert all(g is not None and g.abs().sum() > 0 for g in ups)
        assert {g["name"]: g["lr"] for g in groups} == {"textencoder": 5e-5, "unet": 1e-4}
        assert sum(len(g["params"]) for g in groups) == 2 * len(net.modules_list)
    finally:
        net.restore()


def test_trainable_params_without_text_encoder(sd1):
    net = create_network("sd1", sd1.unet, sd1.text_encoders, NetworkConfig(dim=4, train_text_encoder=False))
    assert not net.text_encoder_modules
    assert [g["name"] for g in net.trainable_params(1e-4, 5e-5)] == ["unet"]
    both = create_network("sd1", sd1.unet, sd1.text_encoders, NetworkConfig(dim=4))
    assert [g["name"] for g in both.trainable_params(1e-4, 0)] == ["unet"]  # lr 0: left out, as kohya


# ------------------------------------------------------------------ block-wise learning rates
def test_block_lr_weights_like_kohya():
    sd = block_lr_weights("sd1", NetworkConfig(down_lr_weight=[0.5] * 12, mid_lr_weight=[2.0], up_lr_weight="zeros+1"))
    assert sd == [0.5] * 12 + [2.0] + [1.0] * 12
    xl = block_lr_weights("sdxl", NetworkConfig(down_lr_weight="linear", mid_lr_weight=[1, 0, 1]))
    assert len(xl) == 23 and xl[0] == 1.0 and xl[-1] == 1.0
    assert xl[1:10] == pytest.approx([i / 8 for i in range(9)]) and xl[10:13] == [1, 0, 1]
    short = block_lr_weights("sd1", NetworkConfig(up_lr_weight=[0.1, 0.2]))
    assert short[13:] == [0.1, 0.2] + [1.0] * 10
    assert block_lr_weights("sd1", NetworkConfig(down_lr_weight=[0.05, 1], block_lr_zero_threshold=0.1))[0] == 0.0
    assert block_lr_weights("sd1", NetworkConfig()) is None
    with pytest.raises(ValueError, match="13 values given, this model has 12 blocks"):
        block_lr_weights("sd1", NetworkConfig(down_lr_weight=[1.0] * 13))


def test_block_lr_groups_and_zero_blocks(sd1):
    # tiny SD1: down_blocks.0 (attentions) -> blocks 1, 2; zero the first down block entirely
    cfg = NetworkConfig(dim=4, down_lr_weight=[1, 0, 0.5], train_text_encoder=False)
    net = create_network("sd1", sd1.unet, sd1.text_encoders, cfg)
    names = {m.lora_name for m in net.modules_list}
    assert not any(n.startswith("lora_unet_down_blocks_0_attentions_0_") for n in names)
    assert any(n.startswith("lora_unet_down_blocks_0_attentions_1_") for n in names)
    groups = {g["name"]: g["lr"] for g in net.trainable_params(1e-3, None)}
    assert groups["unet_block2"] == pytest.approx(5e-4)
    assert "unet_block1" not in groups and groups["unet_block12"] == pytest.approx(1e-3)


# ------------------------------------------------------------------ max-norm regularisation
def _kohya_max_norm(sd: dict, max_norm: float) -> tuple[int, float, float]:
    """kohya's apply_max_norm_regularization, written out independently on a state dict copy."""
    scaled, norms = 0, []
    for key in [k for k in sd if k.endswith("lora_down.weight")]:
        down, up = sd[key], sd[key.replace("lora_down", "lora_up")]
        alpha = sd[key.replace("lora_down.weight", "alpha")]
        if down.dim() == 2:
            updown = up @ down
        elif down.shape[2:] == (1, 1):
            updown = (up.squeeze(3).squeeze(2) @ down.squeeze(3).squeeze(2)).unsqueeze(2).unsqueeze(3)
        else:
            updown = torch.nn.functional.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3)
        updown = updown * (alpha / down.shape[0])
        norm = updown.norm().clamp(min=max_norm / 2)
        ratio = torch.clamp(norm, max=max_norm) / norm
        if ratio != 1:
            scaled += 1
            sd[key] *= ratio**0.5
            sd[key.replace("lora_down", "lora_up")] *= ratio**0.5
        norms.append((updown.norm() * ratio).item())
    return scaled, sum(norms) / len(norms), max(norms)


def test_apply_max_norm_matches_kohya(sd1):
    net = create_network("sd1", sd1.unet, sd1.text_encoders,
                         NetworkConfig(type="locon", dim=4, alpha=2, conv_dim=2, conv_alpha=1))
    randomize(net, scale=0.2)
    reference = {k: v.clone() for k, v in net.state_dict_kohya().items()}
    expected = _kohya_max_norm(reference, 0.5)
    got = net.apply_max_norm(0.5)
    assert got[0] == expected[0] and 0 < got[0] <= len(net.modules_list)
    assert got[1] == pytest.approx(expected[1], rel=1e-5) and got[2] == pytest.approx(expected[2], rel=1e-5)
    assert got[2] <= 0.5 + 1e-5
    for key, value in net.state_dict_kohya().items():
        assert torch.allclose(value, reference[key], atol=1e-6), key
