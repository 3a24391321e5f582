"""Reading what `kiln lora grid` wrote (its JSON index beside the sheet): the axes (bases, saved LoRAs, block
presets, strengths, prompts) and the image of each cell, for browsing a grid without rendering anything (the
TUI's grid browser). Textual-free, torch-free."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from train.lora.errors import LoraToolError

SKIPPED_FOLDERS = ("state", "state.tmp", "state.old", "samples")


@dataclass(frozen=True)
class GridLora:
    file: str
    label: str
    epoch: int | None
    step: int | None


@dataclass(frozen=True)
class GridCell:
    base: str
    lora: str | None  # None: the control (the base model alone)
    preset: str | None
    strength: float
    prompt_index: int
    seed: int
    image: Path


@dataclass(frozen=True)
class GridIndex:
    """One grid: its axes in the order they were rendered, and every cell."""

    path: Path
    sheet: Path
    bases: tuple[str, ...]
    loras: tuple[GridLora, ...]
    presets: tuple[str | None, ...]
    strengths: tuple[float, ...]
    prompts: tuple[str, ...]
    cells: tuple[GridCell, ...]

    def cell(self, base: int, lora: int, preset: int, strength: int, prompt: int) -> GridCell | None:
        """The cell at these axis positions; strength 0 is the base's control image for the prompt."""
        base_path, value = self.bases[base], self.strengths[strength]
        for cell in self.cells:
            if cell.base != base_path or cell.prompt_index != prompt:
                continue
            if value == 0:
                if cell.lora is None:
                    return cell
            elif cell.lora == self.loras[lora].file and cell.preset == self.presets[preset] \
                    and cell.strength == value:
                return cell
        return None


def read_grid_index(path: Path) -> GridIndex:
    """Read a grid's JSON index; a file that is not one gets a message naming it."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LoraToolError(f"{path}: cannot read this grid index ({exc})") from None
    if not _looks_like_grid(raw):
        raise LoraToolError(f"{path}: not a grid index written by `kiln lora grid` (no sheet, strengths and cells)")
    folder = path.parent
    try:
        loras = tuple(GridLora(str(x["file"]), str(x.get("label") or Path(str(x["file"])).stem),
                               _int_or_none(x.get("epoch")), _int_or_none(x.get("step"))) for x in raw["loras"])
        cells = tuple(GridCell(str(c["base"]), None if c.get("lora") is None else str(c["lora"]),
                               None if c.get("preset") is None else str(c["preset"]), float(c["strength"]),
                               int(c["prompt_index"]), int(c.get("seed", 0)), folder / str(c["image"]))
                      for c in raw["cells"])
        return GridIndex(
            path=path, sheet=folder / str(raw["sheet"]), bases=tuple(str(b) for b in raw["bases"]), loras=loras,
            presets=tuple(None if p is None else str(p) for p in raw.get("presets") or [None]),
            strengths=tuple(float(s) for s in raw["strengths"]), prompts=tuple(str(p) for p in raw["prompts"]),
            cells=cells,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise LoraToolError(f"{path}: a grid index with a missing or malformed entry ({exc!r})") from None


def find_grids(run_dir: Path) -> list[Path]:
    """Grid indexes in a run directory (and its direct subfolders), newest first."""
    run_dir = Path(run_dir)
    candidates = list(run_dir.glob("*.json")) + [
        p for p in run_dir.glob("*/*.json") if p.parent.name not in SKIPPED_FOLDERS]
    found: list[tuple[float, Path]] = []
    for path in candidates:
        try:
            if path.stat().st_size > 50_000_000 or not _looks_like_grid(json.loads(path.read_text(encoding="utf-8"))):
                continue
            found.append((path.stat().st_mtime, path))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
    return [p for _, p in sorted(found, key=lambda item: (-item[0], str(item[1])))]


def _looks_like_grid(raw: object) -> bool:
    return isinstance(raw, dict) and all(k in raw for k in ("sheet", "strengths", "cells", "bases", "prompts",
                                                            "loras"))


def _int_or_none(value: object) -> int | None:
    return int(value) if isinstance(value, int | float | str) and str(value).strip() else None
