"""Character difficulty (the seed guide's categories A-I) to network settings: rank, alpha, steps and network
type, each with the reason. Used by ``kiln train --print-config character --difficulty E`` and the TUI's run
form. Pure Python.

The table is the guide's ("Character difficulty" and "Character difficulty and settings"): the rank range and
training types per category; a LoRA-LierLa at rank 128 holds characters up to G; LyCORIS LoKr is only good up
to C, LoHa up to D; ranks 64+ are a waste for A-B; categories >= E need more training time; male characters
are about half a category harder up to D (``C+``); SDXL packs about 3-4x more per rank ("XL rank 16 ~ 1.5 rank
64"). The step counts scale the guide's "~1000 steps" for characters and are kiln's extrapolation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Category:
    """One row of the seed's table."""

    letter: str
    description: str
    ranks: tuple[int, int]
    training_types: tuple[str, ...]
    steps: int


CATEGORIES: dict[str, Category] = {c.letter: c for c in (
    Category("A", 'simple "realistic" female characters without unusual clothing or details', (4, 8),
             ("LoRA-LierLa", "LyCORIS-LoKR", "textual inversion"), 1000),
    Category("B", "female characters with unusual faces, hairstyles, colors or clothes", (4, 16),
             ("LoRA-LierLa", "LyCORIS-LoKR", "LyCORIS-LoHa"), 1000),
    Category("C", "very elaborate details, extra elements like wings, armor, tails", (8, 32),
             ("LoRA-LierLa", "LyCORIS-LoKR", "LyCORIS-LoHa"), 1200),
    Category("D", "humanoids, furry characters with humanlike features, humanoid pokemon; realistic humans",
             (32, 64), ("LoRA-LierLa", "LyCORIS-LoHa"), 1500),
    Category("E", "more unusual types, pokemon with chibi proportions but still two arms and legs", (64, 64),
             ("LoRA-LierLa",), 1600),
    Category("F", "animals, pokemon with animalistic body plans, dragons, humanoid robots; ridiculously ornate "
             "costumes or armor", (64, 128), ("LoRA-LierLa",), 2000),
    Category("G", "humanoid mechs (Gundam, EVA), aliens, demons, humanoids with multiple limbs", (128, 128),
             ("LoRA-LierLa",), 2000),
    Category("H", "non-humanoid robots, monsters, insects, non-cartoony dragons, realistic animals", (128, 192),
             ("LoRA-LierLa",), 2500),
    Category("I", "eldritch abominations", (192, 256), ("LoRA-LierLa",), 3000),
)}
_TYPE_NAMES = {"LoRA-LierLa": "lora", "LyCORIS-LoKR": "lokr", "LyCORIS-LoHa": "loha"}
SDXL_RANK_DIVISOR = 4


class DifficultyError(ValueError):
    """Not a category the table has."""


@dataclass
class Suggestion:
    """What a category asks for; ``reasons`` says why, one line each."""

    category: str
    rank: int
    alpha: float
    steps: int
    network_type: str
    alternatives: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def overrides(self) -> dict[str, dict[str, object]]:
        """The keys of a kiln config this suggestion sets."""
        return {"network": {"type": self.network_type, "dim": self.rank, "alpha": self.alpha},
                "train": {"max_steps": self.steps}}


def parse_category(text: str) -> tuple[Category, bool]:
    """``"E"``, ``"c+"`` (half a category harder: male characters up to D) -> (category, half_step)."""
    match = re.fullmatch(r"\s*([A-Ia-i])\s*(\+|\.5)?\s*", text or "")
    if not match:
        raise DifficultyError(f"{text!r} is not a difficulty category: use A-I (the seed's table), "
                              "optionally with + for half a category harder (male characters up to D), e.g. C+")
    return CATEGORIES[match.group(1).upper()], bool(match.group(2))


def suggest(text: str, *, sdxl: bool = False, base: Mapping[str, Mapping[str, object]] | None = None) -> Suggestion:
    """Rank, alpha, steps and network type for a difficulty category. ``base``: the raw config it goes into
    (its alpha / rank ratio is kept, so the learning rate means the same)."""
    category, half = parse_category(text)
    letters = list(CATEGORIES)
    rank = category.ranks[1]
    steps = category.steps
    low, high = category.ranks
    span = f"{low}" if low == high else f"{low}-{high}"
    reasons = [f"category {category.letter}: {category.description}; the seed's rank {span} with "
               f"{', '.join(category.training_types)}"]
    rank_reason = (f"rank {rank}: the top of the range, since lower ranks struggle with complicated body plans"
                   if category.letter >= "C" else
                   f"rank {rank}: the top of the range; the seed calls 64 for A-B a waste of disk and compute")
    label = category.letter
    if half:
        nxt = CATEGORIES[letters[min(letters.index(category.letter) + 1, len(letters) - 1)]]
        if category.letter <= "D" and nxt is not category:
            rank = _round8((rank + nxt.ranks[1]) / 2)
            steps = int(round((steps + nxt.steps) / 2, -2))
            label += "+"
            reasons.append(f"{label}: half a category harder (the seed: male characters are about '.5' of a "
                           f"category up to D)")
            rank_reason = f"rank {rank}: between {category.letter}'s {category.ranks[1]} and {nxt.letter}'s {nxt.ranks[1]}"
        else:
            reasons.append(f"{category.letter}+: the half step applies up to D only; {category.letter} as it is")
    reasons.append(rank_reason)
    if sdxl:
        xl = max(4, _round8(rank / SDXL_RANK_DIVISOR) if rank >= 16 else rank // 2 or 4)
        reasons.append(f"SDXL: rank {xl} instead of {rank} (the seed: each SDXL rank holds about 3-4x more; "
                       "'XL rank 16 ~ 1.5 rank 64')")
        rank = xl
    ratio = _alpha_ratio(base)
    alpha = float(max(1.0, round(rank * ratio, 2)))
    reasons.append(f"alpha {alpha:g}: alpha/rank {ratio:g} as in the config it goes into (the learning rate keeps "
                   "its meaning); alpha never above rank")
    reasons.append(f"steps {steps}: the seed's ~1000 steps for characters"
                   + (", more training time from E up (kiln's scaling)" if category.letter >= "E" else
                      " (more for C-D, kiln's scaling)" if category.letter >= "C" else ""))
    alternatives = [_TYPE_NAMES[t] for t in category.training_types if t in _TYPE_NAMES and t != "LoRA-LierLa"]
    reasons.append("network lora (LoRA-LierLa): the seed's choice for characters in every category"
                   + (f"; {' or '.join(alternatives)} also work for {category.letter} (smaller files, slower to "
                      "learn)" if alternatives else f"; LyCORIS types cannot hold {category.letter} well"))
    return Suggestion(category=label, rank=rank, alpha=alpha, steps=steps, network_type="lora",
                      alternatives=alternatives, reasons=reasons)


def _alpha_ratio(base: Mapping[str, Mapping[str, object]] | None) -> float:
    network = (base or {}).get("network") or {}
    dim, alpha = network.get("dim"), network.get("alpha")
    if isinstance(dim, int | float) and isinstance(alpha, int | float) and dim > 0 and 0 < alpha <= dim:
        return float(alpha) / float(dim)
    return 0.5


def _round8(value: float) -> int:
    return int(max(8, 8 * math.ceil(value / 8)))


def apply_suggestion(raw: dict[str, object], suggestion: Suggestion) -> dict[str, object]:
    """``raw`` with the suggestion's keys set (a new dict; other keys untouched). ``max_epochs`` is dropped
    so the suggested step count decides."""
    out: dict[str, object] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for section, values in suggestion.overrides().items():
        table = out.setdefault(section, {})
        assert isinstance(table, dict), f"[{section}] is a table"
        table.update(values)
        if section == "train":
            table.pop("max_epochs", None)
    return out
