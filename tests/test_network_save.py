"""kohya-format files: keys, precision, ss_* metadata, sshs hashes, init_from, LyCORIS keys."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
import torch
from safetensors import safe_open

from tests.test_network_helpers import randomize, tiny, unet_inputs, unet_output
from train.network import NetworkConfig, create_network
from train.network.load import NetworkLoadError, read_kohya_file

TRAINING_METADATA = {
    "ss_output_name": "my_lora",
    "ss_learning_rate": 1e-4,
    "ss_unet_lr": 1e-4,
    "ss_text_encoder_lr": 5e-5,
    "ss_optimizer": "AdamW",
    "ss_lr_scheduler": "cosine",
    "ss_steps": 1200,
    "ss_epoch": 3,
    "ss_seed": 42,
    "ss_resolution": (512, 512),
    "ss_tag_frequency": {"10_cat": {"cat": 12, "sitting": 3}},
    "ss_dataset_dirs": {"10_cat": {"n_repeats": 10, "img_count": 12}},
    "ss_num_train_images": 120,
    "ss_num_reg_images": 0,
    "ss_clip_skip": None,
    "ss_session_id": 1234,
}


@pytest.fixture(scope="module")
def sd1():
    """One tiny SD1 model for the module: networks hook in and restore(), its weights never change."""
    return tiny("sd1")


def _net(model, arch="sd1", **kw):
    cfg = NetworkConfig(**{"dim": 4, "alpha": 2, **kw})
    net = create_network(arch, model.unet, model.text_encoders, cfg)
    randomize(net)
    return net


def _header(path) -> tuple[int, dict]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return n, json.loads(data[8 : 8 + n])


@pytest.mark.parametrize(("dtype", "torch_dtype"), [("fp16", torch.float16), ("bf16", torch.bfloat16),
                                                     ("fp32", torch.float32)])
def test_save_precision_and_keys(tmp_path, sd1, dtype, torch_dtype):
    net = _net(sd1, type="locon", conv_dim=2, conv_alpha=1)
    path = tmp_path / "a.safetensors"
    net.save(path, dtype, TRAINING_METADATA)
    tensors, _ = read_kohya_file(path)
    assert set(tensors) == set(net.state_dict_kohya())
    assert {t.dtype for t in tensors.values()} == {torch_dtype}
    for key, value in net.state_dict_kohya().items():
        assert torch.equal(tensors[key], value.to(torch_dtype)), key
    suffixes = {k.split(".", 1)[1] for k in tensors}
    assert suffixes == {"lora_down.weight", "lora_up.weight", "alpha"}
    assert all(k.startswith(("lora_unet_", "lora_te_")) for k in tensors)


def test_metadata_is_kohyas(tmp_path, sd1):
    net = _net(sd1, type="locon", conv_dim=2, conv_alpha=1, rank_dropout=0.1)
    path = tmp_path / "a.safetensors"
    net.save(path, "fp16", TRAINING_METADATA)
    _, md = read_kohya_file(path)
    assert md["ss_network_module"] == "networks.lora"
    assert md["ss_network_dim"] == "4"
    assert md["ss_network_alpha"] == "2.0"
    assert json.loads(md["ss_network_args"]) == {"conv_dim": "2", "conv_alpha": "1.0", "rank_dropout": "0.1"}
    assert md["ss_base_model_version"] == "sd_v1"
    assert md["ss_v2"] == "False"
    assert json.loads(md["ss_tag_frequency"]) == {"10_cat": {"cat": 12, "sitting": 3}}
    assert json.loads(md["ss_dataset_dirs"])["10_cat"]["n_repeats"] == 10
    assert md["ss_steps"] == "1200" and md["ss_seed"] == "42" and md["ss_clip_skip"] == "None"
    assert md["ss_resolution"] == "(512, 512)"
    assert md["ss_learning_rate"] == "0.0001"
    assert md["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert md["modelspec.title"] == "my_lora"
    assert md["modelspec.resolution"] == "512x512" and md["modelspec.implementation"] == "diffusers"
    assert all(isinstance(v, str) for v in md.values())


def test_sshs_hashes_match_kohyas_definition(tmp_path, sd1):
    net = _net(sd1)
    path = tmp_path / "a.safetensors"
    user = dict(TRAINING_METADATA, **{"modelspec.title": "changes nothing"})
    net.save(path, "fp16", user)
    _, md = read_kohya_file(path)
    # sshs_model_hash: sha256 of the tensor data (everything after the header), so it is also the hash of
    # the data part of the file as written
    n, _ = _header(path)
    data = path.read_bytes()
    assert md["sshs_model_hash"] == hashlib.sha256(data[8 + n :]).hexdigest()
    # sshs_legacy_hash: 64 KiB at offset 1 MiB of the file serialised with only the ss_* metadata
    from safetensors.torch import save

    tensors, _ = read_kohya_file(path)
    ss_only = save(tensors, {k: v for k, v in md.items() if k.startswith("ss_")})
    assert md["sshs_legacy_hash"] == hashlib.sha256(ss_only[0x100000 : 0x110000]).hexdigest()[:8]
    assert len(data) > 0x110000 or md["sshs_legacy_hash"] == hashlib.sha256(b"").hexdigest()[:8]


def test_sdxl_and_sd2_versions(tmp_path):
    model = tiny("sdxl")
    net = _net(model, "sdxl")
    path = tmp_path / "x.safetensors"
    net.save(path, "bf16", {})
    tensors, md = read_kohya_file(path)
    assert md["ss_base_model_version"] == "sdxl_base_v1-0"
    assert md["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert md["modelspec.resolution"] == "1024x1024" and md["modelspec.title"] == "LoRA"
    assert md["modelspec.implementation"] == "https://github.com/Stability-AI/generative-models"
    assert {k.split("_text_model")[0] for k in tensors if k.startswith("lora_te")} == {"lora_te1", "lora_te2"}
    from train.network.save import base_model_version

    assert base_model_version("sd2") == "sd_v2" and base_model_version("sd2", True) == "sd_v2_v"


def test_save_is_atomic_and_safetensors_only(tmp_path, sd1):
    net = _net(sd1)
    path = tmp_path / "a.safetensors"
    path.write_bytes(b"old")
    path.chmod(0o640)
    net.save(path, "fp16", {})
    assert (path.stat().st_mode & 0o777) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]
    with pytest.raises(ValueError, match=r"\.safetensors only"):
        net.save(tmp_path / "a.pt", "fp16", {})
    with pytest.raises(ValueError, match="save dtype 'fp8'"):
        net.save(path, "fp8", {})


def test_init_from_round_trip(tmp_path, sd1):
    net = _net(sd1, type="locon", conv_dim=2, conv_alpha=1, alpha=3)
    path = tmp_path / "a.safetensors"
    net.save(path, "fp32", {})
    inputs = unet_inputs(sd1)
    net.apply()
    expected = unet_output(sd1, inputs)
    net.restore()

    other = sd1
    again = create_network("sd1", other.unet, other.text_encoders,
                           NetworkConfig(type="locon", dim=4, alpha=1, conv_dim=2, conv_alpha=1, init_from=path))
    for key, value in net.state_dict_kohya().items():
        assert torch.equal(again.state_dict_kohya()[key], value), key
    again.apply()
    # alpha comes from the file (3, not the config's 1): the scale follows it
    assert (unet_output(other, inputs) - expected).abs().max() < 1e-6
    again.restore()


def test_init_from_mismatch_lists_what_did_not_match(tmp_path, sd1):
    path = tmp_path / "a.safetensors"
    _net(sd1, dim=8).save(path, "fp16", {})
    with pytest.raises(NetworkLoadError) as err:
        create_network("sd1", sd1.unet, sd1.text_encoders, NetworkConfig(dim=4, init_from=path))
    msg = str(err.value)
    assert "shape differs" in msg and "lora_down.weight: file (8, " in msg and "network (4, " in msg

    xl = tiny("sdxl")
    xl_path = tmp_path / "xl.safetensors"
    _net(xl, "sdxl").save(xl_path, "fp16", {})
    with pytest.raises(NetworkLoadError) as err:
        create_network("sd1", sd1.unet, sd1.text_encoders, NetworkConfig(dim=4, init_from=xl_path))
    msg = str(err.value)
    assert "in the network but not in the file" in msg and "in the file but not in the network" in msg
    assert "lora_te1_text_model_encoder_layers_0" in msg and "... and" in msg

    with pytest.raises(NetworkLoadError) as err:  # a UNet-only file into a UNet+TE network
        path2 = tmp_path / "unet_only.safetensors"
        _net(sd1, train_text_encoder=False).save(path2, "fp16", {})
        create_network("sd1", sd1.unet, sd1.text_encoders, NetworkConfig(dim=4, init_from=path2))
    assert "lora_te_text_model_encoder_layers_0_mlp_fc1.alpha" in str(err.value)

    # a LoRA with text-encoder modules into a UNet-only run (the loop passes no text encoders then)
    with pytest.raises(NetworkLoadError, match="does not train the text encoder"):
        create_network("sd1", sd1.unet, None, NetworkConfig(dim=8, init_from=path))


def test_init_from_old_file_without_alpha(tmp_path, sd1):
    """Old kohya files have no .alpha keys: alpha = dim (scale 1), as kohya loads them."""
    from safetensors.torch import save_file

    net = _net(sd1, alpha=1)
    path = tmp_path / "old.safetensors"
    save_file({k: v for k, v in net.state_dict_kohya().items() if not k.endswith(".alpha")}, str(path))
    again = create_network("sd1", sd1.unet, sd1.text_encoders, NetworkConfig(dim=4, alpha=1, init_from=path))
    assert all(m.scale == 1.0 and float(m.alpha) == 4.0 for m in again.modules_list)


def test_init_from_bad_files(tmp_path, sd1):
    def make(p):
        return create_network("sd1", sd1.unet, sd1.text_encoders, NetworkConfig(dim=4, init_from=p))

    with pytest.raises(NetworkLoadError, match="does not exist"):
        make(tmp_path / "nope.safetensors")
    pt = tmp_path / "old.pt"
    pt.write_bytes(b"\x80\x04pickle")
    with pytest.raises(NetworkLoadError, match="pickled"):
        make(pt)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(NetworkLoadError, match="not a readable safetensors file"):
        make(broken)
    assert broken.read_bytes().startswith(b"\x10")  # nothing is written over the user's file


LYCORIS_SUFFIXES = {
    "loha": {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha"},
    "lokr": {"lokr_w1", "lokr_w2", "alpha"},
    "ia3": {"weight", "on_input"},
    "dora": {"lora_down.weight", "lora_up.weight", "alpha", "dora_scale"},
}


@pytest.mark.parametrize("algo", ["loha", "lokr", "ia3", "dora"])
def test_lycoris_keys_and_round_trip(tmp_path, sd1, algo):
    kw = {"lokr_factor": 4} if algo == "lokr" else {}
    net = _net(sd1, type=algo, conv_dim=2, conv_alpha=1, **kw)
    locon = create_network("sd1", sd1.unet, sd1.text_encoders, NetworkConfig(type="locon", dim=4, conv_dim=2))
    assert {m.lora_name for m in net.modules_list} == {m.lora_name for m in locon.modules_list}
    inputs = unet_inputs(sd1)
    base = unet_output(sd1, inputs)
    net.apply()
    ours = unet_output(sd1, inputs)
    net.restore()
    assert (ours - base).abs().max() > 1e-4

    path = tmp_path / f"{algo}.safetensors"
    net.save(path, "fp32", {})
    tensors, md = read_kohya_file(path)
    names = {m.lora_name for m in net.modules_list}
    assert {k.split(".")[0] for k in tensors} == names
    suffixes = {k.split(".", 1)[1] for k in tensors}
    assert LYCORIS_SUFFIXES[algo] <= suffixes
    assert md["ss_network_module"] == "lycoris.kohya"
    args = json.loads(md["ss_network_args"])
    assert args["algo"] == ("lora" if algo == "dora" else algo) and args["conv_dim"] == "2"
    if algo == "dora":
        assert args["dora_wd"] == "True"
    if algo == "ia3":
        assert tensors[next(k for k in tensors if k.endswith("on_input"))].dtype != torch.float32

    again = create_network("sd1", sd1.unet, sd1.text_encoders,
                           NetworkConfig(type=algo, dim=4, alpha=2, conv_dim=2, conv_alpha=1, init_from=path, **kw))
    again.apply()
    try:
        assert (unet_output(sd1, inputs) - ours).abs().max() < 1e-5
    finally:
        again.restore()
    assert torch.equal(unet_output(sd1, inputs), base)


def test_lycoris_opened_with_safe_open(tmp_path, sd1):
    """The files are plain safetensors (A1111 / ComfyUI read them with safe_open)."""
    path = tmp_path / "loha.safetensors"
    _net(sd1, type="loha").save(path, "fp16", {})
    with safe_open(str(path), framework="pt") as f:
        assert any(k.endswith(".hada_w1_a") for k in f.keys())  # noqa: SIM118
