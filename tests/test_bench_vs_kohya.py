"""bench/bench_vs_kohya.py on a CPU: the kiln side trains the tiny model under the step probe and fills the
table and its JSON; the kohya side is skipped with its reason (kohya's source is not here in CI), and so is
AdamW8bit without CUDA. Also the probe on its own, the figures' arithmetic and the command lines."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_vs_kohya", ROOT / "bench" / "bench_vs_kohya.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_vs_kohya"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bench = load_bench()


@pytest.mark.slow  # one tiny kiln run in a child process
def test_cpu_run_fills_the_table_and_says_what_it_skipped(tmp_path, capsys) -> None:
    out = tmp_path / "table.json"
    code = bench.main([
        "--arch", "sd15", "--batch", "1", "--grad-ckpt", "off", "--optimizer", "AdamW,AdamW8bit",
        "--steps", "2", "--warmup", "1", "--images", "4", "--work", str(tmp_path / "work"),
        "--kohya", str(tmp_path / "no-sd-scripts"), "--json", str(out),
    ])
    printed = capsys.readouterr().out
    assert code == 0, printed
    table = json.loads(out.read_text(encoding="utf-8"))
    assert table["meta"]["models"] == "tiny" and table["meta"]["steps"] == 2 and table["meta"]["warmup"] == 1
    assert table["meta"]["images"]["sd15"] == {"64x64": 4}
    rows = {row["id"]: row for row in table["rows"]}
    assert list(rows) == ["sd15-b1-gc0-AdamW", "sd15-b1-gc0-AdamW8bit"]

    kiln = rows["sd15-b1-gc0-AdamW"]["kiln"]
    assert kiln["status"] == "ok" and kiln["steps_recorded"] == 3
    assert kiln["s_it"] > 0 and kiln["images_s"] == pytest.approx(1 / kiln["s_it"], rel=1e-2)
    assert kiln["wall_s"] > kiln["first_step_s"] > 0
    assert kiln["peak_allocated_mib"] is None and kiln["device"] == "cpu"  # no CUDA: no memory figures
    kohya = rows["sd15-b1-gc0-AdamW"]["kohya"]
    assert kohya["status"] == "skipped" and "has no train_network.py" in kohya["reason"]
    assert set(rows["sd15-b1-gc0-AdamW"]["kiln_over_kohya"]) >= {"s_it", "peak_allocated_mib", "first_step_s"}
    assert all(v is None for v in rows["sd15-b1-gc0-AdamW"]["kiln_over_kohya"].values())
    eight_bit = rows["sd15-b1-gc0-AdamW8bit"]["kiln"]
    assert eight_bit["status"] == "skipped" and "CUDA" in eight_bit["reason"]

    whys = [(s["row"], s["side"], s["why"]) for s in table["skipped"]]
    assert ("*", "kohya", kohya["reason"]) in whys  # said once for every row, not repeated per row
    assert sum(1 for _, side, why in whys if side == "kohya" and why == kohya["reason"]) == 1
    assert any(row == "sd15-b1-gc0-AdamW8bit" and side == "kiln" and "CUDA" in why for row, side, why in whys)
    # the printed table: one line per side and the ratio line, and the skip list
    assert "sd15-b1-gc0-AdamW" in printed and "kiln / kohya" in printed and "Skipped or failed:" in printed
    assert f"{kiln['s_it']:8.3f}" in printed
    # the kiln run really trained: its LoRA file is there
    assert (tmp_path / "work" / "runs" / "kiln" / "sd15-b1-gc0-AdamW" / "sd15-b1-gc0-AdamW.safetensors").is_file()


def test_kohya_found_but_not_importable_is_a_skip_reason(tmp_path) -> None:
    fake = tmp_path / "sd-scripts"
    fake.mkdir()
    for name in ("train_network.py", "sdxl_train_network.py"):
        (fake / name).write_text("", encoding="utf-8")
    env = bench.check_kohya(fake, sys.executable, str(tmp_path))
    assert not env.ready and "do not import in its environment" in env.reason and "library" in env.reason
    missing = bench.check_kohya(fake, str(tmp_path / "no-python"), None)
    assert not missing.ready and "kohya's python not found" in missing.reason
    assert "not given" in bench.check_kohya(None, sys.executable, None).reason


def test_probe_times_each_optimizer_step_once(tmp_path) -> None:
    script = tmp_path / "fit.py"
    script.write_text(
        "import sys, torch\n"
        "from accelerate import Accelerator\n"
        "trial = torch.nn.Parameter(torch.ones(2)); trial.grad = torch.ones(2)\n"
        "torch.optim.AdamW([trial], lr=0.1).step()\n"  # a pre-flight's trial step on a lone parameter
        "w, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(1))\n"
        "opt = Accelerator(cpu=True).prepare(torch.optim.AdamW([w, b], lr=0.1))\n"
        "for _ in range(int(sys.argv[1])):\n"
        "    (w ** 2 + b).sum().backward(); opt.step(); opt.zero_grad()\n"
        "sys.exit(3)\n", encoding="utf-8")
    stats = tmp_path / "stats.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "step_probe.py"), "--stats", str(stats),
                           "--warmup", "2", "--script", str(script), "--", "4"], capture_output=True, text=True,
                          check=False, timeout=120)
    assert proc.returncode == 3, proc.stderr
    record = json.loads(stats.read_text(encoding="utf-8"))
    # neither accelerate's wrapper nor the trial step is counted
    assert len(record["step_t"]) == 4 and record["exit"] == 3
    assert record["launch_t"] <= record["probe_start_t"] <= record["step_t"][0] <= record["end_t"]
    assert record["step_t"] == sorted(record["step_t"])


def test_figures_from_a_probe_record(tmp_path) -> None:
    stats = {"launch_t": 100.0, "step_t": [110.0, 111.0, 113.0, 115.0, 117.0], "exit": 0, "device": "GPU",
             "peak_allocated_mib": 2048.0, "peak_reserved_mib": 3072.0, "train_peak_allocated_mib": 1024.0}
    side = bench.side_from_stats(stats, batch=4, warmup=2, steps=3, wall_s=20.0, log=tmp_path / "x.log")
    assert side.status == "ok" and side.s_it == 2.0 and side.images_s == 2.0 and side.first_step_s == 10.0
    assert side.peak_reserved_mib == 3072.0 and side.train_peak_reserved_mib is None
    short = bench.side_from_stats({**stats, "step_t": stats["step_t"][:3], "exit": 1, "error": "x\nOOM"},
                                  batch=4, warmup=2, steps=3, wall_s=5.0, log=tmp_path / "x.log")
    assert short.status == "failed" and "3 of 5 steps" in short.reason and "OOM" in short.reason
    other = bench.Side(status="ok", s_it=4.0, images_s=1.0, peak_allocated_mib=4096.0, first_step_s=None)
    assert bench.ratios(side, other) == {"s_it": 0.5, "images_s": 2.0, "peak_allocated_mib": 0.5,
                                         "peak_reserved_mib": None, "train_peak_allocated_mib": None,
                                         "first_step_s": None}


def test_command_lines_ask_both_programs_for_the_same_run(tmp_path) -> None:
    from train.config import load_config

    ckpt = bench.Checkpoint(tmp_path / "m.safetensors", None, 1024, 512, 2048)
    row = bench.Row("sdxl", 4, True, "AdamW8bit")
    kohya = bench.kohya_command(row, ckpt, tmp_path / "data", tmp_path / "out", tmp_path / "tok", "bf16", 35, 0)
    flags = dict(zip(kohya[::1], kohya[1:], strict=False))
    assert flags["--network_dim"] == flags["--network_alpha"] == "16" and flags["--optimizer_type"] == "AdamW8bit"
    assert flags["--train_batch_size"] == "4" and flags["--max_train_steps"] == "35"
    assert flags["--resolution"] == "1024,1024" and flags["--max_bucket_reso"] == "2048"
    assert {"--gradient_checkpointing", "--network_train_unet_only", "--cache_text_encoder_outputs", "--sdpa",
            "--cache_latents", "--no_half_vae"} <= set(kohya)
    sets = bench.kiln_overrides(bench.Row("sdxl", 4, True, "AdamW8bit", "channels_last"), ckpt,
                                tmp_path / "data", tmp_path / "out", "bf16", 35, 0)
    cfg = load_config(overrides=sets)  # every --set is a valid kiln setting
    assert cfg.network.dim == 16 and cfg.network.alpha == 16 and not cfg.trains_text_encoder
    assert cfg.train.batch_size == 4 and cfg.train.max_steps == 35 and cfg.train.gradient_checkpointing
    assert cfg.train.mixed_precision == "bf16" and cfg.train.optimizer == "AdamW8bit" and cfg.train.channels_last
    assert cfg.dataset.cache_latents and cfg.dataset.cache_text_encoder_outputs
    assert cfg.dataset.resolution == 1024 and cfg.dataset.max_bucket_reso == 2048
    for lever in bench.LEVERS:  # every lever is a valid setting too
        load_config(overrides=bench.kiln_overrides(bench.Row("sd15", 1, False, "AdamW", lever), ckpt,
                                                   tmp_path, tmp_path, "bf16", 35, 0))


def test_rows_and_their_order() -> None:
    rows = bench.plan_rows(["sd15", "sdxl"], [1, 4], [False], ["AdamW"], ["compile"], None)
    assert [r.id for r in rows] == ["sd15-b1-gc0-AdamW", "sd15-b4-gc0-AdamW", "sdxl-b1-gc0-AdamW",
                                    "sdxl-b4-gc0-AdamW", "sd15-b1-gc0-AdamW.compile", "sdxl-b1-gc0-AdamW.compile"]
    assert rows[-1].base == rows[2]
    picked = bench.plan_rows(["sd15"], [1, 4], [False], ["AdamW"], ["compile"], ["sd15-b4-gc0-AdamW"])
    assert picked[-1].id == "sd15-b4-gc0-AdamW.compile"


def test_dataset_buckets_hold_whole_batches(tmp_path) -> None:
    ckpt = bench.Checkpoint(tmp_path / "m.safetensors", None, 512, 256, 1024)
    counts = bench.build_dataset(tmp_path / "data", ckpt, 20, 4)
    assert sum(counts.values()) == 20 and len(counts) == 5 and all(n % 4 == 0 for n in counts.values())
    images = sorted((tmp_path / "data" / "1_kilnsample photo").glob("*.jpg"))
    assert len(images) == 20 and all(p.with_suffix(".txt").read_text(encoding="utf-8") for p in images)
    assert len({p.read_bytes() for p in images}) == 20  # distinct files (kiln caches latents by content hash)
