"""kohya module set and names on full-size SD1.5 / SD2 / SDXL (meta device: no memory, no weights)."""

from __future__ import annotations

import re

import pytest
import torch

from tests.test_network_helpers import meta_models
from train.network import NetworkConfig, create_network
from train.network.targets import diffusers_to_sgm, text_encoder_path


@pytest.fixture(scope="module")
def sd15():
    return meta_models("sd1")


@pytest.fixture(scope="module")
def sdxl():
    return meta_models("sdxl")


def _names(network) -> set[str]:
    return {k.split(".")[0] for k in network.state_dict_kohya()}


def _module_count(network, prefix: str) -> int:
    return sum(1 for m in network.modules_list if m.lora_name.startswith(prefix))


@pytest.mark.parametrize(
    ("which", "arch", "typ", "unet", "te"),
    [
        ("sd15", "sd1", "lora", 192, 72),
        ("sd15", "sd1", "locon", 278, 72),
        ("sdxl", "sdxl", "lora", 722, 264),
        ("sdxl", "sdxl", "locon", 788, 264),
    ],
)
def test_module_counts_match_kohya(request, which, arch, typ, unet, te):
    u, tes = request.getfixturevalue(which)
    net = create_network(arch, u, tes, NetworkConfig(type=typ, dim=4, alpha=1))
    assert len(net.unet_modules) == unet
    assert len(net.text_encoder_modules) == te
    assert len(_names(net)) == unet + te  # SD1.5: 264 / 350, SDXL: 986 / 1052


def test_sd2_counts(request):
    u, tes = meta_models("sd2")
    net = create_network("sd2", u, tes, NetworkConfig(type="locon", dim=4))
    assert len(net.unet_modules) == 278
    assert len(net.text_encoder_modules) == 23 * 6  # OpenCLIP-H as diffusers holds it: 23 layers
    assert all(n.startswith(("lora_unet_down_blocks", "lora_unet_mid_block", "lora_unet_up_blocks"))
               for n in _names(net) if n.startswith("lora_unet"))


SD15_KNOWN = [
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
    "lora_te_text_model_encoder_layers_0_self_attn_out_proj",
    "lora_te_text_model_encoder_layers_11_mlp_fc1",
    "lora_te_text_model_encoder_layers_11_mlp_fc2",
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0",
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k",
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_0_proj",
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_2",
    "lora_unet_down_blocks_0_attentions_0_proj_in",
    "lora_unet_mid_block_attentions_0_proj_out",
    "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_v",
    "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn1_to_q",
]
SD15_LOCON_KNOWN = [
    "lora_unet_down_blocks_0_resnets_0_conv1",
    "lora_unet_down_blocks_0_resnets_0_conv2",
    "lora_unet_down_blocks_0_resnets_0_time_emb_proj",
    "lora_unet_down_blocks_1_resnets_0_conv_shortcut",
    "lora_unet_down_blocks_0_downsamplers_0_conv",
    "lora_unet_mid_block_resnets_1_conv2",
    "lora_unet_up_blocks_0_resnets_2_conv_shortcut",
    "lora_unet_up_blocks_0_upsamplers_0_conv",
    "lora_unet_up_blocks_2_upsamplers_0_conv",
]
SDXL_KNOWN = [
    "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
    "lora_te1_text_model_encoder_layers_11_mlp_fc2",
    "lora_te2_text_model_encoder_layers_0_self_attn_k_proj",
    "lora_te2_text_model_encoder_layers_31_self_attn_out_proj",
    "lora_te2_text_model_encoder_layers_31_mlp_fc2",
    "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
    "lora_unet_input_blocks_4_1_proj_in",
    "lora_unet_input_blocks_5_1_transformer_blocks_1_ff_net_0_proj",
    "lora_unet_input_blocks_7_1_transformer_blocks_9_attn2_to_out_0",
    "lora_unet_input_blocks_8_1_proj_out",
    "lora_unet_middle_block_1_proj_in",
    "lora_unet_middle_block_1_transformer_blocks_9_ff_net_2",
    "lora_unet_output_blocks_0_1_transformer_blocks_0_attn1_to_k",
    "lora_unet_output_blocks_2_1_transformer_blocks_9_attn2_to_v",
    "lora_unet_output_blocks_5_1_proj_out",
]
SDXL_LOCON_KNOWN = [
    "lora_unet_input_blocks_1_0_in_layers_2",
    "lora_unet_input_blocks_1_0_out_layers_3",
    "lora_unet_input_blocks_1_0_emb_layers_1",
    "lora_unet_input_blocks_3_0_op",
    "lora_unet_input_blocks_4_0_skip_connection",
    "lora_unet_input_blocks_6_0_op",
    "lora_unet_input_blocks_7_0_skip_connection",
    "lora_unet_middle_block_0_in_layers_2",
    "lora_unet_middle_block_2_emb_layers_1",
    "lora_unet_output_blocks_0_0_skip_connection",
    "lora_unet_output_blocks_2_2_conv",
    "lora_unet_output_blocks_5_2_conv",
    "lora_unet_output_blocks_8_0_out_layers_3",
]


def test_sd15_names_are_kohya(sd15):
    lora = _names(create_network("sd1", *sd15, NetworkConfig(type="lora", dim=4)))
    locon = _names(create_network("sd1", *sd15, NetworkConfig(type="locon", dim=4)))
    assert set(SD15_KNOWN) <= lora
    assert not set(SD15_LOCON_KNOWN) & lora
    assert set(SD15_KNOWN + SD15_LOCON_KNOWN) <= locon
    assert not any("input_blocks" in n or "te1" in n for n in locon)


def test_sdxl_names_are_kohya_sgm(sdxl):
    lora = _names(create_network("sdxl", *sdxl, NetworkConfig(type="lora", dim=4)))
    locon = _names(create_network("sdxl", *sdxl, NetworkConfig(type="locon", dim=4)))
    assert set(SDXL_KNOWN) <= lora
    assert set(SDXL_KNOWN + SDXL_LOCON_KNOWN) <= locon
    assert not any(re.search(r"down_blocks|up_blocks|mid_block_|lora_te_", n) for n in locon)
    # the text encoders always use Hugging Face's text_model.encoder.layers.N form
    te = [n for n in lora if n.startswith("lora_te")]
    assert len(te) == 264
    assert all(re.fullmatch(r"lora_te[12]_text_model_encoder_layers_\d+_(self_attn_[qkv]_proj|"
                            r"self_attn_out_proj|mlp_fc[12])", n) for n in te)


@pytest.mark.parametrize("which,arch", [("sd15", "sd1"), ("sdxl", "sdxl")])
def test_qkv_out_trained_together_and_no_norms(request, which, arch):
    u, tes = request.getfixturevalue(which)
    names = _names(create_network(arch, u, tes, NetworkConfig(type="locon", dim=4)))
    assert not any("norm" in n or "layer_norm" in n or n.endswith("_in_layers_0") for n in names)
    for n in names:
        for a, b in (("_q_proj", ("_k_proj", "_v_proj", "_out_proj")), ("_to_q", ("_to_k", "_to_v", "_to_out_0"))):
            if n.endswith(a):
                assert all(n[: -len(a)] + s in names for s in b), n


@pytest.mark.parametrize("which,arch,typ", [("sd15", "sd1", "locon"), ("sdxl", "sdxl", "locon")])
def test_every_key_shape_fits_its_target(request, which, arch, typ):
    u, tes = request.getfixturevalue(which)
    net = create_network(arch, u, tes, NetworkConfig(type=typ, dim=8, alpha=4, conv_dim=4, conv_alpha=2))
    sd = net.state_dict_kohya()
    for m in net.modules_list:
        target = m.org_module
        down, up = sd[f"{m.lora_name}.lora_down.weight"], sd[f"{m.lora_name}.lora_up.weight"]
        alpha = sd[f"{m.lora_name}.alpha"]
        assert alpha.shape == ()
        if isinstance(target, torch.nn.Linear):
            assert down.shape == (8, target.in_features) and up.shape == (target.out_features, 8)
            assert float(alpha) == 4
        else:
            k = tuple(target.kernel_size)
            rank = 8 if k == (1, 1) else 4
            assert down.shape == (rank, target.in_channels, *k), m.lora_name
            assert up.shape == (target.out_channels, rank, 1, 1)
            assert float(alpha) == (4 if k == (1, 1) else 2)
    assert len(sd) == 3 * len(net.modules_list)


def test_text_encoder_names_ignore_transformers_layout():
    # transformers 4.x CLIPTextModel, 5.x CLIPTextModel (flattened), CLIPTextModelWithProjection: one name
    for path in ("text_model.encoder.layers.3.self_attn.q_proj", "encoder.layers.3.self_attn.q_proj"):
        assert text_encoder_path(path) == "text_model.encoder.layers.3.self_attn.q_proj"
    with pytest.raises(ValueError, match="encoder.layers"):
        text_encoder_path("text_projection")


def test_text_encoder_names_from_a_4x_style_tree():
    """A CLIP nested the 4.x way (``text_model.`` level) gets the same names as the installed one."""
    from transformers import CLIPTextConfig, CLIPTextModel

    from train.network.targets import text_encoder_targets

    cfg = CLIPTextConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
    flat = CLIPTextModel(cfg)
    nested = torch.nn.Module()
    nested.text_model = torch.nn.Module()
    nested.text_model.encoder = flat.get_encoder() if hasattr(flat, "get_encoder") else flat.text_model.encoder
    a = [t.name for t in text_encoder_targets("sd1", [flat])]
    b = [t.name for t in text_encoder_targets("sd1", [nested])]
    assert a == b and len(a) == 12
    assert a[0].startswith("lora_te_text_model_encoder_layers_0_self_attn_")


def test_sgm_mapping_rules():
    ups = {0, 1}
    assert diffusers_to_sgm("down_blocks.1.attentions.0.proj_in", 2, ups) == "input_blocks.4.1.proj_in"
    assert diffusers_to_sgm("down_blocks.2.resnets.1.conv1", 2, ups) == "input_blocks.8.0.in_layers.2"
    assert diffusers_to_sgm("down_blocks.0.downsamplers.0.conv", 2, ups) == "input_blocks.3.0.op"
    assert diffusers_to_sgm("mid_block.resnets.1.time_emb_proj", 2, ups) == "middle_block.2.emb_layers.1"
    assert diffusers_to_sgm("up_blocks.1.resnets.2.conv_shortcut", 2, ups) == "output_blocks.5.0.skip_connection"
    assert diffusers_to_sgm("up_blocks.0.upsamplers.0.conv", 2, ups) == "output_blocks.2.2.conv"
    # an up block without attention (SD1's up_blocks.0 in SGM layout) puts its upsampler at .1
    assert diffusers_to_sgm("up_blocks.0.upsamplers.0.conv", 2, {1, 2, 3}) == "output_blocks.2.1.conv"
    assert diffusers_to_sgm("time_embedding.linear_2", 2, ups) == "time_embed.2"
    assert diffusers_to_sgm("add_embedding.linear_1", 2, ups) == "label_emb.0.0"
    assert diffusers_to_sgm("conv_in", 2, ups) == "input_blocks.0.0"
    assert diffusers_to_sgm("conv_out", 2, ups) == "out.2"
    with pytest.raises(ValueError, match="no SGM name"):
        diffusers_to_sgm("encoder_hid_proj", 2, ups)


def test_unknown_arch_and_wrong_encoder_count(sd15):
    with pytest.raises(ValueError, match="arch: unknown architecture 'sd3'"):
        create_network("sd3", *sd15, NetworkConfig())
    with pytest.raises(ValueError, match="SDXL has 2 text encoders, got 1"):
        create_network("sdxl", sd15[0], sd15[1], NetworkConfig())
