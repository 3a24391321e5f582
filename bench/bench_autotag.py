"""Autotag throughput on CPU with a tiny ONNX tagger, so the figure is the preprocessing pipeline's.

    .venv/bin/python bench/bench_autotag.py                      # 200 photos from scikit-image, 1536 px JPEGs
    .venv/bin/python bench/bench_autotag.py --n 500 --side 3000   # camera-sized JPEGs
    .venv/bin/python bench/bench_autotag.py --images ~/datasets/x # your own images
    .venv/bin/python bench/bench_autotag.py --model ~/models/wd-swinv2-tagger-v3  # a real tagger

Prints images/s for decode+preprocess alone and for the full batched pipeline at several worker counts,
plus a whole `run_autotag` (dry run through the dataset index) when curator.dataset is available.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from curator.autotag.model import TaggerModel, resolve_model  # noqa: E402
from curator.autotag.pipeline import tag_images  # noqa: E402
from curator.autotag.preprocess import load_image  # noqa: E402
from curator.autotag.thresholds import SelectionRules  # noqa: E402

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg"]


def make_photos(folder: Path, n: int, side: int) -> list[Path]:
    """n JPEGs made from scikit-image's photographs, upscaled so the long side is `side` px."""
    import skimage

    data = Path(skimage.__file__).parent / "data"
    sources = []
    for name in PHOTOS:
        with Image.open(data / name) as im:
            im = im.convert("RGB")
            scale = side / max(im.size)
            sources.append(im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS))
    paths = []
    for i in range(n):
        path = folder / f"img_{i:05d}.jpg"
        sources[i % len(sources)].save(path, quality=92)
        paths.append(path)
    return paths


def tiny_model(folder: Path, size: int) -> TaggerModel:
    from tests.onnx_models import make_tagger

    tags = [(f"tag_{i}", 0, (i % 100) / 100) for i in range(200)]
    return TaggerModel.load(resolve_model(str(make_tagger(folder, tags, size=size))), device="cpu")


def bench_preprocess(paths: list[Path], size: int) -> float:
    start = time.perf_counter()
    for p in paths:
        load_image(p, size, size)
    return len(paths) / (time.perf_counter() - start)


def bench_pipeline(model: TaggerModel, paths: list[Path], batch: int, workers: int) -> float:
    start = time.perf_counter()
    n = sum(1 for _ in tag_images(model, paths, SelectionRules(), batch_size=batch, workers=workers))
    return n / (time.perf_counter() - start)


def bench_run(paths: list[Path], model: TaggerModel, batch: int, workers: int) -> str:
    try:
        from curator.autotag.config import AutotagConfig
        from curator.autotag.runner import run_autotag
        from curator.dataset import Dataset
    except ImportError as exc:
        return f"skipped ({exc})"
    ds = Dataset.open(paths[0].parent)
    t0 = time.perf_counter()
    ds.scan(progress=False)
    scan_s = time.perf_counter() - t0
    cfg = AutotagConfig(model=str(model.files.folder), batch_size=batch, workers=workers, dry_run=True)
    t0 = time.perf_counter()
    report = run_autotag(ds, cfg, model=model)
    total = time.perf_counter() - t0
    return (
        f"{report.considered / total:7.1f} img/s end to end (tagging {report.images_per_second:.1f} img/s; "
        f"index scan {scan_s:.1f}s before)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="number of photos (default 200)")
    ap.add_argument("--side", type=int, default=1536, help="long side of the generated JPEGs (default 1536)")
    ap.add_argument("--size", type=int, default=448, help="tiny model input size (default 448, as WD14 v3)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--images", type=Path, default=None, help="use the images in this folder instead")
    ap.add_argument("--model", default=None, help="a real tagger folder or cached repo id instead of the tiny one")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="kiln-bench-autotag-") as tmp:
        tmp_path = Path(tmp)
        if args.images:
            exts = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
            paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in exts)[: args.n]
            what = f"{len(paths)} images from {args.images}"
        else:
            (tmp_path / "photos").mkdir()
            t0 = time.perf_counter()
            paths = make_photos(tmp_path / "photos", args.n, args.side)
            what = f"{len(paths)} JPEG photos, long side {args.side}px (made in {time.perf_counter() - t0:.1f}s)"
        model = (
            TaggerModel.load(resolve_model(args.model), device="auto") if args.model
            else tiny_model(tmp_path / "model", args.size)
        )
        print(f"kiln autotag bench: {what}; model {model.files.name} {model.width}x{model.height}, "
              f"{len(model.labels)} tags, {', '.join(model.providers)}; {os.cpu_count()} CPU(s)")
        print(f"  decode+preprocess, 1 thread : {bench_preprocess(paths[: max(20, len(paths) // 4)], model.width):7.1f} img/s")
        cpus = os.cpu_count() or 1
        for workers in sorted({1, 2, min(4, cpus), cpus}):
            rate = bench_pipeline(model, paths, args.batch, workers)
            print(f"  pipeline, batch {args.batch:3d}, {workers:2d} worker(s): {rate:7.1f} img/s")
        if not args.images:
            print(f"  run_autotag (dry run)       : {bench_run(paths, model, args.batch, cpus)}")


if __name__ == "__main__":
    main()
