"""Tag consolidation: aliases (synonyms to one canonical tag) and implications (a specific tag makes the
general tag it implies redundant: ``very long hair`` drops ``long hair``, ``white shirt`` drops ``shirt``).

Rules come from the shipped table (``curator/data/danbooru_tag_rules.toml``, documented there and in
docs/TAGS.md) and optional user TOML files of the same shape::

    [aliases]                       # canonical = [synonyms...]
    "blonde hair" = ["blond hair"]
    [implications]                  # specific = [general tags it makes redundant...]
    "very long hair" = ["long hair"]

Implications are transitive (``absurdly long hair`` -> ``very long hair`` -> ``long hair``). kohya's suffix
heuristic (from sd-scripts' ``finetune/clean_captions_and_tags.py``) is offered as an option: a one-word tag
is dropped when another tag ends with it as its last word (``shirt`` goes when ``white shirt`` is there;
``hair ornament`` is treated as one word).
"""

from __future__ import annotations

import tomllib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from curator.captions.tagtext import tag_key
from curator.tags.items import CaptionItem
from curator.tags.journal import CaptionChange
from curator.tags.ops import _change, substitute

BUILTIN = "danbooru_tag_rules.toml"
SUFFIX_WORDS_EXTRA = ("hair ornament",)  # multi-word tags kohya's heuristic treats as one word


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file, the entry and the fix."""


@dataclass
class RuleSet:
    aliases: dict[str, str] = field(default_factory=dict)  # alias key -> canonical tag (plain form)
    implications: dict[str, set[str]] = field(default_factory=dict)  # specific key -> implied keys (closed)
    sources: list[str] = field(default_factory=list)

    def add_file(self, path: Path | str | None = None, text: str | None = None, name: str = "") -> None:
        label = name or str(path)
        try:
            if text is None:
                if path is None:
                    raise RulesError(f"{name or 'rules'}: give a rules file path or its text")
                text = Path(path).read_text("utf-8")
            data = tomllib.loads(text)
        except FileNotFoundError:
            raise RulesError(f"{label}: no such rules file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise RulesError(f"{label}: cannot read ({exc})") from None
        except tomllib.TOMLDecodeError as exc:
            raise RulesError(f"{label}: not valid TOML ({exc})") from None
        unknown = set(data) - {"aliases", "implications", "meta"}
        if unknown:
            raise RulesError(f"{label}: unknown table(s) {sorted(unknown)}; use [aliases] and [implications]")
        for table in ("aliases", "implications"):
            section = data.get(table, {})
            if not isinstance(section, dict):
                raise RulesError(f'{label}: [{table}] must be a table of "tag" = ["tag", ...]')
            for head, values in section.items():
                if isinstance(values, str):
                    values = [values]
                if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
                    raise RulesError(
                        f"{label}: [{table}] {head!r} = {values!r}: expected a list of tag names"
                    )
                if table == "aliases":
                    for alias in values:
                        if tag_key(alias) == tag_key(head):
                            continue
                        self.aliases[tag_key(alias)] = " ".join(head.split())
                else:
                    self.implications.setdefault(tag_key(head), set()).update(tag_key(v) for v in values)
        self.sources.append(label)
        self._close()

    def _close(self) -> None:
        """Resolve alias chains and make implications transitive (cycles are reported)."""
        for alias in list(self.aliases):
            seen = {alias}
            target = self.aliases[alias]
            while tag_key(target) in self.aliases and tag_key(target) not in seen:
                seen.add(tag_key(target))
                target = self.aliases[tag_key(target)]
            self.aliases[alias] = target
        closed: dict[str, set[str]] = {}

        def reach(key: str, stack: tuple[str, ...]) -> set[str]:
            if key in closed:
                return closed[key]
            out: set[str] = set()
            for nxt in self.implications.get(key, ()):
                if nxt in stack:
                    raise RulesError(f"implication cycle: {' -> '.join(stack + (nxt,))}")
                out.add(nxt)
                out |= reach(nxt, stack + (nxt,))
            closed[key] = out
            return out

        for key in list(self.implications):
            reach(key, (key,))
        self.implications = {k: v - {k} for k, v in closed.items() if v}


def load_rules(files: Iterable[Path | str] = (), builtin: bool = True) -> RuleSet:
    rules = RuleSet()
    if builtin:
        text = resources.files("curator.data").joinpath(BUILTIN).read_text("utf-8")
        rules.add_file(text=text, name=f"builtin:{BUILTIN}")
    for f in files:
        rules.add_file(Path(f))
    return rules


@lru_cache(maxsize=1)
def known_tags() -> tuple[str, ...]:
    """Every canonical tag the built-in table names (aliases' targets, specific and general tags of the
    implications), sorted: what the TUI's tag completion offers beside the dataset's own tags."""
    rules = load_rules()
    names = set(rules.aliases.values())
    for specific, general in rules.implications.items():
        names.add(specific)
        names.update(general)
    return tuple(sorted({" ".join(n.split()) for n in names} - set(rules.aliases)))


@dataclass
class RuleHit:
    kind: str  # alias | implication | suffix
    rule: str  # human description
    files: int = 0


@dataclass
class ConsolidationPlan:
    changes: list[CaptionChange]
    hits: list[RuleHit]  # per rule, how many files it changes, most first


def _suffix_word(key: str) -> bool:
    return (" " not in key) or key in SUFFIX_WORDS_EXTRA


def consolidate_tags(
    tags: list[str], rules: RuleSet, suffix_heuristic: bool = False, conform: Callable[[str], str] = lambda t: t
) -> tuple[list[str], list[tuple[str, str]]]:
    """One caption: returns (new tags, [(kind, rule)] that fired)."""
    fired: list[tuple[str, str]] = []

    def alias(t: str) -> list[str] | None:
        k = tag_key(t)
        canon = rules.aliases.get(k)
        if canon is None or tag_key(canon) == k:
            return None
        fired.append(("alias", f"{k} -> {canon}"))
        return [conform(canon)]

    out = substitute(tags, alias)
    keys = [tag_key(t) for t in out]
    present = set(keys)
    drop: dict[str, str] = {}
    for k in keys:
        for implied in rules.implications.get(k, ()):
            if implied in present and implied not in drop:
                drop[implied] = f"{k} drops {implied}"
    fired.extend(("implication", why) for why in drop.values())
    if suffix_heuristic:
        for k in keys:
            if k in drop or not _suffix_word(k):
                continue
            for other in keys:
                if other != k and other.endswith(" " + k):
                    drop[k] = f"{other} drops {k}"
                    fired.append(("suffix", f"{other} drops {k}"))
                    break
    return [t for t, k in zip(out, keys, strict=True) if k not in drop], fired


def consolidate(
    items: Iterable[CaptionItem], rules: RuleSet, suffix_heuristic: bool = False
) -> ConsolidationPlan:
    """Plan alias + implication (+ optional suffix) consolidation; ``hits`` says what each rule changes."""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    changes = []
    for item in items:
        if not item.exists:
            continue
        cap = item.caption
        new, fired = consolidate_tags(cap.tags, rules, suffix_heuristic, conform=cap.conform)
        if new == cap.tags:
            continue
        change = _change(item, cap.with_tags(new))
        if change is None:
            continue
        changes.append(change)
        for kind_rule in set(fired):
            counts[kind_rule] += 1
    hits = [RuleHit(kind, rule, n) for (kind, rule), n in counts.items()]
    hits.sort(key=lambda h: (-h.files, h.kind, h.rule))
    return ConsolidationPlan(changes=changes, hits=hits)
