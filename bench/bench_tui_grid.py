"""Browse view grid benchmark: a screen of thumbnails painted, key latency, paging, fast scrolling.

    .venv/bin/python bench/bench_tui_grid.py                              # copies /tmp/kiln-tui10k to a temp dir
    .venv/bin/python bench/bench_tui_grid.py --data /tmp/tui10k           # use (and write the index of) that set
    .venv/bin/python bench/bench_tui_grid.py --size 80x24

The set is bench/bench_tui.py's (10,000 small real-photo crops with captions); without ``--data`` the
read-only copy at /tmp/kiln-tui10k is copied first (or generated there by ``bench/bench_tui.py --data``).
Everything runs in one fresh process with ``App.run_test()``; times are wall-clock on this machine.

Reported:
  first_screen_s       app start → every visible cell shows its thumbnail (cold thumbnail cache)
  key_*_ms             → / ↓ in the grid: until the cursor moved, until every handler ran (median, p90)
  page_fill_ms         pgdn at a reading pace → the new screen's thumbnails drawn (it was prefetched)
  jump_fill_ms         the cursor moved ~1000 images away → that screen's thumbnails drawn (nothing cached)
  fast_scroll_*        30 × pgdn at a typist's 20 ms pace: cells scrolled past vs thumbnails decoded
  repaint_ms           drawing every line of a full grid once (render_line, thumbnails ready)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench_tui import key_timings, wait_until  # the same waiting and key timing as the list benchmark

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SET = Path("/tmp/kiln-tui10k")


def _ms(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] * 1000


async def measure(data: Path, size: tuple[int, int], t0: float) -> dict:
    sys.path.insert(0, str(ROOT))
    from textual import events

    from tui.app import KilnApp
    from tui.config import TuiPrefs

    out: dict[str, object] = {}
    app = KilnApp(data, image_protocol="halfblock", prefs=TuiPrefs(browser_layout="grid"), persist_prefs=False)
    async with app.run_test(size=size) as pilot:
        browser = app.view("browser")
        lst, grid = browser.image_list, browser.image_grid
        await wait_until(pilot, lambda: len(lst.rows) > 0 and grid.size.area > 0, 120)
        out["rows"] = len(lst.rows)
        out["cells_on_screen"] = len(grid.visible_positions())
        out["columns"] = grid.geometry.columns
        await wait_until(pilot, lambda: grid.all_visible_drawn(), 120, 0.005)
        out["first_screen_s"] = time.perf_counter() - t0
        await wait_until(pilot, lambda: app.loaded and not app.scanning, 600, 0.05)
        await wait_until(pilot, lambda: not grid.loader.busy, 60)
        out["background_done_s"] = time.perf_counter() - t0

        for key in ("right", "down"):
            times = await key_timings(app, pilot, lst, key, 30)
            out[f"key_{key}_to_cursor_median_ms"] = _ms(times.moved, 0.5)
            out[f"key_{key}_painted_median_ms"] = _ms(times.painted, 0.5)
            out[f"key_{key}_painted_p90_ms"] = _ms(times.painted, 0.9)

        fills = []
        await pilot.press("g")
        await pilot.pause(0.2)
        for _ in range(10):
            await wait_until(pilot, lambda: not grid.loader.busy, 60)
            for _ in range(3):  # well past anything prefetched: a cold screen
                await pilot.press("pagedown")
            await wait_until(pilot, lambda: not grid.loader.busy, 60)
            await pilot.pause(0.1)
            before = lst.cursor
            start = time.perf_counter()
            app._driver.send_message(events.Key("pagedown", None))  # Pilot.press would wait for idle
            while (lst.cursor == before or not grid.all_visible_drawn()) and time.perf_counter() - start < 60:
                await asyncio.sleep(0.0005)
            fills.append(time.perf_counter() - start)
        out["page_fill_median_ms"] = _ms(fills, 0.5)
        out["page_fill_max_ms"] = _ms(fills, 1.0)

        jumps = []
        for k in range(10):  # a jump far away (G, a flagged image, the scrollbar): nothing prefetched there
            await wait_until(pilot, lambda: not grid.loader.busy, 60)
            await pilot.pause(0.1)
            start = time.perf_counter()
            lst.cursor = (lst.cursor + 997 * (k + 1)) % len(lst.view)
            while not grid.all_visible_drawn() and time.perf_counter() - start < 60:
                await asyncio.sleep(0.0005)
            jumps.append(time.perf_counter() - start)
        out["jump_fill_median_ms"] = _ms(jumps, 0.5)
        out["jump_fill_max_ms"] = _ms(jumps, 1.0)

        await wait_until(pilot, lambda: not grid.loader.busy, 60)
        decoded, first = grid.loader.decoded, lst.cursor
        for _ in range(30):
            app._driver.send_message(events.Key("pagedown", None))
            await asyncio.sleep(0.02)
        await wait_until(pilot, lambda: not grid.loader.busy and grid.all_visible_drawn(), 60)
        out["fast_scroll_cells_passed"] = lst.cursor - first
        out["fast_scroll_decoded"] = grid.loader.decoded - decoded

        start = time.perf_counter()
        for _ in range(20):
            grid._style_key = None
            for y in range(grid.size.height):
                grid.render_line(y)
        out["repaint_ms"] = (time.perf_counter() - start) / 20 * 1000
        await pilot.press("q")
    return out


def main() -> None:
    t0 = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="dataset to open (its .kiln index is written)")
    parser.add_argument("--size", default="120x40", help="terminal size, e.g. 80x24")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    tmp = None
    data = args.data
    if data is None:
        if not DEFAULT_SET.is_dir():
            raise SystemExit(f"{DEFAULT_SET} is missing: run bench/bench_tui.py --data DIR first, then --data DIR")
        tmp = tempfile.TemporaryDirectory(prefix="kiln-grid-bench-")
        data = Path(tmp.name) / "set"
        print(f"copying {DEFAULT_SET} to {data} ...", flush=True)
        shutil.copytree(DEFAULT_SET, data)
        t0 = time.perf_counter()  # the copy is not part of the measurement
    try:
        result = asyncio.run(measure(data, (width, height), t0))
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}, indent=2))


if __name__ == "__main__":
    main()
