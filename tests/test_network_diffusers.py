"""A kiln LoRA file loads in diffusers with every key matched and gives the same UNet output as kiln."""

from __future__ import annotations

import io
import logging
import warnings

import pytest
import torch

from tests.test_network_helpers import pipeline, randomize, tiny, unet_inputs, unet_output
from train.network import NetworkConfig, create_network
from train.network.load import read_kohya_file

pytest.importorskip("peft", reason="diffusers needs peft to load LoRAs")

TOLERANCE = 1e-5  # fp32 on CPU; in practice the outputs are bit-identical


def _peft_layers(module) -> int:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(isinstance(m, BaseTunerLayer) for m in module.modules())


def _load_in_diffusers(model, state_dict) -> str:
    """load_lora_weights with diffusers/peft log and warning capture; returns what they said."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    loggers = [logging.getLogger(n) for n in ("diffusers", "peft")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pipeline(model).load_lora_weights(dict(state_dict))
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
    said = stream.getvalue() + "\n".join(str(w.message) for w in caught if "peft" in str(w.filename).lower()
                                         or "diffusers" in str(w.filename).lower())
    return said


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
@pytest.mark.parametrize("typ", ["lora", "locon"])
def test_saved_file_loads_in_diffusers_with_same_output(tmp_path, arch, typ):
    model = tiny(arch)
    inputs = unet_inputs(model)
    base = unet_output(model, inputs)
    cfg = NetworkConfig(type=typ, dim=4, alpha=2, conv_dim=2 if typ == "locon" else None,
                        conv_alpha=1 if typ == "locon" else None)
    net = create_network(arch, model.unet, model.text_encoders, cfg)
    randomize(net)
    net.apply()
    ours = unet_output(model, inputs)
    net.restore()
    assert torch.equal(unet_output(model, inputs), base)  # restore() really unhooks
    assert (ours - base).abs().max() > 1e-3  # the LoRA does something

    path = tmp_path / "out.safetensors"
    net.save(path, "fp32", {"ss_output_name": "out"})
    tensors, _ = read_kohya_file(path)
    said = _load_in_diffusers(model, tensors)
    assert "unexpected" not in said.lower() and "missing" not in said.lower(), said

    unet_modules = {m.lora_name for m in net.unet_modules}
    assert _peft_layers(model.unet) == len(unet_modules)
    te_counts = [_peft_layers(te) for te in model.text_encoders]
    prefixes = ["lora_te_"] if arch == "sd1" else ["lora_te1_", "lora_te2_"]
    assert te_counts == [sum(m.lora_name.startswith(p) for m in net.text_encoder_modules) for p in prefixes]
    assert all(c > 0 for c in te_counts)

    theirs = unet_output(model, inputs)
    assert (theirs - ours).abs().max().item() <= TOLERANCE


def test_capture_sees_a_wrong_key(tmp_path):
    """Control for the test above: a key naming no module is reported by diffusers and our capture sees it."""
    model = tiny("sd1")
    net = create_network("sd1", model.unet, model.text_encoders, NetworkConfig(dim=4))
    sd = net.state_dict_kohya()
    good = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    bad = good.replace("attn1", "attn9")
    for suffix in (".lora_down.weight", ".lora_up.weight"):
        sd[bad + suffix] = sd[good + suffix].clone()
    assert "unexpected" in _load_in_diffusers(model, sd).lower()


def test_dora_scale_is_dropped_by_diffusers():
    """Documented limitation: diffusers drops dora_scale for SD/SDXL (A1111/Forge and ComfyUI use it)."""
    model = tiny("sd1")
    net = create_network("sd1", model.unet, model.text_encoders, NetworkConfig(type="dora", dim=4))
    said = _load_in_diffusers(model, net.state_dict_kohya())
    assert "dora" in said.lower()
