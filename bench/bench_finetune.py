"""Full fine-tune speed and memory: seconds per step and peak GPU memory of the real training loop with
``network.type = "full"``, with and without the memory options, beside the memory plan kiln states up front.

On a CUDA machine (full-size random weights, no download; bench/bench_train.py's helpers):
  - SD1.5 512 px batch 1, UNet + text encoder: AdamW over fp32 weights (what kohya's fine_tune.py does with mixed
    precision); + gradient checkpointing; bf16 weights with stochastic rounding + step in backward + Adafactor +
    checkpointing; fp32 weights + EMA
  - SDXL 1024 px batch 1, UNet only, cached latents and text-encoder outputs: AdamW fp32 weights + checkpointing;
    bf16 + stochastic rounding + fused backward + Adafactor + checkpointing; the same with fp32 masters;
    + EMA in CPU memory
Without CUDA it runs the tiny test models at 64 px on the CPU and prints CPU figures, clearly labelled (the
code path, not representative figures).

    .venv/bin/python bench/bench_finetune.py [--steps 20] [--only sd15|sdxl]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_train import make_dataset, measure, random_base, tiny_base  # noqa: E402 - after the path setup

FULL = ["network.type=full", "output.save_precision=fp16", "train.learning_rate=1e-6"]
LEAN = ["finetune.weights=bf16", "finetune.bf16_update=stochastic", "finetune.fused_backward=true",
        "train.optimizer=Adafactor", "train.gradient_checkpointing=true"]
SD15 = {
    "AdamW, fp32 weights": [],
    "AdamW, fp32 weights, gradient checkpointing": ["train.gradient_checkpointing=true"],
    "bf16 + stochastic rounding + fused backward + Adafactor + checkpointing": LEAN,
    "AdamW, fp32 weights, EMA on the GPU": ["finetune.ema=true"],
}
SDXL = {
    "AdamW, fp32 weights, checkpointing": ["train.gradient_checkpointing=true"],
    "bf16 + stochastic rounding + fused backward + Adafactor + checkpointing": LEAN,
    "bf16 + fp32 masters + fused backward + Adafactor + checkpointing": [*LEAN, "finetune.bf16_update=master"],
    "bf16 + stochastic + fused + Adafactor + checkpointing + EMA in CPU memory": [
        *LEAN, "finetune.ema=true", "finetune.ema_on_cpu=true"],
}
SDXL_CACHED = ["network.train_text_encoder=false", "dataset.cache_latents=true",
               "dataset.cache_text_encoder_outputs=true"]


def planned(overrides: list[str]) -> str:
    """The memory plan kiln says before the run (train.finetune.memory), for the same config."""
    from train.config import load_config
    from train.finetune.memory import planned_memory
    from train.models.arch import Arch

    cfg = load_config(overrides=overrides)
    arch = Arch("sdxl" if any("sdxl" in o for o in overrides) else "sd1")
    plan = planned_memory(cfg, arch)
    return f"plan {plan.on('device') / 2**30:.2f} GiB + activations"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--only", choices=["sd15", "sdxl"])
    args = parser.parse_args()

    import torch

    work = Path(tempfile.mkdtemp(prefix="kiln-bench-finetune-"))
    try:
        if not torch.cuda.is_available():
            print("NO CUDA: CPU fallback with the TINY test models at 64 px (the code path, not GPU figures)")
            data = make_dataset(work / "data64", (64, 64), 4)
            common = [f"dataset.path={data}", "dataset.resolution=64", "dataset.min_bucket_reso=64",
                      "dataset.max_bucket_reso=128", f"output.dir={work / 'runs'}", "train.mixed_precision=no",
                      "model.path=unused", *FULL]
            for i, (label, extra) in enumerate(SD15.items()):
                base = tiny_base("sd1", work / f"tiny{i}")  # fresh: a full fine-tune changes the base's weights
                measure(f"CPU tiny-sd1 64px: {label}", base, [*common, f"output.name=t{i}", *extra],
                        max(4, args.steps // 4))
            return 0

        device = torch.device("cuda")
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        print(f"GPU: {torch.cuda.get_device_name(0)}, frozen weights {dtype}, {args.steps} steps per measurement")
        if args.only in (None, "sd15"):
            data = make_dataset(work / "data512", (512, 512), 4)
            for i, (label, extra) in enumerate(SD15.items()):
                base = random_base("sd1", dtype, device)  # fresh: a full fine-tune changes the base's weights
                torch.cuda.reset_peak_memory_stats()
                overrides = [f"dataset.path={data}", "model.path=unused", f"output.dir={work / 'runs'}",
                             f"output.name=sd15-{i}", *FULL, *extra]
                print(f"  ({planned([*overrides, 'model.architecture=sd1'])})")
                measure(f"SD1.5 512px b1 full: {label}", base, overrides, args.steps)
                del base
                torch.cuda.empty_cache()
        if args.only in (None, "sdxl"):
            data = make_dataset(work / "data1024", (1024, 1024), 4)
            for i, (label, extra) in enumerate(SDXL.items()):
                base = random_base("sdxl", dtype, "cpu")  # the caches fill first, then the UNet moves in
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                overrides = [f"dataset.path={data}", "model.path=unused", f"output.dir={work / 'runs'}",
                             "dataset.resolution=1024", f"output.name=sdxl-{i}", *FULL, *SDXL_CACHED, *extra]
                print(f"  ({planned([*overrides, 'model.architecture=sdxl'])})")
                measure(f"SDXL 1024px b1 full UNet: {label}", base, overrides, args.steps)
                del base
                torch.cuda.empty_cache()
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
