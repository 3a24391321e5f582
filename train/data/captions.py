"""Training-time caption processing, the way kohya sd-scripts does it (``BaseDataset.process_caption``).

Order: prefix/suffix, caption dropout (rate, or every N-th epoch), then, when shuffling or tag dropout is on,
split on commas into kept tokens (the first ``keep_tokens``, or everything before ``keep_tokens_separator``,
plus anything after a second separator as a kept suffix) and flexible tokens, shuffle the flexible ones, drop
each with ``tag_dropout_rate``, and join with ``", "``. Pure Python; ``rng`` is a ``random.Random``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CaptionSettings:
    """The caption options of one training run (from ``[dataset]``)."""

    shuffle: bool = False
    keep_tokens: int | None = None
    keep_tokens_separator: str = ""
    prefix: str = ""
    suffix: str = ""
    dropout_rate: float = 0.0
    dropout_every_n_epochs: int = 0
    tag_dropout_rate: float = 0.0
    separator: str = ","

    @property
    def static(self) -> bool:
        return not (self.shuffle or self.dropout_rate or self.dropout_every_n_epochs or self.tag_dropout_rate)


def first_line(raw: bytes | str) -> str:
    """What kohya trains on: the first line of the caption file, stripped (BOM removed)."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    text = text.lstrip("\ufeff")
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _split(part: str, separator: str) -> list[str]:
    return [t.strip() for t in part.split(separator) if t.strip()]


def process_caption(
    caption: str,
    settings: CaptionSettings,
    *,
    epoch: int,
    rng: random.Random,
    subset_keep_tokens: int = 0,
) -> str:
    """The caption used for one sample in ``epoch`` (1-based, as kohya counts for dropout_every_n_epochs)."""
    if settings.prefix:
        caption = f"{settings.prefix} {caption}" if caption else settings.prefix
    if settings.suffix:
        caption = f"{caption} {settings.suffix}" if caption else settings.suffix

    drop = settings.dropout_rate > 0 and rng.random() < settings.dropout_rate
    drop = drop or (settings.dropout_every_n_epochs > 0 and epoch % settings.dropout_every_n_epochs == 0)
    if drop:
        return ""

    sep, keep_sep = settings.separator, settings.keep_tokens_separator
    if not (settings.shuffle or settings.tag_dropout_rate > 0):
        if keep_sep and keep_sep in caption:  # the separator is a marker, never text for the encoder
            parts = [p.strip().strip(sep).strip() for p in caption.split(keep_sep)]
            caption = f"{sep} ".join(p for p in parts if p)
        return caption

    fixed: list[str] = []
    suffix: list[str] = []
    if keep_sep and keep_sep in caption:
        fixed_part, flex_part = caption.split(keep_sep, 1)
        if keep_sep in flex_part:
            flex_part, suffix_part = flex_part.split(keep_sep, 1)
            suffix = _split(suffix_part, sep)
        fixed = _split(fixed_part, sep)
        flex = _split(flex_part, sep)
    else:
        flex = _split(caption, sep)
        keep = settings.keep_tokens if settings.keep_tokens is not None else subset_keep_tokens
        if keep > 0:
            fixed, flex = flex[:keep], flex[keep:]

    if settings.shuffle:
        rng.shuffle(flex)
    if settings.tag_dropout_rate > 0:
        flex = [t for t in flex if rng.random() >= settings.tag_dropout_rate]
    return ", ".join(fixed + flex + suffix)
