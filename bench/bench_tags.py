"""Benchmark the caption engine on 10,000 captions (run by hand: ``.venv/bin/python bench/bench_tags.py``).

Targets: a bulk replace over 10k captions (read, plan, journal entry, atomic writes, final commit) < 1 s;
tag statistics over 10k captions with a warm index < 0.3 s; CLIP token counting throughput.
The dataset is built once under ``$KILN_BENCH_DIR`` (default /tmp/kiln-bench-tags) and reused.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = (
    "long hair",
    "short hair",
    "blue eyes",
    "smile",
    "1girl",
    "solo",
    "white shirt",
    "skirt",
    "outdoors",
    "looking at viewer",
    "open mouth",
    "blush",
    "brown hair",
    "black hair",
    "hat",
    "upper body",
    "sky",
    "day",
    "tree",
    "jewelry",
    "earrings",
    "holding",
    "standing",
    "sitting",
    "simple background",
)


def build(root: Path, n: int) -> None:
    from PIL import Image
    from skimage import data as skdata

    marker = root / f".built-{n}"
    if marker.exists():
        return
    if root.exists():
        shutil.rmtree(root)
    rng = random.Random(0)
    folders = [root / "10_ohwx woman", root / "5_style", root / "2_extra", root / "1_misc"]
    for f in folders:
        f.mkdir(parents=True)
    photo = root / "p.png"
    Image.fromarray(skdata.astronaut()).resize((48, 64)).save(photo)
    for i in range(n):
        folder = folders[i % len(folders)]
        os.link(photo, folder / f"img{i:05d}.png")  # hard links: same bytes, no disk cost
        tags = ["ohwx woman"] + rng.sample(WORDS, rng.randint(8, 18)) + [f"uniq{i}"]
        (folder / f"img{i:05d}.txt").write_text(", ".join(tags) + "\n", encoding="utf-8")
    photo.unlink()
    from curator.dataset import Dataset

    t = time.perf_counter()
    with Dataset.open(root, quiet=True) as ds:
        ds.scan(progress=True)
    print(f"built and scanned {n} images in {time.perf_counter() - t:.1f} s (one-off)")
    marker.write_text("ok")


def _load() -> str:
    try:
        one, five, fifteen = os.getloadavg()
        return f"load average {one:.1f} {five:.1f} {fifteen:.1f} on {os.cpu_count()} CPUs"
    except OSError:
        return ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=1, help="bulk replace round trips to time (the box is shared)")
    ap.add_argument(
        "--dir", type=Path, default=Path(os.environ.get("KILN_BENCH_DIR", "/tmp/kiln-bench-tags"))
    )
    args = ap.parse_args()
    build(args.dir, args.n)
    print(_load())

    from curator.dataset import Dataset
    from curator.tags import journal, stats
    from curator.tags.items import load_items
    from curator.tags.ops import replace_tag
    from curator.tags.tokens import count_tokens, get_tokenizer

    with Dataset.open(args.dir, quiet=True) as ds:
        t0 = time.perf_counter()
        records = ds.images()
        t_records = time.perf_counter() - t0
        print(
            f"Dataset.images() (dataset engine, incremental check of {len(records)} files): {t_records:.3f} s"
        )

        present = load_items(ds, cached=True)
        first = (
            ("long hair", "very long hair")
            if sum("long hair" in it.keys for it in present) > 1000
            else ("very long hair", "long hair")
        )
        walls = []
        for old, new in (first, first[::-1]) * args.repeat:
            t, c0 = time.perf_counter(), os.times()
            items = load_items(ds)
            t_load = time.perf_counter() - t
            changes = replace_tag(items, old, new)
            t_plan = time.perf_counter() - t - t_load
            result = journal.apply_changes(ds, changes, "replace", f"bench {old} -> {new}")
            total = time.perf_counter() - t
            c1 = os.times()
            user, system = c1.user - c0.user, c1.system - c0.system
            walls.append(total)
            print(
                f"bulk replace {old!r} -> {new!r}: {len(result.applied)} files in {total:.3f} s wall, "
                f"{user + system:.3f} s CPU (user {user:.3f}, sys {system:.3f}) "
                f"(read {t_load:.3f}, plan {t_plan:.3f}, journal+writes {total - t_load - t_plan:.3f}) "
                f"target < 1 s"
            )
        if len(walls) > 2:
            walls.sort()
            print(f"bulk replace over {len(walls)} runs: min {walls[0]:.3f} s, median {walls[len(walls) // 2]:.3f} s")
        t = time.perf_counter()
        undo = journal.undo(ds)
        print(f"undo of {len(undo.applied) if undo else 0} files: {time.perf_counter() - t:.3f} s")
        journal.redo(ds)

        stats.tag_frequencies(ds)  # warm the caption cache
        time.sleep(1.1)  # let the racy-timestamp window pass so cached rows are trusted
        stats.tag_frequencies(ds)
        for label in ("stats (warm index)", "stats by folder (warm index)") * args.repeat:
            t, c = time.perf_counter(), time.process_time()
            freq = stats.tag_frequencies(ds, by_folder="folder" in label)
            dt, dc = time.perf_counter() - t, time.process_time() - c
            size = len(freq) if isinstance(freq, dict) else len(freq.counts)
            print(f"{label}: {dt:.3f} s wall, {dc:.3f} s CPU ({size} entries) target < 0.3 s")

    with Dataset.open(args.dir, quiet=True) as ds:
        t = time.perf_counter()
        stats.tag_frequencies(ds)
        print(
            f"stats from a fresh Dataset.open (includes the dataset engine's file check): "
            f"{time.perf_counter() - t:.3f} s"
        )
        items = load_items(ds, cached=True)

    t = time.perf_counter()
    get_tokenizer()
    print(f"CLIP tokenizer load: {time.perf_counter() - t:.3f} s")
    t = time.perf_counter()
    total = sum(count_tokens(it.caption.first_line) for it in items if it.raw is not None)
    print(f"CLIP token count of {len(items)} captions: {time.perf_counter() - t:.3f} s ({total} tokens)")

    print(_load())


if __name__ == "__main__":
    main()
