"""Training speed and memory: seconds per step and peak GPU memory of the real training loop (train.loop.train).

On a CUDA machine it builds full-size SD1.5 and SDXL architectures with random weights (train/models/meta.py +
to_empty, no download) and measures:
  - SD1.5, 512 px, batch 1 and batch 4 (AdamW, bf16/fp16 mixed precision, LoRA rank 32, text encoder trained)
  - SDXL, 1024 px, batch 1 with the sdxl-lowmem preset (UNet only, cached latents and text-encoder outputs,
    gradient checkpointing, Adafactor)
Memory is reported as three figures: the peak while loading and caching (VAE latents, text-encoder outputs),
the peak while training (the loop resets the CUDA peak counter in between) and the overall peak (the larger).
Without CUDA it falls back to the tiny test models at 64 px and prints CPU figures, clearly labelled.

    .venv/bin/python bench/bench_train.py [--steps 30] [--only sd15|sdxl]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_dataset(folder: Path, size: tuple[int, int], count: int) -> Path:
    """Random-noise photos (content does not matter for speed) with captions, kohya layout."""
    import numpy as np
    from PIL import Image

    sub = folder / "1_bench"
    sub.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(sub / f"{i:03d}.png")
        (sub / f"{i:03d}.txt").write_text("bench, 1girl, solo, looking at viewer, outdoors, sky", encoding="utf-8")
    return folder


def random_base(arch: str, dtype, device):
    """A BaseModel with full-size random weights."""
    from transformers import CLIPTokenizer

    from train.models import (
        BaseModel,
        ModelHash,
        assemble_config_dir,
        make_noise_scheduler,
        shipped_config_name,
    )
    from train.models.arch import Arch
    from train.models.meta import materialize, meta_model

    meta = meta_model(arch, with_vae=True)
    folder = assemble_config_dir(shipped_config_name(arch, False))
    tokenizers = [CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)]
    if arch == "sdxl":
        tokenizers.append(CLIPTokenizer.from_pretrained(folder / "tokenizer_2", local_files_only=True))
    modules = [materialize(m, device=device, dtype=dtype) for m in (meta.unet, meta.vae, *meta.text_encoders)]
    for m in modules:
        m.requires_grad_(False).eval()
    return BaseModel(arch=Arch(arch), unet=modules[0], vae=modules[1], text_encoders=modules[2:],
                     tokenizers=tokenizers, noise_scheduler=make_noise_scheduler(False), v_prediction=False,
                     model_hash=ModelHash(name=f"random-{arch}", path=Path(f"random-{arch}")),
                     source=Path(f"random-{arch}"), config_dir=folder)


def tiny_base(arch: str, folder: Path):
    from train.config import load_config
    from train.models import load_base_model
    from train.models.tiny import save_tiny

    paths = save_tiny(arch, folder / f"tiny-{arch}")
    cfg = load_config(overrides=[f"model.path={paths.diffusers_dir}", "dataset.path=."])
    return load_base_model(cfg.model)


def measure(label: str, base, overrides: list[str], steps: int, preset: str | None = None) -> dict:
    from train.config import load_config
    from train.loop import train

    events: list[dict] = []
    cfg = load_config(preset=preset, overrides=overrides + [f"train.max_steps={steps}", "sample.enabled=false"])
    shutil.rmtree(cfg.run_dir, ignore_errors=True)
    started = time.perf_counter()
    result = train(cfg, base=base, listeners=[events.append], install_signals=False)
    wall = time.perf_counter() - started
    if result.reason != "finished":
        print(f"{label}: {result.reason}: {result.message}")
        return {}
    stamps = [e["t"] for e in events if e["type"] == "step"]
    warm = stamps[len(stamps) // 3:]  # skip the first third (allocator warm-up, cudnn autotune)
    s_it = (warm[-1] - warm[0]) / max(len(warm) - 1, 1)
    # The loop reports the peak of loading + caching in the start event, then resets the peak counter, so
    # the step events' mem_mb is the training peak alone.
    start = next(e for e in events if e["type"] == "start")
    setup = start.get("setup_mem_mb")
    mems = [e["mem_mb"] for e in events if e["type"] == "step" and e.get("mem_mb") is not None]
    mem = max(mems) if mems else None
    overall = max(setup or 0.0, mem) if mem is not None else None
    row = {"label": label, "s_it": s_it, "setup_peak_mb": setup, "train_peak_mb": mem, "peak_mb": overall,
           "wall_s": wall}
    if mem is None:
        peak = "peak GPU memory n/a (CPU)"
    else:
        peak = (f"peak {overall / 1024:6.2f} GiB (loading+caching {(setup or 0.0) / 1024:5.2f}, "
                f"training {mem / 1024:5.2f})")
    print(f"{label:58} {s_it:8.3f} s/it   {peak}   (run {wall:.0f} s incl. setup)", flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--only", choices=["sd15", "sdxl"])
    args = parser.parse_args()

    import torch

    work = Path(tempfile.mkdtemp(prefix="kiln-bench-train-"))
    try:
        if not torch.cuda.is_available():
            print("NO CUDA: CPU fallback with the TINY test models at 64 px (not representative of GPU speed)")
            torch.set_num_threads(max(1, torch.get_num_threads()))
            data = make_dataset(work / "data64", (64, 64), 4)
            common = [f"dataset.path={data}", "dataset.resolution=64", "dataset.min_bucket_reso=64",
                      "dataset.max_bucket_reso=128", f"output.dir={work / 'runs'}", "train.mixed_precision=no",
                      "model.path=unused"]
            for arch in ("sd1", "sdxl"):
                if args.only and (arch == "sd1") != (args.only == "sd15"):
                    continue
                base = tiny_base(arch, work)
                for batch in (1, 4):
                    measure(f"CPU tiny-{arch} 64px batch {batch}", base,
                            common + [f"output.name=tiny-{arch}-b{batch}", f"train.batch_size={batch}"],
                            max(6, args.steps // 3))
                if arch == "sdxl":  # the low-memory path (caches filled before training)
                    measure("CPU tiny-sdxl 64px batch 1 (sdxl-lowmem preset)", base,
                            common + ["output.name=tiny-sdxl-lowmem"], max(6, args.steps // 3),
                            preset="sdxl-lowmem")
            return 0

        device = torch.device("cuda")
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        print(f"GPU: {torch.cuda.get_device_name(0)}, weights {dtype}, {args.steps} steps per measurement")
        if args.only in (None, "sd15"):
            data = make_dataset(work / "data512", (512, 512), 8)
            base = random_base("sd1", dtype, device)
            for batch in (1, 4):
                torch.cuda.reset_peak_memory_stats()
                measure(f"SD1.5 512px batch {batch} (AdamW, rank 32, UNet+TE)", base,
                        [f"dataset.path={data}", "model.path=unused", f"output.dir={work / 'runs'}",
                         f"output.name=sd15-b{batch}", f"train.batch_size={batch}", "network.dim=32",
                         "network.alpha=16"], args.steps)
            del base
            torch.cuda.empty_cache()
        if args.only in (None, "sdxl"):
            data = make_dataset(work / "data1024", (1024, 1024), 4)
            # On the CPU, as train() loads a base when caches are on: the VAE and text encoders fill the caches
            # first, then the UNet moves to the GPU.
            base = random_base("sdxl", dtype, "cpu")
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            measure("SDXL 1024px batch 1 (sdxl-lowmem preset)", base,
                    [f"dataset.path={data}", "model.path=unused", f"output.dir={work / 'runs'}",
                     "output.name=sdxl-lowmem"], args.steps, preset="sdxl-lowmem")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
