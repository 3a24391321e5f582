"""Curator TUI benchmark: first paint, list filled (warm and cold index), filter time, cursor latency.

    .venv/bin/python bench/bench_tui.py                          # generates 10,000 images under a temp dir
    .venv/bin/python bench/bench_tui.py --data /tmp/tui10k       # reuse (or create) the set there
    .venv/bin/python bench/bench_tui.py --data /tmp/tui10k --only warm

Targets (docs/TUI.md, the issue): on 10,000 images with a warm index the UI is usable (every row listed)
in < 1 s; with a cold index the window appears at once and the list fills in while the scan runs.

The set: small real-photo crops (scikit-image's photographs through ``bench/photoset.make_photo``, long side
64–256 px, JPEG/PNG/WebP) in three kohya folders, each with a same-stem ``.txt`` caption of 3–25 tags.
Each measurement runs in a fresh Python process (``App.run_test()`` at 120×40, driven by Pilot); times are
from the start of that process (imports included), the way a user sees them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("10_subject", "3_style", "1_reg")
_VOCAB_TEXT = (
    "1girl 1boy solo smile looking_at_viewer outdoors indoors sky cloud tree grass building street night day "
    "long_hair short_hair black_hair blonde_hair brown_eyes blue_eyes red_dress white_shirt jacket hat "
    "glasses sitting standing from_side from_above portrait upper_body full_body close-up scenery water "
    "reflection sunlight shadow blurry_background depth_of_field photo realistic monochrome greyscale "
    "animal cat dog food cup table chair window door car bicycle motorcycle rocket space moon stars"
)
VOCAB = tuple(_VOCAB_TEXT.split())
SIZE_MARK = "bench_tui.json"


# ----------------------------------------------------------------------------------------------- data set

def _make_one(job: tuple[str, int, int, str]) -> None:
    from PIL import Image  # noqa: F401

    sys.path.insert(0, str(ROOT / "bench"))
    from photoset import make_photo, save

    folder, seed, long_side, fmt = job
    rng = random.Random(seed)
    image = make_photo(seed, long_side)
    stem = Path(folder) / f"img_{seed:06d}"
    save(image, stem.with_suffix(f".{fmt}"), fmt, rng.randint(80, 92))
    tags = rng.sample(VOCAB, rng.randint(3, 25))
    if rng.random() < 0.7:
        tags.insert(0, "kilnchar")
    stem.with_suffix(".txt").write_text(", ".join(t.replace("_", " ") for t in tags) + "\n", encoding="utf-8")


def ensure_dataset(data: Path, count: int) -> None:
    mark = data / SIZE_MARK
    if mark.exists() and json.loads(mark.read_text()).get("count") == count:
        return
    print(f"generating {count:,} images in {data} ...", flush=True)
    started = time.perf_counter()
    rng = random.Random(1)
    jobs = []
    for k in range(count):
        folder = data / rng.choices(FOLDERS, weights=(6, 3, 1))[0]
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append((str(folder), k, rng.randint(64, 256), rng.choices(("jpg", "png", "webp"), (8, 1, 1))[0]))
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(_make_one, jobs, chunksize=64))
    mark.write_text(json.dumps({"count": count}))
    print(f"  generated in {time.perf_counter() - started:.0f} s", flush=True)


def drop_index(data: Path) -> None:
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        (data / ".kiln" / name).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------- the child

async def wait_until(pilot, predicate, limit: float, step: float = 0.01) -> bool:
    """Let the app run until ``predicate()`` holds or ``limit`` seconds passed; whether it holds."""
    end = time.perf_counter() + limit
    while time.perf_counter() < end:
        if predicate():
            return True
        await pilot.pause(step)
    return predicate()


class ScreenClock:
    """When the compositor last put a frame together (``Screen._compositor_refresh``: every widget's changed lines
    rendered into the update the terminal gets; the headless driver then writes nothing, the rendering is the
    same). Installed once per child process, for every screen."""

    last_paint = 0.0
    paints = 0

    @classmethod
    def install(cls) -> None:
        from textual.screen import Screen

        if getattr(Screen, "_kiln_bench_clock", False):
            return
        original = Screen._compositor_refresh

        def timed(screen) -> None:
            original(screen)
            cls.last_paint = time.perf_counter()
            cls.paints += 1

        Screen._compositor_refresh = timed
        Screen._kiln_bench_clock = True

    @staticmethod
    def pending(app) -> bool:
        """Whether the current screen still has an update to paint."""
        screen = app.screen
        return bool(screen._layout_required or screen._scroll_required or screen._repaint_required
                    or screen._dirty_widgets)


@dataclass
class KeyTimes:
    """Per press, seconds: ``moved`` key sent -> the cursor changed; ``painted`` key sent -> every handler the
    key set off ran and the screen showing it was painted (the latency a user sees); ``details`` key sent -> the
    browser's facts and tags show the new image too, painted (they follow the cursor right after its paint); CPU seconds of the UI
    thread (``cpu_ui``, the event loop: Textual and kiln's handlers, which the machine's load does not inflate)
    and of the whole process (``cpu_process``, with the background workers) over the same span."""

    moved: list[float] = field(default_factory=list)
    painted: list[float] = field(default_factory=list)
    details: list[float] = field(default_factory=list)
    cpu_ui: list[float] = field(default_factory=list)
    cpu_process: list[float] = field(default_factory=list)

    def summary(self, suffix: str = "") -> dict[str, float]:
        out: dict[str, float] = {}
        for name, values in (("key_to_cursor", self.moved), ("key_painted", self.painted),
                             ("key_details_painted", self.details),
                             ("key_cpu_ui", self.cpu_ui), ("key_cpu_process", self.cpu_process)):
            ordered = sorted(values)
            if not ordered:
                continue
            for label, q in (("median", 0.5), ("p90", 0.9), ("max", 1.0)):
                out[f"{name}_{label}_ms{suffix}"] = ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000
        return out


def details_follow(app, lst):
    """Whether the browser's side panel shows the cursor's image (always, in a kiln that fills it at once)."""
    browser = app.view("browser")
    row = lst.cursor_row
    path = row.path if row is not None else None
    return getattr(browser, "details_path", path) == path


async def press_and_time(app, pilot, lst, key: str, times: KeyTimes) -> None:
    """``key`` sent the way a terminal sends it (Pilot.press would wait for the process to look idle, which
    never happens while a scan runs); adds its timings to ``times``. The press counts as answered when the cursor
    moved, every message queued by then was handled (``Pilot._wait_for_screen``) and the screen has no update
    left to paint; its latency ends at the last paint."""
    import asyncio

    from textual import events

    ScreenClock.install()
    before = lst.cursor
    cpu_ui, cpu_process = time.thread_time(), time.process_time()
    start = time.perf_counter()
    app._driver.send_message(events.Key(key, None))
    while lst.cursor == before and time.perf_counter() - start < 30:
        await asyncio.sleep(0.0005)
    times.moved.append(time.perf_counter() - start)
    await pilot._wait_for_screen()
    while (ScreenClock.pending(app) or ScreenClock.last_paint < start) and time.perf_counter() - start < 30:
        await asyncio.sleep(0.0005)
    times.painted.append(max(ScreenClock.last_paint, start) - start)
    if lst.id == "image-list":  # the browser's list: its facts and tags follow the cursor
        while (not details_follow(app, lst) or ScreenClock.pending(app)) and time.perf_counter() - start < 30:
            await asyncio.sleep(0.0005)
        times.details.append(max(ScreenClock.last_paint, start) - start)
    times.cpu_ui.append(time.thread_time() - cpu_ui)
    times.cpu_process.append(time.process_time() - cpu_process)


async def key_timings(app, pilot, lst, key: str, presses: int) -> KeyTimes:
    """``key`` pressed ``presses`` times at a typist's pace (see :func:`press_and_time`). Shared with
    bench_tui_grid.py."""
    import asyncio

    times = KeyTimes()
    for _ in range(presses):
        await press_and_time(app, pilot, lst, key, times)
        await asyncio.sleep(0.02)  # a typist's pace, so the presses do not queue up
    return times


async def _key_latency(app, pilot, lst, presses: int, suffix: str) -> dict:
    """Median, p90 and max of ``down`` in the list (ms)."""
    return (await key_timings(app, pilot, lst, "down", presses)).summary(suffix)


async def _view_switches(app, pilot) -> dict:
    """Number keys 2…5 then 1, the way a terminal sends them: ms until the new view is on screen and every
    handler ran. The views not shown yet are built in the background once the user is idle (prewarm)."""
    import asyncio

    from textual import events

    await asyncio.sleep(2.5)  # idle: the app builds the views nobody opened yet
    ScreenClock.install()
    out = {}
    for key, view_id in (("2", "tags"), ("3", "bulk"), ("4", "buckets"), ("5", "health"), ("1", "browser")):
        start = time.perf_counter()
        app._driver.send_message(events.Key(key, key))
        while app.active_view.id != view_id and time.perf_counter() - start < 10:
            await asyncio.sleep(0.0005)
        await pilot._wait_for_screen()
        while ScreenClock.pending(app) and time.perf_counter() - start < 10:
            await asyncio.sleep(0.0005)
        out[f"view_switch_ms[{view_id}]"] = (max(ScreenClock.last_paint, start) - start) * 1000
        await asyncio.sleep(0.2)
    return out


async def _measure(data: Path, count: int, mode: str, t0: float) -> dict:
    sys.path.insert(0, str(ROOT))
    import tui.model

    # as ``kiln DATASET`` starts (tui/cli.py): the index is read in a thread while Textual is imported
    model = tui.model.preload(data) if hasattr(tui.model, "preload") else None
    from tui.app import KilnApp
    from tui.config import TuiPrefs

    out: dict[str, float | None] = {}
    kwargs = {"model": model} if model is not None else {}
    app = KilnApp(data, image_protocol="halfblock", prefs=TuiPrefs(), persist_prefs=False, **kwargs)
    async with app.run_test(size=(120, 40)) as pilot:
        out["first_paint"] = time.perf_counter() - t0
        browser = app.view("browser")
        lst = browser.image_list

        if mode == "cold":
            await wait_until(pilot, lambda: len(lst.rows) > 0, 300)
            out["first_rows"] = time.perf_counter() - t0
            out["first_rows_count"] = len(lst.rows)
            seen = []
            end = time.perf_counter() + 600
            while time.perf_counter() < end and len(lst.rows) < count:
                seen.append((round(time.perf_counter() - t0, 2), len(lst.rows)))
                await pilot.pause(0.25)
            out["list_complete"] = time.perf_counter() - t0
            # how progressively it filled: rows shown at 25 % / 50 % / 75 % of the time to complete
            span = out["list_complete"] - out["first_rows"]
            for q in (0.25, 0.5, 0.75):
                at = out["first_rows"] + q * span
                shown = [n for t, n in seen if t <= at]
                out[f"rows_at_{int(q * 100)}pct"] = shown[-1] if shown else 0
        else:
            await wait_until(pilot, lambda: len(lst.rows) >= count, 120, 0.002)
            out["list_complete"] = time.perf_counter() - t0
            # usable: every row listed, and the first key answered on screen (the warm-start target)
            first = KeyTimes()
            await press_and_time(app, pilot, lst, "down", first)
            out["warm_usable"] = out["list_complete"] + first.painted[0]
            out["first_key_ms"] = first.painted[0] * 1000
            # CPU seconds by then (from the process start, interpreter included): what the machine's load does not
            # inflate; the UI thread's (imports, start-up, the list) and the whole process's (with the preload)
            out["warm_usable_cpu_ui"] = time.thread_time()
            out["warm_usable_cpu_process"] = time.process_time()
            await wait_until(pilot, lambda: all(r.captions_loaded for r in lst.rows[:: max(1, count // 50)]), 120)
            out["captions_loaded"] = time.perf_counter() - t0

        # cursor latency while the background work (scan, checks) still runs
        out.update(await _key_latency(app, pilot, lst, 20, "_busy"))
        if mode == "start":  # the start only: no waiting for the health checks
            await pilot.press("q")
            return out

        await wait_until(pilot, lambda: app.loaded and not app.scanning, 600, 0.05)
        out["health_done"] = time.perf_counter() - t0

        out.update(await _key_latency(app, pilot, lst, 30, ""))

        if mode == "warm":
            for query in ("kilnchar AND NOT solo", "tags<5", "bucket:512x512 OR flag:low-res"):
                before = list(lst.view)
                s = time.perf_counter()
                browser.apply_filter(query)
                await wait_until(pilot, lambda q=query, b=before: app.model.state.filter_text == q and lst.view != b, 60, 0.005)
                out[f"filter[{query}]"] = time.perf_counter() - s
                out[f"filter[{query}]_rows"] = len(lst.view)
            s = time.perf_counter()
            browser.apply_filter("")
            await pilot.pause()
            out["filter_clear"] = time.perf_counter() - s
            out.update(await _view_switches(app, pilot))
        await pilot.press("q")
    return out


def child(data: Path, count: int, mode: str, spawned: float | None) -> None:
    """``spawned``: the parent's ``time.time()`` just before it started this process (the interpreter's own start
    counts, as it does for a user); else from this function's start."""
    import asyncio

    t0 = time.perf_counter() - (time.time() - spawned) if spawned else time.perf_counter()

    result = asyncio.run(_measure(data, count, mode, t0))
    print("RESULT " + json.dumps(result), flush=True)


def run_child(data: Path, count: int, mode: str, profile: str | None) -> dict:
    cmd = [sys.executable, __file__, "--data", str(data), "--count", str(count), "--child", mode,
           "--spawned", repr(time.time())]
    if profile:
        cmd = [sys.executable, "-m", "cProfile", "-o", profile, __file__, *cmd[2:]]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"child failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="dataset folder (created when missing)")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--only", choices=("warm", "cold", "start"),
                        help="one measurement only (start: the warm start and keys while the checks run, then quit)")
    parser.add_argument("--runs", type=int, default=1, help="repeat each measurement")
    parser.add_argument("--profile", help="write a cProfile of each child to PREFIX-<mode>.prof")
    parser.add_argument("--child", choices=("warm", "cold", "start"), help=argparse.SUPPRESS)
    parser.add_argument("--spawned", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.data, args.count, args.child, args.spawned)
        return
    data = args.data or Path(tempfile.mkdtemp(prefix="kiln-bench-tui-"))
    ensure_dataset(data, args.count)
    print(f"dataset: {data} ({args.count:,} images); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    modes = [args.only] if args.only else ["cold", "warm"]
    for mode in modes:
        for run in range(args.runs):
            if mode == "cold":
                drop_index(data)
            elif not (data / ".kiln" / "index.sqlite").exists():
                print("  (warming the index first)")
                run_child(data, args.count, "cold", None)
            profile = f"{args.profile}-{mode}.prof" if args.profile else None
            result = run_child(data, args.count, mode, profile)
            print(f"{mode} index, run {run + 1} (seconds from process start unless noted):")
            for key, value in result.items():
                print(f"  {key:40s} {_fmt(value)}")
    print(f"load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
