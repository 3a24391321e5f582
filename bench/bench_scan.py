"""Scan benchmark: cold scan speed, near-duplicate recall/precision, warm re-open, 100k-hash search, memory.

    .venv/bin/python bench/bench_scan.py                       # generates 10,000 images under a temp dir
    .venv/bin/python bench/bench_scan.py --data /tmp/photos    # reuse (or create) a set there
    .venv/bin/python bench/bench_scan.py --count 2000          # smaller run
    .venv/bin/python bench/bench_scan.py --data /tmp/photos --per-format 300   # only the per-format probe cost

``--per-format N`` probes N files of each extension (spread evenly over the sorted names) in this process,
three rounds, and prints the best round's CPU time per file: what one worker spends per format.

Targets (2-core machine): cold scan >= 200 images/s with near-duplicate recall >= 0.99 on the planted
resized/re-encoded copies; warm re-open of 10k images < 1 s; near-duplicate search over 100k hashes < 2 s.
The CPU time of the scan is printed too, so a figure taken on a busy shared machine can be read both ways.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402

from curator.dataset import Dataset  # noqa: E402
from curator.dupes import near_pairs  # noqa: E402
from curator.scan.config import ScanConfig  # noqa: E402


def _cpu_split() -> tuple[float, float]:
    """CPU seconds (user + system) of this process and of its finished children (the scan workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def _cpu_seconds() -> float:
    return sum(_cpu_split())


def _ensure_set(data: Path, count: int) -> dict:
    manifest_path = data / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest["count"] == count:
            return manifest
    from photoset import make_photoset

    print(f"generating {count:,} images in {data} ...", flush=True)
    started = time.perf_counter()
    manifest = make_photoset(data, count)
    print(f"  generated in {time.perf_counter() - started:.0f} s", flush=True)
    return manifest


def cold_scan(data: Path, workers: int | None) -> tuple[Dataset, float, float]:
    shutil.rmtree(data / ".kiln", ignore_errors=True)
    (own0, kids0), t0 = _cpu_split(), time.perf_counter()
    dataset = Dataset.open(data, config=ScanConfig(workers=workers))
    summary = dataset.scan(progress=sys.stderr.isatty())
    wall, (own1, kids1) = time.perf_counter() - t0, _cpu_split()
    cpu = own1 - own0 + kids1 - kids0
    print(f"cold scan: {summary.images:,} images in {wall:.1f} s = {summary.images / wall:,.0f} images/s (wall)")
    print(f"  CPU time {cpu:.1f} s = {cpu / summary.images * 1000:.1f} ms/image; "
          f"on 2 idle cores that is {2 * summary.images / cpu:,.0f} images/s")  # fmt: skip
    print(f"  of which scanner process {(own1 - own0) / summary.images * 1000:.2f} ms/image, "
          f"workers {(kids1 - kids0) / summary.images * 1000:.2f} ms/image")  # fmt: skip
    print(f"  load average during the run: {os.getloadavg()[0]:.1f} (other processes share these cores)")
    return dataset, wall, cpu


def duplicate_quality(dataset: Dataset, manifest: dict) -> None:
    records = dataset.images()
    planted = {tuple(sorted(p)) for p in manifest["planted_pairs"]}
    by_path = {r.path: k for k, r in enumerate(records)}
    hashed = [k for k, r in enumerate(records) if r.phash is not None]
    position = {k: n for n, k in enumerate(hashed)}
    hashes = np.array([records[k].phash for k in hashed], dtype=np.uint64)
    i, j, d = near_pairs(hashes, 16)
    pair_distance = {}
    for a, b, dist in zip(i.tolist(), j.tolist(), d.tolist(), strict=True):
        pa, pb = records[hashed[a]].path, records[hashed[b]].path
        pair_distance[tuple(sorted((pa, pb)))] = dist
    planted_distance = []
    for a, b in planted:
        ka, kb = by_path[a], by_path[b]
        planted_distance.append(int((int(records[ka].phash) ^ int(records[kb].phash)).bit_count()))
        assert ka in position and kb in position
    planted_distance_arr = np.array(planted_distance)
    print(f"planted copies: {len(planted):,}; their pHash distance: median {np.median(planted_distance_arr):.0f}, "
          f"99th pct {np.percentile(planted_distance_arr, 99):.0f}, max {planted_distance_arr.max()}")  # fmt: skip
    print("threshold  recall   false-positive pairs  precision")
    for threshold in range(4, 17, 2):
        found = sum(1 for dist in planted_distance if dist <= threshold)
        false = sum(1 for pair, dist in pair_distance.items() if dist <= threshold and pair not in planted)
        precision = found / max(1, found + false)
        print(f"{threshold:9d}  {found / len(planted):.4f}  {false:20d}  {precision:.4f}")
    threshold = dataset.config.near_threshold
    started = time.perf_counter()
    clusters = dataset.duplicates()
    elapsed = time.perf_counter() - started
    together = 0
    member_cluster = {}
    for cluster in clusters:
        for path in cluster.members:
            member_cluster.setdefault(path, cluster.id)
    for a, b in planted:
        if a in member_cluster and member_cluster.get(a) == member_cluster.get(b):
            together += 1
    extra = sum(len(c.members) for c in clusters) - 2 * together
    print(f"default threshold {threshold}: {len(clusters):,} clusters, recall {together / len(planted):.4f} "
          f"({together}/{len(planted)}), {extra} images in clusters beyond the planted pairs; "
          f"clustering took {elapsed:.2f} s")  # fmt: skip


def warm_reopen(data: Path) -> None:
    code = (
        "import time, sys\n"
        "t0 = time.perf_counter()\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from curator.dataset import Dataset\n"
        f"ds = Dataset.open({str(data)!r})\n"
        "records = ds.images()\n"
        "t1 = time.perf_counter()\n"
        "summary = ds.last_summary\n"
        "print(len(records), t1 - t0, summary.probed)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    count, seconds, probed = int(out[0]), float(out[1]), int(out[2])
    print(f"warm re-open (fresh process: imports + layout + stat walk + index compare + records): "
          f"{count:,} images in {seconds:.3f} s, {probed} re-read")  # fmt: skip
    started = time.perf_counter()
    with Dataset.open(data) as dataset:
        records = dataset.images()
    print(f"warm re-open in-process: {len(records):,} images in {time.perf_counter() - started:.3f} s")


def search_100k(dataset: Dataset, threshold: int) -> None:
    rng = np.random.default_rng(0)
    real = np.array([r.phash for r in dataset.images() if r.phash is not None], dtype=np.uint64)
    base = real[rng.integers(0, len(real), 100_000)]
    flips = np.zeros(100_000, dtype=np.uint64)
    for _ in range(20):  # 20 random bit flips per hash: a clustered, photo-like distribution
        flips ^= np.uint64(1) << rng.integers(0, 64, 100_000).astype(np.uint64)
    sets = {
        "uniform random": rng.integers(0, 2**63, 100_000, dtype=np.int64).astype(np.uint64) * np.uint64(2)
        + rng.integers(0, 2, 100_000).astype(np.uint64),
        "real pHashes + 20 flipped bits": base ^ flips,
    }
    for name, hashes in sets.items():
        started = time.perf_counter()
        i, _j, _d = near_pairs(hashes, threshold)
        print(f"near-duplicate search, 100,000 hashes ({name}), threshold {threshold}: "
              f"{time.perf_counter() - started:.2f} s, {len(i):,} pairs")  # fmt: skip


def per_format(data: Path, count: int) -> None:
    """CPU time of ``probe_file`` per format, in this process (what one worker spends per file)."""
    from curator.scan import fastdecode
    from curator.scan.probe import probe_file

    folders = [p for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")]
    names = sorted(p for folder in folders for p in folder.iterdir() if p.is_file())
    by_ext: dict[str, list[Path]] = {}
    for path in names:
        by_ext.setdefault(path.suffix.lower().lstrip("."), []).append(path)
    fast = fastdecode.available()
    png = "Wuffs" if fast["png-wuffs"] else "libspng" if fast["png-libspng"] else "Pillow"
    webp = "libwebp luma" if fast["webp-luma"] else "Pillow"
    print(f"per-format probe cost (one process, best of 3 rounds; PNG via {png}, WebP via {webp}):")
    for ext, paths in sorted(by_ext.items()):
        if ext not in ("jpg", "jpeg", "png", "webp"):
            continue
        sample = [paths[int(k * len(paths) / count)] for k in range(min(count, len(paths)))]
        stats = [(str(p), p.name, *_size_mtime(p)) for p in sample]
        best = float("inf")
        for _ in range(3):
            started = time.process_time()
            for abs_path, rel, size, mtime in stats:
                probe_file(abs_path, rel, size, mtime, 100_000_000)
            best = min(best, (time.process_time() - started) / len(stats))
        megabytes = sum(s[2] for s in stats) / len(stats) / 1e6
        print(f"  {ext:5s} {best * 1000:6.2f} ms/file  ({len(stats)} files, {megabytes:.2f} MB on average)")


def _size_mtime(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="folder for the generated set (kept)")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--per-format", type=int, default=0, metavar="N", help="only time N files per format")
    args = parser.parse_args()
    temp = None
    data = args.data
    if data is None:
        temp = tempfile.mkdtemp(prefix="kiln-bench-")
        data = Path(temp)
    try:
        manifest = _ensure_set(data, args.count)
        if args.per_format:
            per_format(data, args.per_format)
            return
        dataset, _wall, _cpu = cold_scan(data, args.workers)
        duplicate_quality(dataset, manifest)
        search_100k(dataset, dataset.config.near_threshold)
        dataset.close()
        warm_reopen(data)
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"peak RSS: {own:.0f} MiB (scanner process), {kids:.0f} MiB (largest worker)")
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
