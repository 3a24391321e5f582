"""A loss chart in text: braille dots (2x4 per cell), a y axis with values and an x axis with steps.

``loss_chart(steps, losses, width, height)`` returns a ``rich.text.Text`` (raw loss dim, smoothed bright, the
validation loss, when given, in its own colour), used by the live display and the TUI alike.
"""

from __future__ import annotations

import math

from rich.text import Text

from train.runs.track import smooth, smoothing_weight

_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))  # [row][col] bit of a braille cell
_BRAILLE = 0x2800


def _fmt_value(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1000 or a < 0.001:
        return f"{v:.1e}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.3f}"


def _fmt_step(v: int) -> str:
    return f"{v / 1000:.1f}k".replace(".0k", "k") if v >= 10000 else str(v)


def loss_chart(
    steps: list[int], losses: list[float], width: int, height: int, *, smoothed: bool = True,
    raw_style: str = "grey50", smooth_style: str = "bold cyan", axis_style: str = "grey62",
    total_steps: int | None = None, val_steps: list[int] | None = None, val_losses: list[float] | None = None,
    val_style: str = "bold magenta",
) -> Text:
    """The chart in ``width`` x ``height`` cells (axes included). Few points or a tiny area give a note.
    ``val_steps`` / ``val_losses``: the validation loss, drawn over the training loss on the same axes."""
    points = [(s, v) for s, v in zip(steps, losses, strict=False) if v is not None and math.isfinite(v)]
    label_w = 7
    plot_w, plot_h = width - label_w - 1, height - 1
    if plot_w < 4 or plot_h < 2:
        return Text("(too small for a chart)", style=axis_style)
    if len(points) < 2:
        return Text("waiting for the first steps…" if not points else f"step {points[0][0]}: loss "
                    f"{points[0][1]:.4f}", style=axis_style)
    xs = [s for s, _ in points]
    ys = [v for _, v in points]
    sm = smooth(ys, smoothing_weight(len(ys))) if smoothed else []
    val = [(s, v) for s, v in zip(val_steps or [], val_losses or [], strict=False)
           if v is not None and math.isfinite(v)]
    lo, hi = min(ys + [v for _, v in val]), max(ys + [v for _, v in val])
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5 * (abs(lo) or 1) * 0.01, hi + 0.5 * (abs(hi) or 1) * 0.01
    x0 = xs[0]
    x1 = max(xs[-1], total_steps or 0) if total_steps and total_steps > xs[-1] else xs[-1]
    if x1 == x0:
        x1 = x0 + 1
    dot_w, dot_h = plot_w * 2, plot_h * 4

    raw_cells = [[0] * plot_w for _ in range(plot_h)]
    smooth_cells = [[0] * plot_w for _ in range(plot_h)]
    val_cells = [[0] * plot_w for _ in range(plot_h)]

    def plot(cells: list[list[int]], series: list[float], xs: list[int] = xs) -> None:
        # Per dot column the min..max of its points; consecutive columns joined by straight segments.
        cols: dict[int, list[int]] = {}
        sx, sy, last_c, last_r = (dot_w - 1) / (x1 - x0), (dot_h - 1) / (hi - lo), dot_w - 1, dot_h - 1
        for x, y in zip(xs, series, strict=False):
            c = int((x - x0) * sx + 0.5)
            r = int((hi - y) * sy + 0.5)
            c = 0 if c < 0 else last_c if c > last_c else c
            r = 0 if r < 0 else last_r if r > last_r else r
            span = cols.get(c)
            if span is None:
                cols[c] = [r, r, r]  # min, max, last
            else:
                if r < span[0]:
                    span[0] = r
                elif r > span[1]:
                    span[1] = r
                span[2] = r

        def dot(c: int, r: int) -> None:
            cells[r // 4][c // 2] |= _DOTS[r % 4][c % 2]

        prev: tuple[int, int] | None = None
        for c in sorted(cols):
            lo_r, hi_r, last_r = cols[c]
            if prev is not None:
                pc, pr = prev
                first_r = lo_r if abs(lo_r - pr) < abs(hi_r - pr) else hi_r
                for cc in range(pc + 1, c):
                    r = round(pr + (first_r - pr) * (cc - pc) / (c - pc))
                    dot(cc, r)
                lo_r, hi_r = min(lo_r, pr if c - pc == 1 else lo_r), max(hi_r, pr if c - pc == 1 else hi_r)
            for r in range(lo_r, hi_r + 1):
                dot(c, r)
            prev = (c, last_r)

    plot(raw_cells, ys)
    if smoothed:
        plot(smooth_cells, sm)
    if val:
        plot(val_cells, [v for _, v in val], [s for s, _ in val])
    text = Text(no_wrap=True, overflow="crop")
    for row in range(plot_h):
        if row == 0:
            label = _fmt_value(hi)
        elif row == plot_h - 1:
            label = _fmt_value(lo)
        elif row == plot_h // 2 and plot_h >= 5:
            label = _fmt_value((hi + lo) / 2)
        else:
            label = ""
        text.append(label.rjust(label_w)[:label_w] + "┤" if label else " " * label_w + "│", style=axis_style)
        for col in range(plot_w):
            s_bits, r_bits, v_bits = smooth_cells[row][col], raw_cells[row][col], val_cells[row][col]
            if v_bits:
                text.append(chr(_BRAILLE | v_bits), style=val_style)
            elif s_bits:
                text.append(chr(_BRAILLE | s_bits | r_bits), style=smooth_style)
            elif r_bits:
                text.append(chr(_BRAILLE | r_bits), style=raw_style)
            else:
                text.append(" ")
        text.append("\n")
    left, right = _fmt_step(x0), _fmt_step(int(x1))
    mid = _fmt_step(int((x0 + x1) / 2))
    axis = [" "] * plot_w
    for pos, label in ((0, left), ((plot_w - len(mid)) // 2, mid), (plot_w - len(right), right)):
        if plot_w >= len(left) + len(mid) + len(right) + 4 or label is not mid:
            for i, ch in enumerate(label):
                if 0 <= pos + i < plot_w:
                    axis[pos + i] = ch
    text.append(" " * label_w + "└", style=axis_style)
    text.append("".join(axis), style=axis_style)
    return text
