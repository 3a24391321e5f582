"""How fast `kiln runs` lists many runs and `kiln watch` / the TUI fold a long run's events.

    .venv/bin/python bench/bench_runs.py [--runs 200] [--steps 20000]

Prints: time to list N runs (each with a long events.jsonl), time to fold one run of STEPS steps into a
RunTracker, to tail 100 new events, and to draw the loss chart.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_runs_data import write_run
from train.rundir import read_events
from train.runs.chart import loss_chart
from train.runs.discover import find_runs
from train.runs.tail import EventTail
from train.runs.track import RunTracker


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "runs"
        t = time.perf_counter()
        for n in range(args.runs):
            write_run(folder, f"run{n:04d}", state=("finished", "stopped", "dead")[n % 3], steps=1000, total=1000)
        big = write_run(folder, "long", steps=args.steps, total=args.steps)
        print(f"wrote {args.runs} runs of 1000 steps + one of {args.steps}: {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        runs = find_runs([folder])
        print(f"find_runs: {len(runs)} runs in {1000 * (time.perf_counter() - t):.0f} ms")
        t = time.perf_counter()
        tracker = RunTracker()
        tracker.feed_all(EventTail(big / "events.jsonl").read_new())
        print(f"fold {args.steps} steps (tail from the top): {1000 * (time.perf_counter() - t):.0f} ms")
        tail = EventTail(big / "events.jsonl")
        tail.read_new()
        events = list(read_events(big))[-100:]
        with open(big / "events.jsonl", "a") as fh:
            import json

            for e in events:
                fh.write(json.dumps(e) + "\n")
        t = time.perf_counter()
        new = tail.read_new()
        tracker.feed_all(new)
        print(f"tail + fold {len(new)} new events: {1000 * (time.perf_counter() - t):.1f} ms")
        t = time.perf_counter()
        loss_chart(tracker.steps, tracker.losses, 120, 16, total_steps=tracker.total_steps)
        print(f"loss chart of {len(tracker.steps)} points at 120x16: {1000 * (time.perf_counter() - t):.1f} ms")


if __name__ == "__main__":
    main()
