"""Turning one image's probabilities into an ordered tag list: thresholds, MCut, ratings, exclusions."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from curator.autotag.labels import Labels
from curator.autotag.tagtext import display_tag, tag_key

CHARACTER_MCUT_FLOOR = 0.15  # as in SmilingWolf's wd-tagger app: MCut never drops character tags below this


def mcut_threshold(probs: np.ndarray) -> float:
    """Maximum Cut Thresholding (Largeron et al., 2012): sort descending, cut at the middle of the largest gap.

    With fewer than two probabilities there is no gap; the threshold is then just below the only value
    (so it is kept) or 1.0 for an empty array (nothing is kept).
    """
    values = np.sort(np.asarray(probs, dtype=np.float64).ravel())[::-1]
    if values.size == 0:
        return 1.0
    if values.size == 1:
        return float(np.nextafter(values[0], -np.inf))
    gaps = values[:-1] - values[1:]
    t = int(np.argmax(gaps))
    return float((values[t] + values[t + 1]) / 2.0)


@dataclass(frozen=True)
class SelectionRules:
    """The knobs of tag selection (a subset of AutotagConfig, so this module stays config-agnostic)."""

    general_threshold: float = 0.35
    character_threshold: float = 0.85
    general_mcut: bool = False
    character_mcut: bool = False
    ratings: bool = False
    exclude: frozenset[str] = frozenset()  # tag_key()s
    keep_underscores: bool = False
    character_first: bool = False
    max_tags: int | None = None  # caps general tags (most confident kept)


@dataclass
class Prediction:
    """Tags chosen for one image, in caption order, with the probability of each (keyed by caption text)."""

    tags: list[str]
    rating: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    general_threshold: float = 0.0
    character_threshold: float = 0.0


def _above(probs: np.ndarray, indices: np.ndarray, threshold: float) -> list[int]:
    """Indices whose probability is strictly above threshold, most probable first (stable for ties)."""
    if indices.size == 0:
        return []
    p = probs[indices]
    keep = indices[p > threshold]
    order = np.argsort(-probs[keep], kind="stable")
    return [int(i) for i in keep[order]]


def select_tags(probs: np.ndarray, labels: Labels, rules: SelectionRules) -> Prediction:
    """Pick tags for one image. Order: rating (if asked), then character/general as configured.

    Within a category tags are sorted by probability, most confident first. Excluded tags are
    dropped before `max_tags` is applied, so the cap counts only tags that reach the caption.
    """
    probs = np.asarray(probs, dtype=np.float32).ravel()
    if probs.shape[0] != len(labels):
        raise ValueError(f"model gave {probs.shape[0]} probabilities but the tag list has {len(labels)} tags")

    general_t = rules.general_threshold
    if rules.general_mcut and labels.general.size:
        general_t = mcut_threshold(probs[labels.general])
    character_t = rules.character_threshold
    if rules.character_mcut and labels.character.size:
        character_t = max(CHARACTER_MCUT_FLOOR, mcut_threshold(probs[labels.character]))

    scores: dict[str, float] = {}
    seen: set[str] = set()

    def take(indices: list[int], limit: int | None = None) -> list[str]:
        out: list[str] = []
        for i in indices:
            text = display_tag(labels.names[i], rules.keep_underscores)
            key = tag_key(text)
            if key in rules.exclude or key in seen:
                continue
            if limit is not None and len(out) >= limit:
                break
            seen.add(key)
            scores[text] = float(probs[i])
            out.append(text)
        return out

    rating_tags: list[str] = []
    rating_name: str | None = None
    if labels.rating.size:
        best = int(labels.rating[int(np.argmax(probs[labels.rating]))])
        rating_name = labels.names[best]
        if rules.ratings:
            rating_tags = take([best])

    character = take(_above(probs, labels.character, character_t))
    general = take(_above(probs, labels.general, general_t), rules.max_tags)
    ordered = character + general if rules.character_first else general + character
    return Prediction(
        tags=rating_tags + ordered,
        rating=rating_name,
        scores=scores,
        general_threshold=general_t,
        character_threshold=character_t,
    )
