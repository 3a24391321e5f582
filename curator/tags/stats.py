"""Tag statistics: frequency per dataset and per concept folder, co-occurrence, with/without a tag, CLIP
tokens.

All functions read captions through the index cache (one ``stat`` per file, no re-read when unchanged).
``scope`` is a query string / ``Query`` or an already loaded list of ``CaptionItem``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, Any, Literal, overload

from curator.captions.tagtext import tag_key
from curator.tags.items import CaptionItem, load_items
from curator.tags.query import Query
from curator.tags.tokens import LIMITS, count_tokens, token_warning

if TYPE_CHECKING:
    from curator.dataset import Dataset

Scope = Query | str | list[CaptionItem] | None


def _items(dataset: Dataset, scope: Scope) -> list[CaptionItem]:
    if isinstance(scope, list):
        return scope
    return load_items(dataset, where=scope, cached=True)


@dataclass
class TagFrequencies:
    """How many images carry each tag (each tag counted once per image)."""

    counts: Counter[str]
    images: int  # images in scope
    captioned: int  # of which have a caption file
    display: dict[str, str] = field(default_factory=dict)  # key -> most common written form

    def share(self, tag: str) -> float:
        return self.counts.get(tag_key(tag), 0) / self.images if self.images else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "captioned": self.captioned,
            "tags": [
                {"tag": k, "count": n, "share": round(n / self.images, 4) if self.images else 0}
                for k, n in self.counts.most_common()
            ],
        }


def _frequencies(items: list[CaptionItem]) -> TagFrequencies:
    captioned = [it.keys for it in items if it.raw is not None]
    counts: Counter[str] = Counter(chain.from_iterable(map(set, captioned)))  # once per image
    return TagFrequencies(counts=counts, images=len(items), captioned=len(captioned))


@overload
def tag_frequencies(dataset: Dataset, scope: Scope = None, by_folder: Literal[False] = False) -> TagFrequencies: ...


@overload
def tag_frequencies(dataset: Dataset, scope: Scope = None, *, by_folder: Literal[True]) -> dict[str, TagFrequencies]: ...


@overload
def tag_frequencies(
    dataset: Dataset, scope: Scope = None, by_folder: bool = False
) -> TagFrequencies | dict[str, TagFrequencies]: ...


def tag_frequencies(
    dataset: Dataset, scope: Scope = None, by_folder: bool = False
) -> TagFrequencies | dict[str, TagFrequencies]:
    """Tag frequencies over the scope, or per concept folder (``rel_dir`` -> frequencies) with
    ``by_folder``."""
    items = _items(dataset, scope)
    if not by_folder:
        return _frequencies(items)
    groups: dict[str, list[CaptionItem]] = {}
    for it in items:
        groups.setdefault(it.folder, []).append(it)
    return {folder: _frequencies(group) for folder, group in sorted(groups.items())}


@dataclass
class Cooccurrence:
    tag: str
    with_tag: list[str]  # image paths having the tag
    without_tag: list[str]  # image paths (captioned or not) lacking it
    together: Counter[str]  # other tag -> images where both appear

    def to_dict(self) -> dict[str, Any]:
        n = len(self.with_tag)
        return {
            "tag": self.tag,
            "with": len(self.with_tag),
            "without": len(self.without_tag),
            "images_with": self.with_tag,
            "images_without": self.without_tag,
            "cooccurring": [
                {"tag": k, "count": c, "share": round(c / n, 4) if n else 0}
                for k, c in self.together.most_common()
            ],
        }


def cooccurrence(dataset: Dataset, tag: str, scope: Scope = None) -> Cooccurrence:
    """Which tags appear together with ``tag``, and which images have / lack it."""
    key = tag_key(tag)
    with_tag: list[str] = []
    without: list[str] = []
    together: Counter[str] = Counter()
    for it in _items(dataset, scope):
        keys = set(it.keys)
        if key in keys:
            with_tag.append(it.path)
            together.update(keys - {key})
        else:
            without.append(it.path)
    return Cooccurrence(tag=key, with_tag=with_tag, without_tag=without, together=together)


@dataclass
class TokenCount:
    path: str
    caption_path: str
    tokens: int
    warning: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "caption": self.caption_path,
            "tokens": self.tokens,
            "warning": self.warning,
        }


def token_counts(dataset: Dataset, scope: Scope = None) -> list[TokenCount]:
    """CLIP tokens of each caption's first line (what kohya encodes), with warnings past 75 / 150 / 225."""
    out = []
    for it in _items(dataset, scope):
        if it.raw is None:
            continue
        n = count_tokens(it.caption.first_line)
        out.append(TokenCount(it.path, str(it.caption_path), n, token_warning(n)))
    return out


def token_summary(counts: list[TokenCount]) -> dict[str, int]:
    """How many captions are past each limit."""
    summary = {"captions": len(counts), "max": max((c.tokens for c in counts), default=0)}
    for limit in LIMITS:
        summary[f"over_{limit}"] = sum(1 for c in counts if c.tokens > limit)
    return summary
