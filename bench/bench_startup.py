"""Start-up time of `kiln --help` and the headless commands' help (target: under 0.3 s).

Run: .venv/bin/python bench/bench_startup.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

KILN = Path(sys.executable).with_name("kiln")
COMMANDS = [["--help"], ["scan", "--help"], ["check", "--help"], ["tags", "--help"], ["train", "--help"]]


def best_of(argv: list[str], runs: int = 7) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([str(KILN), *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    print(f"{'command':<24} {'best s':>8} {'median s':>9}")
    for argv in COMMANDS:
        best, median = best_of(argv)
        flag = "" if median < 0.3 else "  <-- over 0.3 s"
        print(f"{'kiln ' + ' '.join(argv):<24} {best:8.3f} {median:9.3f}{flag}")


if __name__ == "__main__":
    main()
