"""Character difficulty (the seed's categories A-I) to rank, alpha, steps and network type, and
`kiln train --print-config character --difficulty X`."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from train.config import load_preset_raw, validate_raw
from train.difficulty import CATEGORIES, DifficultyError, apply_suggestion, suggest

ROOT = Path(__file__).resolve().parents[1]


def test_table_is_the_seeds() -> None:
    assert list(CATEGORIES) == list("ABCDEFGHI")
    assert CATEGORIES["A"].ranks == (4, 8) and CATEGORIES["G"].ranks == (128, 128)
    assert CATEGORIES["I"].ranks == (192, 256)
    assert "LyCORIS-LoKR" in CATEGORIES["C"].training_types and "LyCORIS-LoKR" not in CATEGORIES["D"].training_types


@pytest.mark.parametrize("letter, rank", [("A", 8), ("B", 16), ("C", 32), ("D", 64), ("E", 64), ("F", 128),
                                          ("G", 128), ("H", 192), ("I", 256)])
def test_rank_grows_with_difficulty_and_alpha_keeps_the_ratio(letter: str, rank: int) -> None:
    s = suggest(letter, base={"network": {"dim": 32, "alpha": 16.0}})
    assert s.rank == rank and s.alpha == rank / 2 and s.network_type == "lora"
    assert s.reasons[0].startswith(f"category {letter}:") and any("alpha" in r for r in s.reasons)


def test_steps_alternatives_half_steps_and_sdxl() -> None:
    assert suggest("A").steps < suggest("E").steps < suggest("I").steps
    assert suggest("A").alternatives == ["lokr"] and suggest("D").alternatives == ["loha"]
    assert suggest("E").alternatives == []
    half = suggest("c+")
    assert half.category == "C+" and 32 < half.rank < 64 and suggest("C").steps < half.steps < suggest("D").steps
    assert suggest("F+").rank == suggest("F").rank  # the half step is for A-D
    xl = suggest("D", sdxl=True)
    assert xl.rank == 16 and any("SDXL" in r for r in xl.reasons)
    with pytest.raises(DifficultyError, match="A-I"):
        suggest("J")


def test_suggestion_applied_to_the_character_preset_validates() -> None:
    raw = apply_suggestion(load_preset_raw("character"), suggest("G"))
    raw["model"] = {"path": "/m.safetensors"}
    raw["dataset"] = {**raw["dataset"], "path": "/d"}
    cfg = validate_raw(raw)
    assert (cfg.network.dim, cfg.network.alpha, cfg.train.max_steps) == (128, 64.0, 2000)


def test_print_config_with_difficulty() -> None:
    proc = subprocess.run([sys.executable, "-m", "train.cli", "--print-config", "character", "--difficulty", "E"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "difficulty E" in proc.stdout.splitlines()[0]
    assert "#   category E:" in proc.stdout and "#   rank 64:" in proc.stdout
    parsed = tomllib.loads(proc.stdout)
    assert parsed["network"]["dim"] == 64 and parsed["network"]["alpha"] == 32.0
    assert parsed["train"]["max_steps"] == 1600
    bad = subprocess.run([sys.executable, "-m", "train.cli", "--print-config", "character", "--difficulty", "Q"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 1 and "A-I" in bad.stderr
