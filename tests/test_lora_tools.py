"""`kiln lora` on tiny real models and real files: extract, resize, merge, info, grid, and bad input.

The figures the issue asks for are printed (run with ``-s`` to see them): extraction error, resize norm
shares, merge-vs-run-time difference.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
import torch

from tests.model_fixtures import models_cache, tiny_sd1, tiny_sd2, tiny_sdxl  # noqa: F401
from tests.test_network_helpers import randomize, unet_inputs, unet_output
from train.network import NetworkConfig, create_network

RANK = 4


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared CPU: one thread is faster than oversubscribed threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def kiln(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """Run ``kiln ARGV`` in this process; (exit code, stdout, stderr)."""
    from tui.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def figure(capsys: pytest.CaptureFixture[str], text: str) -> None:
    """Print a measured figure past the capture (seen with ``pytest -s``)."""
    with capsys.disabled():
        print(f"\n[figure] {text}")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".kiln-tmp-"))


def lora_file(path: Path, arch: str, model, cfg: NetworkConfig, seed: int = 1, scale: float = 0.05,
              metadata: dict | None = None) -> tuple[Path, object]:
    """A kiln-trained-shape LoRA with random weights, saved in fp32."""
    net = create_network(arch, model.unet, model.text_encoders, cfg)
    randomize(net, seed=seed, scale=scale)
    net.save(path, "fp32", metadata or {"ss_output_name": path.stem})
    return path, net


# ---------------------------------------------------------------------------------------------- extraction
def _tuned_copy(arch: str, folder: Path, *, te_parts: tuple[str, ...]):
    """The tiny model (seed 1234, as the fixtures) plus a known rank-RANK change on every LoCon target (UNet and
    the text-encoder parts in ``te_parts``), saved both ways. Returns (paths, {kohya name: delta})."""
    from train.models.tiny import build_tiny, save_tiny
    from train.network.targets import find_targets

    model = build_tiny(arch, seed=1234)
    g = torch.Generator().manual_seed(7)
    deltas = {}
    for target in find_targets(arch, model.unet, model.text_encoders, include_conv=True):
        if target.part != "unet" and target.part not in te_parts:
            continue
        weight = target.module.weight
        out_dim, rest = weight.shape[0], weight[0].numel()
        change = (torch.randn(out_dim, RANK, generator=g) @ torch.randn(RANK, rest, generator=g)) * 0.02
        change = change.reshape(weight.shape)
        with torch.no_grad():
            weight.add_(change)
        deltas[target.name] = change
    return save_tiny(arch, folder, model=model), deltas, model


def _extraction_error(path: Path, deltas: dict[str, torch.Tensor]) -> tuple[float, float]:
    """(relative Frobenius error over all modules, worst single module) of an extracted LoRA."""
    from train.lora.adapters import read_lora
    from train.lora.delta import delta

    lora = read_lora(path)
    assert set(lora.modules) == set(deltas)
    num = den = worst = 0.0
    for name, true in deltas.items():
        got = delta(lora.modules[name], tuple(true.shape))
        err = float((got - true).norm())
        num, den = num + err**2, den + float(true.norm()) ** 2
        worst = max(worst, err / float(true.norm()))
    return math.sqrt(num / den), worst


def test_extract_recovers_a_known_low_rank_delta(tiny_sd1, tmp_path, capsys):
    """SD1 single files: UNet (LoCon: convs too) and text encoder, rank RANK, fp32, no clamp."""
    _, paths = tiny_sd1
    tuned, deltas, tuned_model = _tuned_copy("sd1", tmp_path / "tuned", te_parts=("te",))
    out = tmp_path / "extracted.safetensors"
    rc, stdout, stderr = kiln(capsys, "lora", "extract", "--base", paths.single_file, "--tuned", tuned.single_file,
                              "--dim", RANK, "--conv-dim", RANK, "--clamp-quantile", 1, "--te", "--dtype", "fp32",
                              "--config-dir", paths.config_dir, "--device", "cpu", "--out", out)
    assert rc == 0, stderr
    assert "text encoder changed" in stderr and "wrote" in stdout
    total, worst = _extraction_error(out, deltas)
    figure(capsys, f"extract SD1 single file, rank {RANK}: relative Frobenius error {total:.2e} "
                   f"(worst module {worst:.2e})")
    assert total < 1e-3 and worst < 1e-3

    from safetensors import safe_open

    with safe_open(str(out), "pt") as fh:
        meta = fh.metadata()
    assert meta["ss_network_module"] == "networks.lora" and meta["ss_network_dim"] == str(RANK)
    assert meta["ss_network_alpha"] == f"{float(RANK)}" and meta["ss_base_model_version"] == "sd_v1"
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": str(RANK), "conv_alpha": str(float(RANK))}
    assert json.loads(meta["ss_kiln_extract"])["tuned"] == tuned.single_file.stem
    assert "extracted" in meta["ss_training_comment"] and meta["modelspec.architecture"].endswith("/lora")

    # every key loads in diffusers, and the LoRA on the base gives the fine-tune's output
    from tests.test_network_diffusers import _load_in_diffusers, _peft_layers
    from train.models.tiny import build_tiny

    base_model = build_tiny("sd1", seed=1234)
    inputs = unet_inputs(base_model)
    expected = unet_output(tuned_model, inputs)
    from safetensors.torch import load_file

    said = _load_in_diffusers(base_model, load_file(str(out)))
    assert "unexpected" not in said.lower() and "missing" not in said.lower(), said
    assert _peft_layers(base_model.unet) + _peft_layers(base_model.text_encoders[0]) == len(deltas)
    got = unet_output(base_model, inputs)
    figure(capsys, f"extracted LoRA in diffusers vs the fine-tune: max UNet output difference "
                   f"{(got - expected).abs().max():.2e}")
    assert (got - expected).abs().max() < 1e-4


def test_extract_sdxl_from_diffusers_folders_leaves_an_unchanged_text_encoder_out(tiny_sdxl, tmp_path, capsys):
    _, paths = tiny_sdxl
    tuned, deltas, _ = _tuned_copy("sdxl", tmp_path / "tuned", te_parts=("te2",))
    out = tmp_path / "xl.safetensors"
    rc, _, stderr = kiln(capsys, "lora", "extract", "--base", paths.diffusers_dir, "--tuned", tuned.diffusers_dir,
                         "--dim", RANK, "--clamp-quantile", 1, "--te", "--min-diff", 1e-6, "--dtype", "fp32",
                         "--device", "cpu", "--out", out)
    assert rc == 0, stderr
    assert "text encoder 1 (CLIP-L) did not change" in stderr and "left out" in stderr
    assert "text encoder 2 (OpenCLIP-bigG) changed" in stderr
    linear = {k: v for k, v in deltas.items() if v.dim() == 2 or tuple(v.shape[2:]) == (1, 1)}
    from train.lora.adapters import read_lora
    from train.models.tiny import build_tiny
    from train.network.targets import find_targets

    xl = build_tiny("sdxl")
    lora_targets = {t.name for t in find_targets("sdxl", xl.unet, xl.text_encoders, include_conv=False)}
    wanted = {k: v for k, v in linear.items() if k in lora_targets}
    assert not any(n.startswith("lora_te1_") for n in read_lora(out).modules)
    total, worst = _extraction_error(out, wanted)
    figure(capsys, f"extract SDXL diffusers folders, rank {RANK}: relative Frobenius error {total:.2e} "
                   f"(worst {worst:.2e})")
    assert total < 1e-3


# ---------------------------------------------------------------------------------------------- resize
def _module_deltas(path: Path) -> dict[str, torch.Tensor]:
    from train.lora.adapters import read_lora
    from train.lora.delta import delta

    lora = read_lora(path)
    out = {}
    for name, m in lora.modules.items():
        up, down = m.tensors["lora_up.weight"], m.tensors["lora_down.weight"]
        out[name] = delta(m, (up.shape[0], *down.shape[1:]))
    return out


def test_resize_keeps_the_norm_share_it_reports_and_is_lossless_at_its_own_rank(tiny_sd1, tmp_path, capsys):
    from train.models.tiny import build_tiny

    model = build_tiny("sd1", seed=1234)
    src, _ = lora_file(tmp_path / "r32.safetensors", "sd1", model, NetworkConfig(dim=32, alpha=16), scale=0.1)
    before = _module_deltas(src)
    out = tmp_path / "r8.safetensors"
    rc, stdout, stderr = kiln(capsys, "lora", "resize", src, "--rank", 8, "--dtype", "fp32", "--device", "cpu",
                              "--out", out)
    assert rc == 0, stderr
    after = _module_deltas(out)
    reported = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0] in before:
            assert parts[1:4] == ["32", "->", "8"], line
            reported[parts[0]] = float(parts[4].rstrip("%")) / 100
    assert set(reported) == set(before)
    worst = max(abs(float(after[n].norm() / before[n].norm()) - share) for n, share in reported.items())
    total = math.sqrt(sum(float(after[n].norm()) ** 2 for n in before) / sum(float(before[n].norm()) ** 2 for n in before))
    reported_total = float(stdout.split("Frobenius norm kept: ")[1].split("%")[0]) / 100
    figure(capsys, f"resize 32 -> 8: total norm kept {reported_total:.4%} reported, {total:.4%} recomputed; worst module "
          f"share difference {worst:.1e}")
    assert worst < 1e-4 and abs(total - reported_total) < 1e-4
    assert reported_total < 0.99  # a random rank-32 LoRA really loses something at rank 8

    from safetensors import safe_open

    with safe_open(str(out), "pt") as fh:
        meta = fh.metadata()
        alpha = float(fh.get_tensor(next(k for k in fh.keys() if k.endswith(".alpha"))))  # noqa: SIM118
    assert meta["ss_network_dim"] == "8" and alpha == 16 * 8 / 32  # alpha/rank kept (kohya)
    assert "resized from 32 to 8" in meta["ss_training_comment"]

    same = tmp_path / "r32b.safetensors"
    rc, stdout, _ = kiln(capsys, "lora", "resize", src, "--rank", 32, "--dtype", "fp32", "--device", "cpu",
                         "--out", same, "--summary")
    assert rc == 0
    again = _module_deltas(same)
    lossless = max(float((again[n] - before[n]).norm() / before[n].norm()) for n in before)
    figure(capsys, f"resize 32 -> 32: worst relative module error {lossless:.1e}")
    assert lossless < 1e-5 and "100.00% in total" in stdout


def test_dynamic_resize_follows_kohyas_rules(tiny_sd1, tmp_path, capsys):
    """sv_fro: each module's rank is kohya's index_sv_fro on the full SVD of its weight change."""
    from train.models.tiny import build_tiny

    model = build_tiny("sd1", seed=1234)
    src, _ = lora_file(tmp_path / "r16.safetensors", "sd1", model, NetworkConfig(dim=16, alpha=16), scale=0.1)
    before = _module_deltas(src)
    out = tmp_path / "dyn.safetensors"
    rc, stdout, stderr = kiln(capsys, "lora", "resize", src, "--dynamic", "sv_fro", "--dynamic-param", 0.9,
                              "--dtype", "fp32", "--device", "cpu", "--out", out)
    assert rc == 0, stderr
    from train.lora.adapters import read_lora

    resized = read_lora(out)
    for name, change in before.items():
        s = torch.linalg.svdvals(change.reshape(change.shape[0], -1).double())
        cumulative = torch.cumsum(s**2, 0) / (s**2).sum()
        index = max(1, min(int(torch.searchsorted(cumulative, torch.tensor(0.81, dtype=cumulative.dtype))) + 1,
                           len(s) - 1))
        assert resized.modules[name].rank == min(index + 1, 16), name
    assert resized.metadata["ss_network_dim"] == "Dynamic"


def test_resize_turns_a_lycoris_loha_into_lora(tiny_sd1, tmp_path, capsys):
    from lycoris.kohya import create_network as lycoris_network

    from train.models.tiny import build_tiny

    model = build_tiny("sd1", seed=1234)
    net = lycoris_network(1.0, 4, 2.0, None, model.text_encoders[0], model.unet, algo="loha", preset="attn-mlp")
    net.apply_to(model.text_encoders[0], model.unet, True, True)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    src = tmp_path / "loha.safetensors"
    net.save_weights(str(src), torch.float32, {"ss_network_module": "lycoris.kohya"})
    out = tmp_path / "loha-as-lora.safetensors"
    rc, stdout, stderr = kiln(capsys, "lora", "resize", src, "--rank", 16, "--device", "cpu", "--dtype", "fp32",
                              "--config-dir", tiny_sd1[1].config_dir, "--out", out)
    assert rc == 0, stderr
    assert "LoHa -> LoRA" in stdout and "LyCORIS modules were turned into plain LoRA" in stderr
    from train.lora.adapters import read_lora
    from train.lora.delta import delta

    loha, lora = read_lora(src), read_lora(out)
    assert lora.format_label == "LoRA" and lora.metadata["ss_network_module"] == "networks.lora"
    assert set(lora.modules) == set(loha.modules)  # LyCORIS' flattened text-encoder names come out as kohya's
    assert all(n.startswith(("lora_unet_", "lora_te_text_model_encoder_layers_")) for n in lora.modules)
    # rank 16 >= the LoHa's rank**2 in these layers: the conversion is exact
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    shape = (lora.modules[name].tensors["lora_up.weight"].shape[0], lora.modules[name].tensors["lora_down.weight"].shape[1])
    assert torch.allclose(delta(lora.modules[name], shape), delta(loha.modules[name], shape), atol=1e-5)


# ---------------------------------------------------------------------------------------------- merge
def _from_single_file(path: Path, arch: str, config_dir: Path):
    """A merged single file loaded with diffusers' own single-file loader, offline."""
    import diffusers

    from train.models.loading import offline

    with offline():
        if arch == "sdxl":
            pipe = diffusers.StableDiffusionXLPipeline.from_single_file(str(path), config=str(config_dir),
                                                                       local_files_only=True)
            tes = [pipe.text_encoder, pipe.text_encoder_2]
        else:
            pipe = diffusers.StableDiffusionPipeline.from_single_file(
                str(path), config=str(config_dir), local_files_only=True, safety_checker=None,
                requires_safety_checker=False)
            tes = [pipe.text_encoder]

    class Loaded:
        unet = pipe.unet
        text_encoders = tes

    return Loaded()


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_merge_into_a_checkpoint_equals_the_lora_at_run_time(arch, request, tmp_path, capsys):
    from train.models.tiny import build_tiny

    _, paths = request.getfixturevalue(f"tiny_{arch}")
    model = build_tiny(arch, seed=1234)
    a, net_a = lora_file(tmp_path / "a.safetensors", arch, model,
                         NetworkConfig(type="locon", dim=4, alpha=2, conv_dim=2, conv_alpha=1), seed=1)
    b, net_b = lora_file(tmp_path / "b.safetensors", arch, model, NetworkConfig(dim=2, alpha=2), seed=2)
    inputs = unet_inputs(model)
    base_out = unet_output(model, inputs)
    net_a.apply()
    net_a.set_multiplier(0.7)
    net_b.apply()
    net_b.set_multiplier(0.5)
    runtime = unet_output(model, inputs)
    net_b.restore()
    net_a.restore()
    out = tmp_path / "merged.safetensors"
    rc, stdout, stderr = kiln(capsys, "lora", "merge", "--into", paths.single_file, f"{a}:0.7", f"{b}:0.5",
                              "--config-dir", paths.config_dir, "--device", "cpu", "--out", out)
    assert rc == 0, stderr
    merged = _from_single_file(out, arch, paths.config_dir)
    got = unet_output(merged, inputs)
    diff = float((got - runtime).abs().max())
    figure(capsys, f"merge {arch} (LoCon at 0.7 + LoRA at 0.5, text encoders too): max UNet output difference to run time "
          f"{diff:.1e} (the LoRAs change it by {float((runtime - base_out).abs().max()):.2f})")
    assert diff < 1e-4 and float((runtime - base_out).abs().max()) > 1e-2

    from train.models.probe import read_safetensors_header

    before, after = read_safetensors_header(paths.single_file), read_safetensors_header(out)
    assert after.shapes == before.shapes and after.dtypes == before.dtypes  # same keys, same dtypes
    assert json.loads(after.metadata["kiln_merged_loras"]) == [{"file": "a.safetensors", "strength": 0.7},
                                                               {"file": "b.safetensors", "strength": 0.5}]
    half = tmp_path / "half.safetensors"
    rc, _, _ = kiln(capsys, "lora", "merge", "--into", paths.single_file, a, "--dtype", "fp16",
                    "--config-dir", paths.config_dir, "--device", "cpu", "--out", half)
    assert rc == 0 and set(read_safetensors_header(half).dtypes.values()) == {"F16"}


def test_merge_into_a_diffusers_folder_writes_a_single_file(tiny_sd2, tmp_path, capsys):
    """SD2: the OpenCLIP text encoder's fused q/k/v rows get their own modules' changes."""
    from train.models.tiny import build_tiny

    model_obj, paths = tiny_sd2
    model = build_tiny("sd2", seed=1234)
    a, net = lora_file(tmp_path / "a.safetensors", "sd2", model, NetworkConfig(dim=4, alpha=4), scale=0.1)
    inputs = unet_inputs(model)
    net.apply()
    runtime = unet_output(model, inputs)
    net.restore()
    out = tmp_path / "merged.safetensors"
    rc, stdout, stderr = kiln(capsys, "lora", "merge", "--into", paths.diffusers_dir, a, "--device", "cpu",
                              "--out", out)
    assert rc == 0, stderr
    assert "single-file checkpoint" in stderr
    merged = _from_single_file(out, "sd2", paths.config_dir)
    assert float((unet_output(merged, inputs) - runtime).abs().max()) < 1e-4


def test_merge_loras_into_one(tiny_sd1, tmp_path, capsys):
    from tests.test_network_diffusers import _load_in_diffusers
    from train.lora.adapters import read_lora
    from train.models.tiny import build_tiny

    model = build_tiny("sd1", seed=1234)
    a, _ = lora_file(tmp_path / "a.safetensors", "sd1", model, NetworkConfig(dim=4, alpha=2), seed=1)
    b, _ = lora_file(tmp_path / "b.safetensors", "sd1", model, NetworkConfig(dim=2, alpha=1), seed=2)
    da, db = _module_deltas(a), _module_deltas(b)
    out = tmp_path / "c.safetensors"
    rc, stdout, stderr = kiln(capsys, "lora", "merge", f"{a}:1", f"{b}:-0.5", "--dtype", "fp32", "--device", "cpu",
                              "--out", out)
    assert rc == 0, stderr
    dc = _module_deltas(out)
    exact = max(float((dc[n] - (da[n] - 0.5 * db[n])).norm() / da[n].norm()) for n in da)
    assert exact < 1e-5 and "largest rank 6" in stdout
    from safetensors.torch import load_file

    c = read_lora(out)
    said = _load_in_diffusers(model, load_file(str(out)))
    assert "unexpected" not in said.lower() and "missing" not in said.lower(), said
    assert c.metadata["ss_base_model_version"] == "sd_v1" and c.metadata["ss_network_module"] == "networks.lora"

    svd = tmp_path / "svd.safetensors"
    rc, stdout, _ = kiln(capsys, "lora", "merge", a, f"{b}:-0.5", "--svd-rank", 3, "--dtype", "fp32",
                         "--device", "cpu", "--out", svd)
    assert rc == 0
    kept = float(stdout.split("Frobenius norm kept ")[1].split("%")[0]) / 100
    ds = _module_deltas(svd)
    total = math.sqrt(sum(float(ds[n].norm()) ** 2 for n in da) / sum(float((da[n] - 0.5 * db[n]).norm()) ** 2 for n in da))
    assert all(m.rank == 3 for m in read_lora(svd).modules.values())
    assert abs(total - kept) < 1e-4 and kept < 0.9999


# ---------------------------------------------------------------------------------------------- info
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A real run of kiln's trainer on the tiny SD1 model: a step save and the final file."""
    from tests.test_train_loop import make_dataset, tiny_config
    from train.loop import train
    from train.models.tiny import build_tiny, save_tiny

    root = tmp_path_factory.mktemp("run")
    paths = save_tiny("sd1", root / "model", model=build_tiny("sd1", seed=1234))
    dataset = make_dataset(root / "data", broken=False)
    cfg = tiny_config(paths.single_file, dataset, root / "runs", "toy", "train.max_steps=2",
                      "output.save_every_n_steps=1", "dataset.num_workers=0")
    assert train(cfg).reason == "finished"
    return root / "runs" / "toy"


def test_info_on_a_file_from_kilns_trainer(trained_run, capsys):
    rc, out, err = kiln(capsys, "lora", "info", trained_run / "toy.safetensors")
    assert rc == 0, err
    assert "format        LoRA (kohya layout)" in out and "architecture  SD1" in out
    assert "IN01" in out and "OUT05" in out and "BASE" in out
    assert "rank 4, alpha 4" in out and "alice woman  3" in out  # top tags
    assert "(= stored sshs_model_hash)" in out and "steps                              2" in out
    rc, out, _ = kiln(capsys, "lora", "info", trained_run / "toy.safetensors", "--json")
    report = json.loads(out)
    assert report["architecture"] == "sd1" and report["hashes"]["sshs_model_hash_matches"] is True
    assert report["loads_in"] == {"A1111/Forge": "yes", "ComfyUI": "yes", "diffusers": "yes"}
    assert report["modules_by_group"]["TE"] == sum(1 for m in report["module_list"] if m["part"] == "te")
    assert report["tag_frequency"][0] == ["alice woman", 3]
    import hashlib

    assert report["hashes"]["sha256"] == hashlib.sha256((trained_run / "toy.safetensors").read_bytes()).hexdigest()


def test_info_on_lycoris_loha_and_lokr(tmp_path, capsys):
    from lycoris.kohya import create_network as lycoris_network

    from train.models.tiny import build_tiny

    model = build_tiny("sd1", seed=1234)
    for algo, label in (("loha", "LoHa"), ("lokr", "LoKr")):
        net = lycoris_network(1.0, 4, 2.0, None, model.text_encoders[0], model.unet, algo=algo, preset="attn-mlp")
        net.apply_to(model.text_encoders[0], model.unet, True, True)
        path = tmp_path / f"{algo}.safetensors"
        net.save_weights(str(path), torch.float16, {"ss_network_module": "lycoris.kohya",
                                                     "ss_network_args": json.dumps({"algo": algo})})
        rc, out, err = kiln(capsys, "lora", "info", path, "--json", "--no-hashes")
        assert rc == 0, err
        report = json.loads(out)
        assert report["format"] == label and report["unknown_keys"] == []
        assert report["loads_in"]["diffusers"] == f"no: {algo}" and report["loads_in"]["ComfyUI"] == "yes"
        assert report["architecture"] is None or report["architecture"] == "sd1"
        assert any("without 'text_model_'" in n for n in report["notes"])


def test_info_and_merge_of_a_peft_file_saved_by_diffusers(tiny_sd1, tmp_path, capsys):
    """diffusers/PEFT naming (unet.<path>.lora_A.weight) with its alpha in lora_adapter_metadata: read, named as
    kohya names, merged exactly as diffusers applies it."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from train.models.tiny import build_tiny

    _, paths = tiny_sd1
    model = build_tiny("sd1", seed=1234)
    model.unet.add_adapter(LoraConfig(r=4, lora_alpha=2, init_lora_weights=False,
                                      target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_in"]))
    inputs = unet_inputs(model)
    with_lora = unet_output(model, inputs)
    folder = tmp_path / "peft"
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(model.unet),
                                              unet_lora_adapter_metadata={"r": 4, "lora_alpha": 2})
    path = folder / "pytorch_lora_weights.safetensors"
    rc, out, err = kiln(capsys, "lora", "info", path, "--json", "--no-hashes")
    assert rc == 0, err
    report = json.loads(out)
    assert report["layout"] == "peft" and report["format"] == "LoRA" and report["architecture"] == "sd1"
    assert report["ranks"] == [{"type": "LoRA", "rank": 4, "alpha": 2.0, "modules": report["modules"]}]
    assert all(m["name"].startswith("lora_unet_down_blocks_") or m["name"].startswith(("lora_unet_mid", "lora_unet_up"))
               for m in report["module_list"])
    merged_path = tmp_path / "merged.safetensors"
    rc, _, err = kiln(capsys, "lora", "merge", "--into", paths.single_file, path, "--config-dir", paths.config_dir,
                      "--device", "cpu", "--out", merged_path)
    assert rc == 0, err
    merged = _from_single_file(merged_path, "sd1", paths.config_dir)
    assert float((unet_output(merged, inputs) - with_lora).abs().max()) < 1e-4


def test_info_prints_hostile_metadata_as_data(tiny_sd1, tmp_path, capsys):
    from train.models.tiny import build_tiny

    evil = "\x1b[2J\x1b]0;pwned\x07[bold red]x[/]\x9b31m"
    path, _ = lora_file(tmp_path / "evil.safetensors", "sd1", build_tiny("sd1"), NetworkConfig(dim=2),
                        metadata={"ss_output_name": evil, "ss_tag_frequency": json.dumps({"1_x": {evil: 5}})})
    rc, out, err = kiln(capsys, "lora", "info", path)
    assert rc == 0, err
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
    assert "[bold red]x[/]" in out  # shown as the text it is, not as markup
    rc, out, _ = kiln(capsys, "lora", "info", path, "--json")
    assert all(ord(c) < 128 and (c == "\n" or ord(c) >= 32) for c in out)
    assert json.loads(out)["training"]["ss_output_name"] == evil


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_inputs_each_get_a_clear_message_and_nothing_is_written(tiny_sd1, tiny_sdxl, tiny_sd2, tmp_path, capsys):
    from train.models.tiny import build_tiny

    _, sd1 = tiny_sd1
    _, sdxl = tiny_sdxl
    xl_lora, _ = lora_file(tmp_path / "xl.safetensors", "sdxl", build_tiny("sdxl"), NetworkConfig(dim=2))
    sd2_lora, _ = lora_file(tmp_path / "sd2.safetensors", "sd2", build_tiny("sd2"), NetworkConfig(dim=2))
    good, _ = lora_file(tmp_path / "good.safetensors", "sd1", build_tiny("sd1"), NetworkConfig(dim=2))
    data = good.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"<html>404</html>" * 10)
    huge = tmp_path / "huge-header.safetensors"
    huge.write_bytes(struct.pack("<Q", 50 * 2**30) + b"{}")
    pickled = tmp_path / "lora.pt"
    from safetensors.torch import load_file

    torch.save(load_file(str(good)), pickled)
    out = tmp_path / "out.safetensors"
    merge = ["lora", "merge", "--config-dir", sd1.config_dir, "--device", "cpu", "--out", out]
    cases = [
        (merge + ["--into", sd1.single_file, xl_lora], ["SDXL LoRA", "SD1 model"]),
        (merge + ["--into", sd1.single_file, sd2_lora], ["SD2 LoRA"]),
        (merge + ["--into", sd1.single_file, truncated], ["not a valid .safetensors file"]),
        (merge + ["--into", sd1.single_file, garbage], ["not a valid .safetensors file"]),
        (merge + ["--into", sd1.single_file, huge], ["header length"]),
        (merge + ["--into", sd1.single_file, pickled], ["pickled", "--allow-pickle"]),
        (merge + ["--into", tmp_path / "missing.safetensors", good], ["--into", "does not exist"]),
        (merge + ["--into", good, good], ["LoRA/LyCORIS file, not a base model"]),
        (merge + ["--into", sdxl.single_file, good], ["SD1 LoRA", "SDXL model"]),
        (["lora", "extract", "--base", tmp_path / "nope", "--tuned", sd1.single_file, "--dim", 4, "--out", out],
         ["--base", "does not exist"]),
        (["lora", "extract", "--base", sd1.single_file, "--tuned", sdxl.single_file, "--dim", 4, "--out", out],
         ["SD1 model", "SDXL model"]),
        (["lora", "extract", "--base", sd1.single_file, "--tuned", sd1.single_file, "--dim", 0, "--out", out],
         ["--dim", "greater than or equal to 1"]),
        (["lora", "resize", good, "--out", out], ["--rank"]),
        (["lora", "resize", good, "--dynamic", "sv_fro", "--dynamic-param", 2, "--out", out], ["(0, 1]"]),
        (["lora", "info", truncated], ["not a valid .safetensors file"]),
        (["lora", "info", sd1.single_file], ["SD1 base checkpoint, not a LoRA"]),
        (["lora", "info", sd1.diffusers_dir / "unet" / "diffusion_pytorch_model.safetensors"], ["diffusers-layout UNet"]),
    ]
    for argv, needles in cases:
        rc, _, err = kiln(capsys, *argv)
        assert rc == 1, (argv, err)
        assert all(n in err for n in needles), (needles, err)
        assert err.startswith("kiln lora ") and "Traceback" not in err
        assert not out.exists() and leftovers(tmp_path) == [], argv

    # --out exists: refused without --force, the file untouched; replaced with --force
    out.write_bytes(b"keep me")
    rc, _, err = kiln(capsys, *merge, "--into", sd1.single_file, good)
    assert rc == 1 and "already exists" in err and "--force" in err and out.read_bytes() == b"keep me"
    rc, _, err = kiln(capsys, *merge, "--into", sd1.single_file, good, "--force")
    assert rc == 0, err
    assert out.read_bytes() != b"keep me" and leftovers(tmp_path) == []
    # a pickle the user allows
    rc, text, err = kiln(capsys, "lora", "info", pickled, "--allow-pickle", "--no-hashes")
    assert rc == 0 and "architecture  SD1" in text, err


# ---------------------------------------------------------------------------------------------- blocks
def test_block_ids_and_presets_follow_lora_block_weight():
    from train.lora.blocks import block_id, parse_block_spec

    sd1 = {
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj": "BASE",
        "lora_unet_down_blocks_0_attentions_0_proj_in": "IN01",
        "lora_unet_down_blocks_0_attentions_1_proj_in": "IN02",
        "lora_unet_down_blocks_0_downsamplers_0_conv": "IN03",
        "lora_unet_down_blocks_2_attentions_1_proj_in": "IN08",
        "lora_unet_down_blocks_3_resnets_1_conv1": "IN11",
        "lora_unet_mid_block_attentions_0_proj_in": "M00",
        "lora_unet_up_blocks_0_resnets_2_conv1": "OUT02",
        "lora_unet_up_blocks_1_attentions_0_proj_in": "OUT03",
        "lora_unet_up_blocks_2_upsamplers_0_conv": "OUT08",
        "lora_unet_up_blocks_3_attentions_2_proj_out": "OUT11",
        "lora_unet_conv_in": "IN00",
        "lora_unet_time_embedding_linear_1": None,
    }
    sdxl = {
        "lora_te2_text_model_encoder_layers_3_mlp_fc1": "BASE",
        "lora_unet_input_blocks_4_1_proj_in": "IN04",
        "lora_unet_input_blocks_8_1_transformer_blocks_9_attn2_to_k": "IN08",
        "lora_unet_middle_block_1_proj_in": "M00",
        "lora_unet_output_blocks_5_1_proj_out": "OUT05",
    }
    for name, block in {**sd1, **sdxl}.items():
        assert block_id(name) == block, name
    outd = parse_block_spec("OUTD")  # 1,0,0,0,0,0,0,0,1,1,1,1,0,0,0,0,0 over BLOCKID17
    assert outd.weight("lora_te_text_model_encoder_layers_0_self_attn_q_proj") == 1
    assert outd.weight("lora_unet_down_blocks_0_attentions_0_proj_in") == 0
    assert outd.weight("lora_unet_up_blocks_1_attentions_0_proj_in") == 1  # OUT03
    assert outd.weight("lora_unet_up_blocks_2_attentions_0_proj_in") == 1  # OUT06
    assert outd.weight("lora_unet_up_blocks_2_attentions_1_proj_in") == 0  # OUT07
    assert outd.weight("lora_unet_time_embedding_linear_1") == 1  # outside every block
    inx = parse_block_spec("INX:0.25")
    assert inx.weight("lora_unet_down_blocks_1_attentions_0_proj_in") == 1
    assert inx.weight("lora_unet_up_blocks_3_attentions_0_proj_in") == 0.25
    assert parse_block_spec("ALL").weight("lora_unet_down_blocks_0_downsamplers_0_conv") == 0  # not in the 17
    xl = parse_block_spec("1,0,0,0,0,1,0,0,0,0,0,1")  # 12 values: BASE,IN04,IN05,IN07,IN08,M00,OUT00-05
    assert xl.weight("lora_unet_middle_block_1_proj_in") == 1 and xl.weight("lora_unet_output_blocks_5_1_proj_out") == 1
    assert xl.weight("lora_unet_input_blocks_4_1_proj_in") == 0
    with pytest.raises(ValueError, match="13 weights"):
        parse_block_spec(",".join(["1"] * 13))
    with pytest.raises(ValueError, match="unknown preset"):
        parse_block_spec("SIDEWAYS")


# ---------------------------------------------------------------------------------------------- grid
def test_grid_control_column_is_the_base_models_own_image(tiny_sd1, trained_run, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from train.lora.adapters import read_lora
    from train.lora.apply import WeightPatcher
    from train.lora.blocks import parse_block_spec
    from train.models import ModelConfig, load_base_model
    from train.models.tiny import build_tiny
    from train.sample import build_pipeline

    _, paths = tiny_sd1
    strong, _ = lora_file(tmp_path / "strong.safetensors", "sd1", build_tiny("sd1", seed=1234),
                          NetworkConfig(type="locon", dim=4, conv_dim=4), scale=0.3)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# a comment\nalice woman, photo --d 5\n", encoding="utf-8")
    out = tmp_path / "grid.png"
    rc, stdout, err = kiln(capsys, "lora", "grid", "--base", paths.single_file, "--base", paths.diffusers_dir,
                           "--lora", trained_run, strong, "--strengths", "0,1", "--prompts", prompts, "--steps", 2,
                           "--width", 32, "--height", 32, "--config-dir", paths.config_dir, "--device", "cpu",
                           "--blocks", "NONE", "--out", out)
    assert rc == 0, err
    index = json.loads((tmp_path / "grid.json").read_text())
    assert index["strengths"] == [0.0, 1.0] and [i["label"] for i in index["loras"]] == [
        "step 1", "final (toy)", "strong"]
    assert len(index["cells"]) == 2 * (1 + 3) and len(index["rows"]) == 2 * 3
    sheet = Image.open(out)
    assert sheet.size[0] > 2 * 32 and sheet.size[1] > 6 * 32
    # what the TUI's grid browser reads: every axis position names a rendered image
    from train.lora.gridindex import find_grids, read_grid_index

    assert find_grids(tmp_path) == [tmp_path / "grid.json"]
    browsed = read_grid_index(tmp_path / "grid.json")
    assert len(browsed.bases) == 2 and len(browsed.loras) == 3 and browsed.presets == ("NONE",)
    for b in range(2):
        control = browsed.cell(b, 1, 0, 0, 0)
        strong_cell = browsed.cell(b, 2, 0, 1, 0)
        assert control is not None and control.lora is None and control.image.is_file()
        assert strong_cell is not None and strong_cell.lora == str(strong) and strong_cell.image.is_file()
        assert strong_cell.base == index["bases"][b] and strong_cell.image != control.image

    def pixels(rel: str) -> np.ndarray:
        return np.asarray(Image.open(tmp_path / rel).convert("RGB"))

    controls = [c for c in index["cells"] if c["strength"] == 0.0]
    assert len(controls) == 2 and all(c["seed"] == 5 for c in controls)
    # the control is exactly what the base model renders on its own with that seed
    base = load_base_model(ModelConfig(path=paths.single_file, config_dir=paths.config_dir))
    pipe = build_pipeline(base, "euler_a")

    def own(seed: int) -> np.ndarray:
        with torch.no_grad():
            image = pipe(prompt="alice woman, photo", width=32, height=32, num_inference_steps=2, guidance_scale=7.0,
                         generator=torch.Generator("cpu").manual_seed(seed)).images[0]
        return np.asarray(image.convert("RGB"))

    reference = own(5)
    assert np.array_equal(pixels(controls[0]["image"]), reference)
    assert np.array_equal(pixels(controls[1]["image"]), reference)  # the diffusers folder holds the same weights
    # --blocks NONE weighs every block 0: the LoRA cells equal the control
    assert all(np.array_equal(pixels(c["image"]), reference) for c in index["cells"] if c["base"] ==
               str(paths.single_file))

    # strength 0 equals the control; a strong LoRA changes the image; restoring gives the base back bit for bit
    patcher = WeightPatcher("sd1", base.unet, base.text_encoders)
    lora = read_lora(strong)
    before = {k: v.clone() for k, v in base.unet.state_dict().items()}
    patcher.apply(lora, 0.0)
    assert np.array_equal(own(5), reference)
    patcher.apply(lora, 1.0, parse_block_spec("ALL"))
    changed = own(5)
    patcher.restore()
    assert not np.array_equal(changed, reference)
    assert all(torch.equal(before[k], v) for k, v in base.unet.state_dict().items())
    assert np.array_equal(own(5), reference)

    # a LoRA for another architecture is refused before anything renders
    xl, _ = lora_file(tmp_path / "xl.safetensors", "sdxl", build_tiny("sdxl"), NetworkConfig(dim=2))
    rc, _, err = kiln(capsys, "lora", "grid", "--base", paths.single_file, "--lora", xl, "--prompts", prompts,
                      "--config-dir", paths.config_dir, "--device", "cpu", "--out", tmp_path / "other.png")
    assert rc == 1 and "SDXL LoRA" in err and not (tmp_path / "other.png").exists()


# ---------------------------------------------------------------------------------------------- LyCORIS maths
@pytest.mark.parametrize("typ", ["loha", "lokr", "ia3", "dora", "locon"])
def test_weight_change_equals_the_modules_own_forward(typ, tmp_path):
    """For every module of a saved LoRA/LyCORIS file, ``delta`` (what merge, resize and grid apply) gives the
    layer the output the module itself gives at run time (LyCORIS' forward for LoHa/LoKr/IA³/DoRA)."""
    import torch.nn.functional as F

    from train.lora.adapters import read_lora
    from train.lora.delta import delta
    from train.models.tiny import build_tiny

    model = build_tiny("sd1", seed=1234)
    cfg = NetworkConfig(type=typ, dim=4, alpha=2, conv_dim=2, conv_alpha=1)
    path, net = lora_file(tmp_path / f"{typ}.safetensors", "sd1", model, cfg, scale=0.2)
    lora = read_lora(path)
    assert set(lora.modules) == {m.lora_name for m in net.modules_list}
    net.apply()
    g = torch.Generator().manual_seed(3)
    worst = 0.0
    with torch.no_grad():
        for m in net.modules_list:
            layer = m.org_module[0] if isinstance(m.org_module, list) else m.org_module
            w = layer.weight
            if w.dim() == 2:
                x = torch.randn(2, w.shape[1], generator=g)
                own = layer(x) - F.linear(x, w, layer.bias)
                ours = F.linear(x, delta(lora.modules[m.lora_name], tuple(w.shape), w))
            else:
                x = torch.randn(1, w.shape[1], 8, 8, generator=g)
                base = F.conv2d(x, w, layer.bias, layer.stride, layer.padding)
                own = layer(x) - base
                ours = F.conv2d(x, delta(lora.modules[m.lora_name], tuple(w.shape), w), None, layer.stride,
                                layer.padding)
            assert own.abs().max() > 0, m.lora_name
            worst = max(worst, float((ours - own).abs().max() / own.abs().max()))
    net.restore()
    assert worst < 1e-4, worst


def test_grid_options_and_prompt_files_are_checked_up_front(tiny_sd1, tmp_path, capsys):
    from train.lora.grid import read_prompts

    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat --n blurry, lowres --w 512 --h 768 --d 9 --l 5.5 --s 12\n\n# note\nplain\n")
    first, second = read_prompts(prompts)
    assert (first.text, first.negative, first.width, first.height, first.seed, first.cfg_scale, first.steps) == (
        "a cat", "blurry, lowres", 512, 768, 9, 5.5, 12)
    assert second.text == "plain" and second.seed is None
    bad = tmp_path / "bad.txt"
    for text, needle in (("a cat --w 500\n", "multiple of 8"), ("a cat --d x\n", "not a number"), ("# only\n", "no prompt")):
        bad.write_text(text)
        with pytest.raises(ValueError, match=needle):
            read_prompts(bad)
    _, paths = tiny_sd1
    rc, _, err = kiln(capsys, "lora", "grid", "--base", paths.single_file, "--lora", tmp_path, "--prompts", prompts,
                      "--width", 100, "--out", tmp_path / "g.png")
    assert rc == 1 and "--width" in err and "multiple of 8" in err
    rc, _, err = kiln(capsys, "lora", "grid", "--base", paths.single_file, "--lora", tmp_path, "--prompts", prompts,
                      "--out", tmp_path / "g.png")
    assert rc == 1 and "holds no saved .safetensors" in err
    assert not (tmp_path / "g.png").exists()


def test_progress_bar_runs_on_a_terminal_console():
    from train.lora.progress import progress_bar

    seen = []
    with progress_bar("extracting", 3, "modules", enabled=True) as advance:
        for _ in range(3):
            advance(1)
            seen.append(1)
    assert seen == [1, 1, 1]
