"""The curator in a real pseudo-terminal, as a user starts it: `kiln DATASET`, then `q`.

Checks what reaches the terminal: a 256-colour terminal (TERM=xterm-256color, no COLORTERM) gets only
256-colour escapes, a true-colour one gets 24-bit colours; both draw the list, the half-block preview and the
footer, and `q` ends the program with status 0. Also checks that each theme keeps the states that matter
(cursor, selection, panels) apart once its colours are reduced to the 256-colour palette.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("textual")

from tests.test_tui_workflows import copy_example

TRUECOLOR = re.compile(rb"\x1b\[[0-9;]*[34]8;2;")
EIGHT_BIT = re.compile(rb"\x1b\[[0-9;]*[34]8;5;")


def run_in_pty(dataset: Path, env_extra: dict[str, str], tmp_path: Path, seconds: float = 8.0) -> tuple[bytes, int]:
    """Start `kiln DATASET` in a 100×30 pty, wait until the list is drawn, press q; (output, exit status)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLORTERM", "TMUX", "KITTY_WINDOW_ID", "TERM_PROGRAM",
                                                            "NO_COLOR", "TEXTUAL_COLOR_SYSTEM")}
    env.update({"KILN_CONFIG_DIR": str(tmp_path / "config"), "KILN_IMAGE_PROTOCOL": "halfblock", **env_extra})
    proc = subprocess.Popen(
        [sys.executable, "-m", "tui.cli", str(dataset)], stdin=slave, stdout=slave, stderr=slave, env=env,
        cwd=Path(__file__).resolve().parents[1], start_new_session=True,
    )
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + 60
    quit_at: float | None = None
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            if quit_at is None and b"astronaut" in out and b"23/23 images" in out:
                quit_at = time.monotonic() + 2.0  # let the preview and the background work draw
            if quit_at is not None and time.monotonic() >= quit_at:
                os.write(master, b"q")
                quit_at = float("inf")
            if proc.poll() is not None:
                break
        try:
            status = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            status = -1  # still running: the assertion shows what it drew
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(master)
    return bytes(out), status


@pytest.mark.parametrize(("env", "truecolor"), [
    ({"TERM": "xterm-256color"}, False),
    ({"TERM": "xterm-256color", "COLORTERM": "truecolor"}, True),
])
def test_the_app_draws_for_the_terminal_it_runs_in(env: dict[str, str], truecolor: bool, tmp_path: Path) -> None:
    dataset = copy_example(tmp_path / "dataset")
    out, status = run_in_pty(dataset, env, tmp_path)
    assert status == 0, out[-2000:]
    assert b"astronaut" in out and b"\xe2\x96\x80" in out  # the list, and the preview's half blocks (U+2580)
    if truecolor:
        assert TRUECOLOR.search(out)
    else:
        assert EIGHT_BIT.search(out), "no 256-colour escapes"
        assert not TRUECOLOR.search(out), "24-bit colour sent to a 256-colour terminal"


@pytest.mark.parametrize(("protocol", "sequence"), [
    ("sixel", re.compile(rb"\x1bP[0-9;]*q\"1;1;\d+;\d+")),  # DCS … q with raster attributes: a sixel image
    ("kitty", re.compile(rb"\x1b_G[^\x1b]*a=[Tp]")),  # APC G … a=T/a=p: a kitty graphics transmit or place
])
def test_graphics_previews_reach_the_terminal(protocol: str, sequence: re.Pattern, tmp_path: Path) -> None:
    """With a graphics protocol chosen, the preview is sent as that protocol's image (textual-image), and the
    app still starts and quits cleanly when the terminal does not answer its size queries."""
    dataset = copy_example(tmp_path / "dataset")
    env = {"TERM": "xterm-256color", "COLORTERM": "truecolor", "KILN_IMAGE_PROTOCOL": protocol}
    out, status = run_in_pty(dataset, env, tmp_path)
    assert status == 0, out[-2000:]
    assert b"astronaut" in out
    assert sequence.search(out), f"no {protocol} image in the output"


def _theme_colors_256(name: str) -> dict[str, int]:
    """The theme's key colours reduced to xterm-256 palette numbers (transparent ones left out)."""
    from rich.color import ColorSystem
    from textual.color import Color

    from tui.themes import load_themes

    variables = load_themes().themes[name].to_color_system().generate()
    keys = ("background", "surface", "panel", "primary", "accent", "boost", "foreground", "block-cursor-background",
            "error", "warning", "success")
    out = {}
    for key in keys:
        value = variables.get(key)
        if not value:
            continue
        color = Color.parse(value)
        if color.a < 1:
            continue
        out[key] = color.rich_color.downgrade(ColorSystem.EIGHT_BIT).number
    return out


@pytest.mark.parametrize("theme", ["kiln-dark", "kiln-light", "kiln-high-contrast"])
def test_each_theme_keeps_its_states_apart_in_256_colours(theme: str) -> None:
    colors = _theme_colors_256(theme)
    assert {"background", "foreground", "primary", "panel"} <= set(colors), colors
    assert colors["foreground"] != colors["background"]
    assert colors["primary"] != colors["background"]
    assert colors["panel"] != colors["background"] or theme == "kiln-high-contrast"
    cursor = colors.get("block-cursor-background", colors["primary"])
    assert cursor != colors["background"]
    assert colors["error"] != colors["background"] and colors["warning"] != colors["background"]
