"""Run fastdup on a folder and print its similarity pairs as JSON (run by bench_dupes.py with fastdup's own Python).

fastdup 2.x pins numpy<2 and Pillow==10.3, which kiln's environment cannot take, so it lives in a separate
virtual environment and the benchmark starts this script with that interpreter:

    python3.11 -m venv /tmp/kiln-fastdup-venv && /tmp/kiln-fastdup-venv/bin/pip install fastdup
    /tmp/kiln-fastdup-venv/bin/python bench/fastdup_runner.py FOLDER WORKDIR

Output (stdout, last line): {"seconds": s, "cpu_seconds": c, "pairs": [[file_a, file_b, similarity], ...]}.
fastdup computes an embedding per image with the ONNX model shipped in its wheel (no download) and keeps, per
image, its ``k`` nearest neighbours above ``threshold`` cosine similarity.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time


def main() -> None:
    folder, work = sys.argv[1], sys.argv[2]
    neighbours = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    os.environ.setdefault("SENTRY_OPT_OUT", "1")
    import fastdup

    started = time.perf_counter()
    fd = fastdup.create(work_dir=work, input_dir=folder)
    fd.run(overwrite=True, threshold=0.80, nearest_neighbors_k=neighbours, verbose=False)
    seconds = time.perf_counter() - started
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    similarity = fd.similarity()
    pairs = [
        [os.path.basename(a), os.path.basename(b), float(s)]
        for a, b, s in zip(similarity["filename_from"], similarity["filename_to"], similarity["distance"], strict=True)
    ]
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "pairs": pairs}))


if __name__ == "__main__":
    main()
