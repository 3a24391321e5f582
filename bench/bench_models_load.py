"""Full-size base-model loading, end to end, with random weights (no download needed).

Builds a full-size SD1.5 / SD2 / SDXL model from the shipped configs (meta device -> random fp16 weights),
writes it as an original-layout single-file .safetensors, loads it back with `load_base_model` using the shipped
configs (the path real checkpoints take), checks tensors round-trip, and prints timings and peak memory.

    .venv/bin/python bench/bench_models_load.py --arch sd1            # ~2 GB file, ~6 GB RAM
    .venv/bin/python bench/bench_models_load.py --arch sdxl --dir /big/tmp   # ~7 GB file, ~16 GB RAM
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=["sd1", "sd2", "sd2-v", "sdxl"], default="sd1")
    ap.add_argument("--dir", type=Path, default=None, help="where to write the checkpoint (default: a temp dir)")
    args = ap.parse_args()

    import torch
    from safetensors.torch import save_file

    from train.models import ModelConfig, load_base_model
    from train.models.convert import pipeline_to_single_file
    from train.models.meta import materialize, meta_model

    family = "sd2" if args.arch.startswith("sd2") else args.arch
    t0 = time.perf_counter()
    m = meta_model(family, with_vae=True)
    for module in (m.unet, m.vae, *m.text_encoders):
        materialize(module, dtype=torch.float16)
    state = pipeline_to_single_file(m.arch, m.unet, m.vae, m.text_encoders)
    t_build = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / f"random-{args.arch}.safetensors"
        t0 = time.perf_counter()
        save_file(state, str(path))
        t_save = time.perf_counter() - t0
        unet_ref = m.unet.state_dict()
        probe = {k: unet_ref[k].clone() for k in list(unet_ref)[::40]}
        n_params = sum(p.numel() for p in m.unet.parameters())
        del state, unet_ref, m
        gc.collect()
        t0 = time.perf_counter()
        bm = load_base_model(ModelConfig(path=path, architecture=args.arch), dtype=torch.float16)
        t_load = time.perf_counter() - t0
        unet_sd = bm.unet.state_dict()
        ok = all(torch.equal(unet_sd[k], v) for k, v in probe.items())
        print(f"arch={bm.arch_name} unet_keys={len(unet_sd)} unet_params={n_params / 1e6:.1f}M "
              f"text_encoders={len(bm.text_encoders)} file={path.stat().st_size / 1e9:.2f}GB")
        print(f"build={t_build:.1f}s save={t_save:.1f}s load_base_model={t_load:.1f}s peak_rss={_peak_gb():.1f}GB "
              f"unet_tensors_roundtrip={'ok' if ok else 'MISMATCH'}")

if __name__ == "__main__":
    main()
