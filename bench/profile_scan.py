"""CPU per image of each stage of the scan's probe, in one process (run by hand).

    .venv/bin/python bench/profile_scan.py FOLDER [--files 600]

Takes up to ``--files`` images from FOLDER (shuffled, seed 0; read into memory first, so no disk time), runs the
probe's stages one after the other on each (SHA-256, header, reduced decode per format, grey conversion,
thumbnail, pHash, edge bitmap, RGB thumbnail, quality statistics, JSON) and prints ``time.process_time`` per stage averaged
over all files. The stages are the probe's own functions (``curator.scan.probe``); EXIF orientation is left
out (the bench corpora have none). Decode stages are per format, so the format mix matters: say it with the
figures.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from curator.scan import probe  # noqa: E402
from curator.scan.edges import edge_bits  # noqa: E402
from curator.scan.hashing import THUMB_SIDE, file_sha256, thumb_hashes, thumbnail_image  # noqa: E402
from curator.scan.quality import measure  # noqa: E402

SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--files", type=int, default=600)
    args = parser.parse_args()
    files = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
    random.Random(0).shuffle(files)
    files = files[: args.files]
    blobs = [p.read_bytes() for p in files]
    spent: Counter[str] = Counter()
    clock = time.process_time

    for path, data in zip(files, blobs, strict=True):
        suffix = path.suffix.lower().lstrip(".")
        t = clock()
        file_sha256(data)
        spent["sha256"] += clock() - t
        t = clock()
        result = probe.ProbeResult(path=path.name, size=len(data), mtime_ns=0, frames=1)
        if suffix == "webp" and (info := probe.webp_info(data)) is not None and not info.has_alpha:
            spent["header"] += clock() - t
            t = clock()
            reduced = probe._webp_reduced(data, (info.width, info.height))
        else:
            image = Image.open(io.BytesIO(data))
            spent["header"] += clock() - t
            t = clock()
            reduced = probe._decode_reduced(image, result, data)
        spent[f"decode {suffix}"] += clock() - t
        if reduced is None:
            continue
        t = clock()
        grey = reduced.image.convert("L") if reduced.image.mode != "L" else reduced.image
        thumb_image = thumbnail_image(grey)
        thumb = np.asarray(thumb_image)
        spent["grey + thumbnail"] += clock() - t
        t = clock()
        thumb_hashes(thumb_image)
        spent["pHash + mirror"] += clock() - t
        t = clock()
        edge_bits(grey)
        spent["edge bitmap"] += clock() - t
        t = clock()
        rgb = None
        if reduced.image.mode == "RGB":
            rgb = np.asarray(reduced.image.resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX))
        stats = measure(np.asarray(grey), thumb, rgb=rgb, chroma=reduced.chroma)
        json.dumps(stats.to_dict(), separators=(",", ":"))
        spent["quality statistics + JSON"] += clock() - t

    count = max(1, len(files))
    mix = Counter(p.suffix.lower() for p in files)
    print(f"{len(files)} files: " + ", ".join(f"{n} {s}" for s, n in mix.most_common()))
    for stage, seconds in spent.most_common():
        print(f"{stage:28s} {seconds * 1000 / count:7.3f} ms/image")
    print(f"{'total':28s} {sum(spent.values()) * 1000 / count:7.3f} ms/image")


if __name__ == "__main__":
    main()
