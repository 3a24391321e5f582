"""`kiln lora resize` on full-size SDXL layer shapes: kiln's exact SVD from the factors (QR of up and down, SVD of
the small core) next to the full out x in SVD kohya's resize_lora.py computes, in the same process.

    .venv/bin/python bench/bench_lora_resize.py                  # 60 SDXL LoRA modules, rank 128 -> 16, CPU
    .venv/bin/python bench/bench_lora_resize.py --modules 0      # every module (986; slow on a CPU for kohya's way)
    .venv/bin/python bench/bench_lora_resize.py --device cuda

Prints ms per module for both ways, the projected time for the whole LoRA, and how far the two results are
apart (relative Frobenius difference of the resized weight change, and of the share of the norm kept).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from train.lora.base import keymap_from_config  # noqa: E402
from train.lora.svd import fro_kept, low_rank_svd, svd  # noqa: E402
from train.models.arch import Arch  # noqa: E402
from train.models.assemble import CONFIGS_DIR  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modules", type=int, default=60, help="modules to time (0 = all)")
    parser.add_argument("--rank", type=int, default=128)
    parser.add_argument("--new-rank", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    keymap = keymap_from_config((CONFIGS_DIR / "sdxl").resolve(), Arch.SDXL)
    slots = [keymap.slots[n] for n in sorted(keymap.lora_targets)]
    total = len(slots)
    if args.modules:
        step = max(1, total // args.modules)
        slots = slots[::step][: args.modules]
    g = torch.Generator().manual_seed(0)
    ours = theirs = 0.0
    worst_delta = worst_share = 0.0
    for slot in slots:
        out_dim, in_dim = slot.shape[0], int(torch.tensor(slot.shape[1:]).prod())
        up = (torch.randn(out_dim, args.rank, generator=g) * 0.01).to(device)
        down = (torch.randn(args.rank, in_dim, generator=g) * 0.01).to(device)
        k = args.new_rank

        start = time.perf_counter()
        u, s, vh = low_rank_svd(up, down)
        mine = (u[:, :k] * s[:k]) @ vh[:k]
        share = fro_kept(s.cpu(), k)
        if device.type == "cuda":
            torch.cuda.synchronize()
        ours += time.perf_counter() - start

        start = time.perf_counter()
        u2, s2, vh2 = svd(up @ down)  # kohya: SVD of the merged out x in matrix
        full = (u2[:, :k] * s2[:k]) @ vh2[:k]
        share2 = fro_kept(s2.cpu(), k)
        if device.type == "cuda":
            torch.cuda.synchronize()
        theirs += time.perf_counter() - start

        worst_delta = max(worst_delta, float((mine - full).norm() / full.norm()))
        worst_share = max(worst_share, abs(share - share2))
    n = len(slots)
    print(f"SDXL LoRA, {n} of {total} modules, rank {args.rank} -> {args.new_rank}, {device}, "
          f"{torch.get_num_threads()} threads")
    print(f"  kiln (QR of the factors + SVD of the {args.rank}x{args.rank} core): {1000 * ours / n:8.1f} ms/module,"
          f" whole LoRA ~{ours / n * total:7.1f} s")
    print(f"  kohya's way (SVD of the full out x in matrix):        {1000 * theirs / n:8.1f} ms/module,"
          f" whole LoRA ~{theirs / n * total:7.1f} s")
    print(f"  same result: worst relative difference of the resized change {worst_delta:.1e}, "
          f"of the share of the norm kept {worst_share:.1e}")


if __name__ == "__main__":
    main()
