"""Tag consolidation suggestions from the dataset's own captions.

Two kinds, each with its counts and applied through the journal like every caption edit:

* **consolidate**: interrogators emit a group of tags for one thing ("boots, red footwear, red boots"); the
  most specific one says it all. A tag *makes another redundant* when
  - the tag rules say so (the built-in Danbooru table or yours: ``red footwear`` implies ``footwear``);
  - the other is its head noun (``red boots`` ends with ``boots``);
  - both share the modifier and one head implies the other (``red boots`` is a kind of ``red footwear``
    because ``boots`` implies ``footwear``);
  chained (``red boots`` -> ``boots`` -> ``footwear``). For every tag that makes others redundant in the
  captions where both appear (and that no other tag there makes redundant), the suggestion keeps it and drops
  them *there* (a ``boots`` elsewhere stays).
* **implication**: the data alone: a general tag that is in every caption holding a specific one (``sks`` in
  all 30 captions with ``red scarf``, and in 12 others); dropping the general tag where the specific is spends
  no information. Only specific tags in ``min_implication`` captions or more, general tags that are not in
  nearly every caption (those are for ``kiln tags absorb``), and pairs no consolidation covers.

Suggestions have stable ids (``consolidate:red boots``, ``implication:red scarf>sks``) and a number in the
listing; :func:`suggestion_changes` turns any set of them into one list of caption changes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from curator.captions.tagtext import tag_key
from curator.tags.consolidate import RuleSet
from curator.tags.items import CaptionItem
from curator.tags.journal import CaptionChange
from curator.tags.ops import _edit

CONSTANT_SHARE = 0.95  # a general tag in this share of captions is a constant trait, not an implication


@dataclass(frozen=True, slots=True)
class Dropped:
    """A tag a suggestion drops: in ``together`` of the ``count`` captions that hold it, next to the keeper."""

    tag: str
    together: int
    count: int
    reason: str


@dataclass(slots=True)
class Suggestion:
    """Keep ``keep`` and drop ``drop`` from the captions holding both (``files`` captions change)."""

    id: str
    kind: str  # "consolidate" | "implication"
    keep: str
    keep_count: int
    drop: list[Dropped] = field(default_factory=list)
    files: int = 0
    example: tuple[str, str, str] | None = None  # (image path, tags before, tags after) of one caption

    @property
    def description(self) -> str:
        dropped = ", ".join(d.tag for d in self.drop)
        return f"keep {self.keep!r}, drop {dropped} where {self.keep!r} is ({self.files} captions)"

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "kind": self.kind,
            "keep": self.keep,
            "keep_count": self.keep_count,
            "files": self.files,
            "drop": [{"tag": d.tag, "together": d.together, "count": d.count, "reason": d.reason} for d in self.drop],
            "example": (
                {"path": self.example[0], "before": self.example[1], "after": self.example[2]} if self.example else None
            ),
        }


def _words(key: str) -> tuple[str, ...]:
    return tuple(key.split())


class Redundancy:
    """Which tag of a vocabulary makes which others redundant (and why), closed over chains."""

    def __init__(self, vocabulary: Iterable[str], rules: RuleSet) -> None:
        vocab = set(vocabulary)
        direct: dict[str, dict[str, str]] = defaultdict(dict)
        by_words = {_words(k): k for k in vocab}
        for key in vocab:
            for general in rules.implications.get(key, ()):
                if general in vocab and general != key:
                    direct[key][general] = f"{key!r} implies {general!r} (tag rules)"
            words = _words(key)
            for cut in range(1, len(words)):
                head = by_words.get(words[cut:])
                if head is not None and head != key:
                    direct[key].setdefault(head, f"{head!r} is the head of {key!r}")
        for key in vocab:  # same modifier, heads in a relation: red boots -> red footwear (boots -> footwear)
            words = _words(key)
            for cut in range(1, len(words)):
                modifier, head = words[:cut], " ".join(words[cut:])
                for general_head in set(rules.implications.get(head, ())) | set(direct.get(head, {})):
                    related = by_words.get(modifier + _words(general_head))
                    if related is not None and related != key:
                        direct[key].setdefault(related, f"{key!r} is a kind of {related!r} ({head} -> {general_head})")
        self.direct = {k: dict(v) for k, v in direct.items()}
        self.closed: dict[str, dict[str, str]] = {}
        for key in self.direct:
            self.closed[key] = self._reach(key)

    def _reach(self, key: str) -> dict[str, str]:
        out: dict[str, str] = {}
        stack = [(key, "")]
        seen = {key}
        while stack:
            node, via = stack.pop()
            for general, reason in self.direct.get(node, {}).items():
                if general in seen:
                    continue
                seen.add(general)
                out[general] = f"{reason}, via {via!r}" if via else reason
                stack.append((general, via or general))
        return out

    def redundant(self, key: str) -> dict[str, str]:
        """Tags ``key`` makes redundant -> why."""
        return self.closed.get(key, {})


def _keysets(items: Iterable[CaptionItem]) -> list[tuple[CaptionItem, frozenset[str]]]:
    return [(it, frozenset(it.keys)) for it in items if it.exists]


def _example(item: CaptionItem, drop: set[str]) -> tuple[str, str, str]:
    tags = list(item.caption.tags)
    kept = [t for t in tags if tag_key(t) not in drop]
    return item.path, ", ".join(tags), ", ".join(kept)


def consolidations(captions: list[tuple[CaptionItem, frozenset[str]]], rules: RuleSet) -> list[Suggestion]:
    counts: Counter[str] = Counter(k for _it, keys in captions for k in keys)
    relation = Redundancy(counts, rules)
    together: dict[str, Counter[str]] = defaultdict(Counter)
    files: Counter[str] = Counter()
    example: dict[str, CaptionItem] = {}
    for item, keys in captions:
        hits = {key: [g for g in relation.redundant(key) if g in keys] for key in keys}
        dropped_here = {g for found in hits.values() for g in found}
        for key, hit in hits.items():
            if hit and key not in dropped_here:  # only the most specific tags of a caption keep: red boots, not boots
                together[key].update(hit)
                files[key] += 1
                example.setdefault(key, item)
    out = []
    for keep, drops in together.items():
        reasons = relation.redundant(keep)
        dropped = [Dropped(g, n, counts[g], reasons[g]) for g, n in sorted(drops.items(), key=lambda x: (-x[1], x[0]))]
        suggestion = Suggestion(f"consolidate:{keep}", "consolidate", keep, counts[keep], dropped, files[keep])
        suggestion.example = _example(example[keep], {d.tag for d in dropped})
        out.append(suggestion)
    return out


def implications(
    captions: list[tuple[CaptionItem, frozenset[str]]],
    covered: set[tuple[str, str]],
    min_count: int = 3,
) -> list[Suggestion]:
    counts: Counter[str] = Counter(k for _it, keys in captions for k in keys)
    by_tag: dict[str, list[int]] = defaultdict(list)
    for n, (_it, keys) in enumerate(captions):
        for key in keys:
            by_tag[key].append(n)
    total = len(captions)
    out = []
    for specific, rows in by_tag.items():
        if len(rows) < min_count:
            continue
        always = frozenset.intersection(*(captions[n][1] for n in rows)) - {specific}
        general = [
            g for g in always
            if counts[g] > counts[specific] and counts[g] < CONSTANT_SHARE * total and (specific, g) not in covered
        ]  # fmt: skip
        for g in sorted(general):
            drop = Dropped(g, len(rows), counts[g], f"{g!r} is in all {len(rows)} captions with {specific!r} "
                           f"(and in {counts[g] - len(rows)} others)")  # fmt: skip
            suggestion = Suggestion(f"implication:{specific}>{g}", "implication", specific, len(rows), [drop], len(rows))
            suggestion.example = _example(captions[rows[0]][0], {g})
            out.append(suggestion)
    return out


def suggest(
    items: Iterable[CaptionItem], rules: RuleSet, min_implication: int = 3, kinds: Iterable[str] | None = None
) -> list[Suggestion]:
    """Every suggestion for ``items``, consolidations first, each kind by captions changed (most first)."""
    wanted = set(kinds) if kinds is not None else {"consolidate", "implication"}
    captions = _keysets(items)
    found = consolidations(captions, rules) if "consolidate" in wanted or "implication" in wanted else []
    covered = {(s.keep, d.tag) for s in found for d in s.drop}
    if "implication" in wanted:
        implied = implications(captions, covered, min_implication)
    else:
        implied = []
    if "consolidate" not in wanted:
        found = []
    found.sort(key=lambda s: (-s.files, s.keep))
    implied.sort(key=lambda s: (-s.files, s.keep, s.drop[0].tag))
    return found + implied


def choose(suggestions: list[Suggestion], wanted: Iterable[str]) -> list[Suggestion]:
    """The suggestions named by number (1-based, as listed), by id, or ``all``; raises ValueError for an
    unknown one, naming it."""
    picked: list[Suggestion] = []
    by_id = {s.id: s for s in suggestions}
    for token in wanted:
        token = token.strip()
        if token == "all":
            return list(suggestions)
        if token.isdigit() and 1 <= int(token) <= len(suggestions):
            chosen = suggestions[int(token) - 1]
        elif token in by_id:
            chosen = by_id[token]
        elif f"consolidate:{tag_key(token)}" in by_id:
            chosen = by_id[f"consolidate:{tag_key(token)}"]
        else:
            raise ValueError(
                f"no suggestion {token!r}: give a number 1-{len(suggestions)}, an id such as "
                f"{suggestions[0].id if suggestions else 'consolidate:red boots'!r}, or all"
            )
        if chosen not in picked:
            picked.append(chosen)
    return picked


def suggestion_changes(items: Iterable[CaptionItem], chosen: Iterable[Suggestion]) -> list[CaptionChange]:
    """One caption change per file: each chosen suggestion drops its tags where its kept tag is."""
    drops: dict[str, set[str]] = defaultdict(set)
    for suggestion in chosen:
        drops[suggestion.keep] |= {d.tag for d in suggestion.drop}
    if not drops:
        return []

    def fn(_item: CaptionItem, tags: list[str]) -> list[str]:
        keys = {tag_key(t) for t in tags}
        gone: set[str] = set()
        for keep, tags_to_drop in drops.items():
            if keep in keys:
                gone |= tags_to_drop - {keep}
        return [t for t in tags if tag_key(t) not in gone]

    return _edit(items, fn, needs=frozenset(drops))
