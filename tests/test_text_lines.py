"""DB's post-processing of a text map (curator.textdetect.boxes): which regions are text lines, how far each
grows back, and the share of the map they cover, on maps whose answer is worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from curator.textdetect.boxes import text_line_area


def _area(text_map: NDArray[np.float32], unclip: float = 1.5, elongation: float = 2.5, **kw: float) -> float:
    return text_line_area(text_map, 0.3, 0.6, unclip, elongation, **kw)


def _map(shape: tuple[int, int], *boxes: tuple[int, int, int, int], value: float = 1.0) -> NDArray[np.float32]:
    out = np.zeros(shape, dtype=np.float32)
    for y, x, h, w in boxes:
        out[y : y + h, x : x + w] = value
    return out


def test_a_line_grows_back_by_dbs_unclip_offset() -> None:
    line = _map((200, 200), (100, 40, 10, 100))  # 10 x 100: D = 1000 * 1.5 / 220 = 6.8 cells
    assert _area(line, unclip=0.0) == pytest.approx(1000 / 40_000)
    offset = 1000 * 1.5 / 220  # whole cells within D: 6 on each side, round corners
    grown = (10 + 12) * 100 + 2 * 6 * 10 + np.pi * 6**2
    assert _area(line) == pytest.approx(grown / 40_000, rel=0.02) and 6 < offset < 7


def test_compact_faint_and_thin_regions_are_not_text_lines() -> None:
    blob = _map((200, 200), (50, 50, 60, 60))  # a square: a cup's rim, not a line
    assert _area(blob) == 0.0 and _area(blob, elongation=1.0) > 0.09
    faint = _map((200, 200), (100, 40, 10, 100), value=0.5)  # over the pixel threshold, under the box threshold
    assert _area(faint) == 0.0
    thin = _map((200, 200), (100, 40, 2, 100))  # under 3 px of the input
    assert _area(thin) == 0.0 and _area(thin, cells_per_pixel=0.25) > 0  # a quarter-size map: 8 px of input
    assert _area(np.zeros((50, 50), dtype=np.float32)) == 0.0


def test_lines_that_overlap_once_grown_count_once_and_stop_at_the_edge() -> None:
    one = _area(_map((100, 300), (40, 0, 8, 300)))
    assert 5 < 8 * 300 * 1.5 / 616 < 6 and one == pytest.approx((8 + 2 * 5) * 300 / 30_000)  # full width: no corners
    stacked = _area(_map((100, 300), (40, 0, 8, 300), (50, 0, 8, 300)))  # a 2-cell gap, each grown 5 cells
    assert one < stacked < 2 * one
    full = _area(_map((40, 300), *[(y, 0, 6, 300) for y in range(0, 40, 10)]))
    assert full == pytest.approx(1.0)  # nothing counted past the map


def test_a_rotated_line_is_a_line() -> None:
    yy, xx = np.indices((200, 200))
    slanted = (np.abs((yy - 100) - 0.5 * (xx - 100)) < 5) & (np.abs(xx - 100) < 60)
    area = _area(slanted.astype(np.float32))
    assert area > slanted.mean() * 1.5
