"""Tags that are probably wrong ("false positives/autotagging ... you want them gone"), to review and remove.

* **low-confidence**: the autotagger wrote the tag with a probability under ``min_confidence`` (kiln keeps
  each autotag run's probabilities in the index, ``curator.autotag.scores``); listed per image, weakest first.
* **contradiction**: two tags that cannot both describe one image (``short hair`` and ``long hair``;
  ``1girl`` and ``1boy`` in a single-character dataset), from ``curator/data/tag_conflicts.toml`` and your own
  file of that shape. The weaker of the two is the suspect: the lower autotag probability, else the tag that
  is rarer in the dataset.
* **rare**: a tag in ``rare`` captions or fewer (of a dataset with at least ``RARE_MIN_CAPTIONS`` captions):
  noise the model cannot learn from, or a typo.

Each :class:`Suspect` is one tag in some images; :func:`removal_changes` removes the chosen suspects from
exactly those images (a low-confidence ``hat`` stays where the tagger was sure of it).
"""

from __future__ import annotations

import tomllib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from curator.captions.tagtext import tag_key
from curator.tags.items import CaptionItem
from curator.tags.journal import CaptionChange
from curator.tags.ops import _edit

BUILTIN_CONFLICTS = "tag_conflicts.toml"
RARE_MIN_CAPTIONS = 10
SINGLE_CHARACTER_SHARE = 0.8  # captions naming one person (solo, 1girl, 1boy, ...) that make a single-character set
ONE_PERSON = frozenset({"1girl", "1boy", "1other"})
SEVERAL = frozenset({"2girls", "2boys", "3girls", "3boys", "4girls", "multiple girls", "multiple boys", "6+girls", "group"})
KINDS = ("low-confidence", "contradiction", "rare")


class ConflictError(ValueError):
    """A conflicts file that cannot be used; the message names the file, the entry and the fix."""


@dataclass
class Conflicts:
    """Tag -> (group name, class index) for every group, split into always / single-character only."""

    exclusive: dict[str, list[tuple[str, int]]] = field(default_factory=lambda: defaultdict(list))
    single_character: dict[str, list[tuple[str, int]]] = field(default_factory=lambda: defaultdict(list))
    sources: list[str] = field(default_factory=list)

    def add(self, text: str, label: str) -> None:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConflictError(f"{label}: not valid TOML ({exc})") from None
        unknown = set(data) - {"exclusive", "single_character", "meta"}
        if unknown:
            raise ConflictError(f"{label}: unknown table(s) {sorted(unknown)}; use [exclusive] and [single_character]")
        for table, target in (("exclusive", self.exclusive), ("single_character", self.single_character)):
            for name, classes in data.get(table, {}).items():
                if not isinstance(classes, list) or len(classes) < 2:
                    raise ConflictError(f'{label}: [{table}] {name} must list two or more classes, e.g. [["short hair"], ["long hair"]]')
                for index, members in enumerate(classes):
                    members = [members] if isinstance(members, str) else members
                    if not isinstance(members, list) or not all(isinstance(m, str) and m.strip() for m in members):
                        raise ConflictError(f"{label}: [{table}] {name}: class {index + 1} must be tag names")
                    for member in members:
                        target[tag_key(member)].append((f"{table}.{name}", index))
        self.sources.append(label)


def load_conflicts(files: Iterable[Path | str] = (), builtin: bool = True) -> Conflicts:
    conflicts = Conflicts()
    if builtin:
        text = resources.files("curator.data").joinpath(BUILTIN_CONFLICTS).read_text("utf-8")
        conflicts.add(text, f"builtin:{BUILTIN_CONFLICTS}")
    for path in files:
        try:
            text = Path(path).read_text("utf-8")
        except FileNotFoundError:
            raise ConflictError(f"{path}: no such conflicts file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConflictError(f"{path}: cannot read ({exc})") from None
        conflicts.add(text, str(path))
    return conflicts


@dataclass
class Suspect:
    """One tag suspected in ``paths`` (image paths), with why; ``score`` the lowest autotag probability."""

    kind: str
    tag: str
    paths: list[str]
    detail: str
    score: float | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"kind": self.kind, "tag": self.tag, "images": list(self.paths), "detail": self.detail}
        if self.score is not None:
            out["score"] = round(self.score, 4)
        return out


def _pairs(keys: frozenset[str], table: Mapping[str, list[tuple[str, int]]]) -> list[tuple[str, str, str]]:
    """(tag, other, group) for tags of ``keys`` in different classes of one group."""
    placed: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for key in keys:
        for group, index in table.get(key, ()):
            placed[group].append((key, index))
    out = []
    for group, members in placed.items():
        for n, (a, ia) in enumerate(members):
            for b, ib in members[n + 1 :]:
                if ia != ib:
                    out.append((a, b, group))
    return out


def _single_character(captions: list[tuple[CaptionItem, frozenset[str]]]) -> bool:
    """Most captions that count people name one: ``solo``, or one of 1girl/1boy/1other and no group tag."""
    people = [keys for _it, keys in captions if keys & (ONE_PERSON | SEVERAL | {"solo"})]
    if not people:
        return False
    one = sum(1 for keys in people if "solo" in keys or (len(keys & ONE_PERSON) == 1 and not keys & SEVERAL))
    return one / len(people) >= SINGLE_CHARACTER_SHARE


def find_suspects(
    items: Iterable[CaptionItem],
    confidences: Mapping[str, Mapping[str, float]],
    conflicts: Conflicts,
    min_confidence: float = 0.5,
    rare: int = 2,
    kinds: Iterable[str] = KINDS,
) -> list[Suspect]:
    """Every suspect tag in ``items``; ``confidences`` is image path -> tag key -> autotag probability."""
    wanted = set(kinds)
    captions = [(it, frozenset(it.keys)) for it in items if it.exists]
    counts: Counter[str] = Counter(k for _it, keys in captions for k in keys)
    found: dict[tuple[str, str], Suspect] = {}
    seen: set[tuple[str, str, str]] = set()

    def note(kind: str, tag: str, path: str, detail: str, score: float | None = None) -> None:
        suspect = found.get((kind, tag))
        if suspect is None:
            found[(kind, tag)] = Suspect(kind, tag, [path], detail, score)
            seen.add((kind, tag, path))
            return
        if (kind, tag, path) not in seen:
            seen.add((kind, tag, path))
            suspect.paths.append(path)
        if score is not None:
            suspect.score = score if suspect.score is None else min(suspect.score, score)

    if "low-confidence" in wanted:
        for item, keys in captions:
            for tag, score in confidences.get(item.path, {}).items():
                if tag in keys and score < min_confidence:
                    note("low-confidence", tag, item.path, f"the autotagger was under {min_confidence:.0%} sure", score)
        for suspect in found.values():
            if suspect.kind == "low-confidence" and suspect.score is not None:
                suspect.detail = f"autotag probability {suspect.score:.2f} at lowest (under {min_confidence:.2f})"
    if "contradiction" in wanted:
        tables: list[Mapping[str, list[tuple[str, int]]]] = [conflicts.exclusive]
        if _single_character(captions):
            tables.append(conflicts.single_character)
        for item, keys in captions:
            scores = confidences.get(item.path, {})
            for table in tables:
                for a, b, group in _pairs(keys, table):
                    weak, strong = _weaker(a, b, scores, counts)
                    why = (f"contradicts {strong!r} ({group.split('.')[-1].replace('_', ' ')})"
                           if group.startswith("exclusive") else
                           f"contradicts {strong!r} in a single-character dataset")  # fmt: skip
                    note("contradiction", weak, item.path, why, scores.get(weak))
    if "rare" in wanted and len(captions) >= RARE_MIN_CAPTIONS:
        for item, keys in captions:
            for key in keys:
                if counts[key] <= rare:
                    note("rare", key, item.path, f"in {counts[key]} of {len(captions)} captions", confidences.get(item.path, {}).get(key))
    order = {kind: n for n, kind in enumerate(KINDS)}
    out = sorted(found.values(), key=lambda s: (order[s.kind], s.score if s.score is not None else 2.0, -len(s.paths), s.tag))
    for suspect in out:
        suspect.paths.sort()
    return out


def _weaker(a: str, b: str, scores: Mapping[str, float], counts: Counter[str]) -> tuple[str, str]:
    """(weaker, stronger) of two contradicting tags: lower autotag probability, else rarer, else later."""
    if a in scores and b in scores and scores[a] != scores[b]:
        return (a, b) if scores[a] < scores[b] else (b, a)
    if counts[a] != counts[b]:
        return (a, b) if counts[a] < counts[b] else (b, a)
    return (max(a, b), min(a, b))


def removal_changes(items: Iterable[CaptionItem], suspects: Iterable[Suspect]) -> list[CaptionChange]:
    """Remove each suspect tag from the images it is suspected in (one change per caption file)."""
    by_path: dict[str, set[str]] = defaultdict(set)
    for suspect in suspects:
        for path in suspect.paths:
            by_path[path].add(suspect.tag)
    if not by_path:
        return []
    chosen = [it for it in items if it.path in by_path]

    def fn(item: CaptionItem, tags: list[str]) -> list[str]:
        gone = by_path[item.path]
        return [t for t in tags if tag_key(t) not in gone]

    return _edit(chosen, fn)
