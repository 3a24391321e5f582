"""Bulk caption operations as pure functions: items in, ``CaptionChange`` list out (nothing is written).

Apply the result with :func:`curator.tags.journal.apply_changes`; preview it with :func:`plan_to_diff`.
Tags are matched by their key (``Long_Hair`` == ``long hair``); tags an operation does not touch keep their
exact text, new tags are written in each file's own conventions.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from curator.captions.caption import Caption, quick_retag
from curator.captions.tagtext import escape_parens, plain, tag_key, underscores_to_spaces, unescape_parens
from curator.tags.bulk import paused_gc
from curator.tags.items import CaptionItem
from curator.tags.journal import CaptionChange

Position = Literal["front", "end"] | int


class OperationError(ValueError):
    """Bad operation arguments (e.g. an invalid regex); the message says what to fix."""


def _change(item: CaptionItem, caption: Caption) -> CaptionChange | None:
    after = caption.to_bytes()
    if after == item.raw:
        return None
    return CaptionChange(item.caption_path, item.raw, after)


QuickEdit = Callable[[list[str], list[str]], list[str] | None]
"""An operation as ``(tags, their keys) -> new tags | None`` (None: no change), for :func:`quick_retag`."""


def _edit(
    items: Iterable[CaptionItem],
    fn: Callable[[CaptionItem, list[str]], list[str] | None],
    create: bool = False,
    conform: bool = True,
    needs: frozenset[str] | None = None,
    quick: QuickEdit | None = None,
) -> list[CaptionChange]:
    """Run ``fn(item, tags) -> new tags`` over items; items without a caption file are skipped unless
    ``create``; with ``needs``, captions holding none of those keys are skipped without calling ``fn``.
    ``quick``: the same operation on (tags, keys), worked out by :func:`quick_retag` on the captions it
    handles (same bytes, no ``Caption`` built); ``fn`` does the rest."""
    with paused_gc():
        return _edit_items(items, fn, create, conform, needs, quick)


def _edit_items(
    items: Iterable[CaptionItem],
    fn: Callable[[CaptionItem, list[str]], list[str] | None],
    create: bool,
    conform: bool,
    needs: frozenset[str] | None,
    quick: QuickEdit | None = None,
) -> list[CaptionChange]:
    changes = []
    needles = _needles(needs) if needs is not None else None
    keys: dict[str, str] = {}  # tag_key memo for quick_retag
    for item in items:
        if item.raw is None and not create:
            continue
        if needles and item.raw is not None and item.cached_keys is None and item.raw.isascii():
            low = item.raw.lower()
            if not any(all(w in low for w in words) for words in needles):
                continue  # cheap byte test: none of the tags can be in this caption
        if quick is not None and conform and item.raw is not None and item.separator == ",":
            after = quick_retag(item.raw, quick, keys)
            if after is not None:
                if after != item.raw:
                    changes.append(CaptionChange(item.caption_path, item.raw, after))
                continue
        if needs is not None and needs.isdisjoint(item.keys):
            continue
        new = fn(item, list(item.caption.tags))
        if new is None or (new == item.caption.tags and item.raw is not None):
            continue
        change = _change(item, item.caption.with_tags(new, conform=conform))
        if change:
            changes.append(change)
    return changes


_WORD = re.compile(r"[a-z0-9]{2,}")


def _needles(keys: frozenset[str]) -> list[list[bytes]] | None:
    """For each key its ASCII words as bytes, longest first. A tag's key is its text lower-cased with
    underscores as spaces, parentheses unescaped and blanks collapsed, so every such word of the key is in
    the lower-cased bytes of an ASCII caption holding the tag, whichever way it is spelt (``Long_Hair``,
    ``long  hair``, ``x_\\(y\\)``): a caption missing a word of each key cannot hold any of them. None when
    some key has no such word (no shortcut possible)."""
    out = []
    for key in keys:
        words = sorted(set(_WORD.findall(key)), key=len, reverse=True)
        if not words:
            return None
        out.append([w.encode("ascii") for w in words])
    return out


def split_tags(text: str, separator: str = ",") -> list[str]:
    """User input ``"a, b"`` -> ``["a", "b"]``."""
    return [t.strip() for t in text.split(separator) if t.strip()]


def _pattern_matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    """Tag -> does it match one of ``patterns`` (tag names compared by key, or ``*``/``?`` globs)."""
    keys = [tag_key(p) for p in patterns]
    exact = frozenset(k for k in keys if "*" not in k and "?" not in k)
    globs = [re.compile(fnmatch.translate(k)) for k in keys if k not in exact]
    if not globs:
        return lambda tag: tag_key(tag) in exact
    return lambda tag: (k := tag_key(tag)) in exact or any(g.match(k) for g in globs)


def _only_exact(patterns: Iterable[str]) -> frozenset[str] | None:
    """The keys of ``patterns`` when none is a glob (lets operations skip captions without them)."""
    keys = frozenset(tag_key(p) for p in patterns)
    return None if any("*" in k or "?" in k for k in keys) else keys


# ---- add / remove / replace ----------------------------------------------------------------------------


def add_tags(
    items: Iterable[CaptionItem], tags: list[str] | str, position: Position = "end", create: bool = True
) -> list[CaptionChange]:
    """Add tags (skipped where already present) at the front, the end or index ``position``.
    Images without a caption file get one when ``create``."""
    new_tags = split_tags(tags) if isinstance(tags, str) else [t.strip() for t in tags if t.strip()]
    if not new_tags:
        raise OperationError("no tag to add: give one or more tags, comma separated")

    def fn(_item: CaptionItem, current: list[str]) -> list[str]:
        have = {tag_key(t) for t in current}
        missing = [t for t in new_tags if tag_key(t) not in have]
        if not missing:
            return current
        if position == "front":
            return missing + current
        if position == "end":
            return current + missing
        idx = max(0, min(int(position), len(current)))
        return current[:idx] + missing + current[idx:]

    return _edit(items, fn, create=create)


def remove_tags(items: Iterable[CaptionItem], patterns: list[str] | str) -> list[CaptionChange]:
    """Remove every tag matching one of ``patterns`` (tag names, or globs with ``*``/``?``)."""
    pats = split_tags(patterns) if isinstance(patterns, str) else list(patterns)
    if not pats:
        raise OperationError("no tag to remove: give one or more tags or globs, comma separated")
    hit = _pattern_matcher(pats)
    return _edit(items, lambda _i, tags: [t for t in tags if not hit(t)], needs=_only_exact(pats))


def replace_tag(items: Iterable[CaptionItem], old: str, new: str, regex: bool = False) -> list[CaptionChange]:
    """Rename a tag. Plain: ``old`` matched by key (globs allowed), replaced in place by ``new`` (a comma list
    gives several tags; empty removes). Regex: ``re.sub(old, new)`` on each tag's plain form (spaces,
    unescaped parentheses); a tag that becomes empty is removed. Duplicates created are dropped."""
    if regex:
        try:
            rx = re.compile(old)
        except re.error as exc:
            pos = f" at position {exc.pos + 1}" if exc.pos is not None else ""
            raise OperationError(f"bad regular expression {old!r}: {exc.msg}{pos}") from None

        def subst(tag: str) -> list[str] | None:
            form = plain(tag)
            try:
                out = rx.sub(new, form)
            except (re.error, IndexError) as exc:
                raise OperationError(f"bad replacement {new!r}: {exc}") from None
            return None if out == form else split_tags(out)
    else:
        hit = _pattern_matcher([old])
        replacement = split_tags(new)
        exact = _only_exact([old])
        if exact is not None:  # by key: the caption's keys are computed already (no tag_key per tag)
            return _edit(
                items, lambda item, tags: _replace_keys(tags, item.caption.keys, exact, replacement), needs=exact,
                quick=lambda tags, keys: _replace_keys(tags, keys, exact, replacement),
            )

        def subst(tag: str) -> list[str] | None:
            return list(replacement) if hit(tag) else None

    return _edit(items, lambda _i, tags: substitute(tags, subst))


def _replace_keys(tags: list[str], keys: list[str], old: frozenset[str], replacement: list[str]) -> list[str]:
    """``substitute`` for a replacement by key: ``keys`` are the keys of ``tags``; each tag whose key is in
    ``old`` becomes ``replacement`` (minus the tags whose key the caption has otherwise)."""
    if old.isdisjoint(keys):
        return tags
    replaced = [replacement if key in old else None for key in keys]
    return _merge_replacements(tags, replaced, {k for k in keys if k not in old})


def substitute(tags: list[str], subst: Callable[[str], list[str] | None]) -> list[str]:
    """Replace each tag by ``subst(tag)`` (None: keep it). A replacement whose key is already in the caption
    is dropped (no duplicates are created); duplicates the caption already had are left alone."""
    replaced = [subst(t) for t in tags]
    if all(r is None for r in replaced):
        return tags
    return _merge_replacements(tags, replaced, {tag_key(t) for t, r in zip(tags, replaced, strict=True) if r is None})


def _merge_replacements(tags: list[str], replaced: list[list[str] | None], seen: set[str]) -> list[str]:
    """Each tag kept (``None``) or swapped for its replacement tags, a replacement whose key is in ``seen``
    (the kept tags' keys, then each inserted one) left out."""
    out: list[str] = []
    for tag, rep in zip(tags, replaced, strict=True):
        if rep is None:
            out.append(tag)
            continue
        for new_tag in rep:
            k = tag_key(new_tag)
            if k not in seen:
                seen.add(k)
                out.append(new_tag)
    return out


def _dedupe_list(tags: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for t in tags:
        k = tag_key(t)
        if k not in seen:
            seen.add(k)
            out.append(t)
    return out


def dedupe(items: Iterable[CaptionItem]) -> list[CaptionChange]:
    """Drop repeated tags within each caption (by key), keeping the first occurrence."""
    return _edit(items, lambda _i, tags: _dedupe_list(tags))


# ---- sort ------------------------------------------------------------------------------------------------


def sort_tags(
    items: Iterable[CaptionItem],
    by: Literal["alpha", "freq"] = "alpha",
    keep: int = 0,
    frequencies: Counter[str] | None = None,
) -> list[CaptionChange]:
    """Sort each caption's tags alphabetically or by dataset frequency (most frequent first), leaving the
    first ``keep`` tags in place (the trigger / keep_tokens part)."""
    items = list(items)
    if by not in ("alpha", "freq"):
        raise OperationError(f"sort by {by!r}: use alpha or freq")
    if by == "freq" and frequencies is None:
        frequencies = Counter(k for it in items if it.exists for k in set(it.keys))
    freq = frequencies or Counter()

    def sort_key(tag: str) -> tuple[int, str] | tuple[str]:
        k = tag_key(tag)
        return (-freq.get(k, 0), k) if by == "freq" else (k,)

    return _edit(items, lambda _i, tags: tags[:keep] + sorted(tags[keep:], key=sort_key))


# ---- trigger word ------------------------------------------------------------------------------------------


@dataclass
class TriggerPlan:
    changes: list[CaptionChange]
    keep_tokens: int  # the --keep_tokens value to train with
    words: dict[str, list[str]] = field(default_factory=dict)  # folder -> trigger tags used
    skipped_folders: list[str] = field(default_factory=list)  # folders with no class tokens and no word given


def set_trigger(items: Iterable[CaptionItem], word: str | None = None, separator: str = ",") -> TriggerPlan:
    """Put the activation token first: insert it, or move it to the front when present (a spelling variant
    such as ``ohwx_woman`` becomes the exact trigger). Without ``word``, each concept folder's class tokens
    are used. ``keep_tokens`` is how many leading tags it occupies. Regularization subsets are left alone."""
    words: dict[str, list[str]] = {}
    skipped: set[str] = set()
    keep = 0

    def fn(item: CaptionItem, tags: list[str]) -> list[str] | None:
        nonlocal keep
        if item.record.subset.is_reg:  # regularization images keep their class captions
            return None
        source = word if word is not None else item.record.subset.class_tokens
        trigger = split_tags(source or "", separator)
        if not trigger:
            skipped.add(item.folder)
            return None
        words[item.folder] = trigger
        keep = max(keep, len(trigger))
        keys = {tag_key(t) for t in trigger}
        rest = [t for t in tags if tag_key(t) not in keys]
        return trigger + rest  # verbatim: the activation token must be exactly what prompts will use

    changes = _edit(items, fn, create=True, conform=False)
    return TriggerPlan(changes=changes, keep_tokens=keep, words=words, skipped_folders=sorted(skipped))


# ---- normalisation -----------------------------------------------------------------------------------------


def normalize(
    items: Iterable[CaptionItem],
    spaces: bool = False,
    lower: bool = False,
    escape: bool = False,
    unescape: bool = False,
) -> list[CaptionChange]:
    """Rewrite tag text: underscores to spaces (kaomoji keep theirs), lower case, escape parentheses for
    A1111 prompts (``\\(``) or unescape them. Separator spacing and line endings are kept."""
    if escape and unescape:
        raise OperationError("escape and unescape contradict each other: pick one")
    if not (spaces or lower or escape or unescape):
        raise OperationError("nothing to normalise: choose spaces, lower, escape and/or unescape")

    def one(tag: str) -> str:
        if spaces:
            tag = " ".join(underscores_to_spaces(tag).split())
        if lower:
            tag = tag.lower()
        if escape:
            tag = escape_parens(tag)
        if unescape:
            tag = unescape_parens(tag)
        return tag

    return _edit(items, lambda _i, tags: [one(t) for t in tags], conform=False)


# ---- absorb into the trigger -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AbsorbCandidate:
    folder: str
    tag: str  # the tag key
    count: int
    total: int

    @property
    def share(self) -> float:
        return self.count / self.total if self.total else 0.0


def absorb_candidates(
    items: Iterable[CaptionItem], min_share: float = 0.8, exclude: Iterable[str] = ()
) -> list[AbsorbCandidate]:
    """Tags present in at least ``min_share`` of a concept folder's captioned images (the character's constant
    traits the trigger word should absorb), most common first. ``exclude`` (e.g. the trigger) is left out."""
    if not 0 < min_share <= 1:
        raise OperationError(f"min share {min_share} must be in (0, 1], e.g. 0.8 for 80%")
    skip = {tag_key(t) for t in exclude}
    per_folder: dict[str, Counter[str]] = {}
    totals: Counter[str] = Counter()
    triggers: dict[str, set[str]] = {}
    for it in items:
        if not it.exists:
            continue
        totals[it.folder] += 1
        per_folder.setdefault(it.folder, Counter()).update(set(it.keys))
        triggers.setdefault(it.folder, {tag_key(t) for t in split_tags(it.record.subset.class_tokens or "")})
    out = []
    for folder, counter in per_folder.items():
        for tag, n in counter.items():
            if tag in skip or tag in triggers.get(folder, set()):
                continue
            if n / totals[folder] >= min_share:
                out.append(AbsorbCandidate(folder, tag, n, totals[folder]))
    out.sort(key=lambda c: (c.folder, -c.count, c.tag))
    return out


def absorb(
    items: Iterable[CaptionItem], tags: Iterable[str], folders: Iterable[str] | None = None
) -> list[CaptionChange]:
    """Remove the chosen constant-trait tags (from ``folders`` only, when given)."""
    only = set(folders) if folders is not None else None
    scoped = [it for it in items if only is None or it.folder in only]
    return remove_tags(scoped, list(tags))


# ---- preview ----------------------------------------------------------------------------------------------


@dataclass
class FileDiff:
    """One file's planned change, tag by tag."""

    path: Path
    before_tags: list[str]
    after_tags: list[str]
    removed: list[str]  # tags (as written before) that are gone
    added: list[str]  # tags (as written after) that are new
    created: bool = False
    deleted: bool = False
    reordered: bool = False
    before_text: str = ""
    after_text: str = ""
    joiner: str = ", "  # how the file separates tags (for display)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "removed": self.removed,
            "added": self.added,
            "created": self.created,
            "deleted": self.deleted,
            "reordered": self.reordered,
            "before": self.before_text,
            "after": self.after_text,
        }


def plan_to_diff(changes: Iterable[CaptionChange], separator: str = ",") -> list[FileDiff]:
    """Per-file diffs of planned changes (tags removed / added, order changes, file created or removed)."""
    diffs = []
    for c in changes:
        before = Caption.parse(c.before, separator) if c.before is not None else None
        after = Caption.parse(c.after, separator) if c.after is not None else None
        btags = before.tags if before else []
        atags = after.tags if after else []
        bcount = Counter(btags)
        acount = Counter(atags)
        removed = list((bcount - acount).elements())
        added = list((acount - bcount).elements())
        removed = [t for t in btags if t in set(removed)]
        added = [t for t in atags if t in set(added)]
        common_b = [t for t in btags if t in acount]
        common_a = [t for t in atags if t in bcount]
        diffs.append(
            FileDiff(
                path=Path(c.caption_path),
                before_tags=btags,
                after_tags=atags,
                removed=removed,
                added=added,
                created=c.before is None,
                deleted=c.after is None,
                reordered=common_b != common_a,
                before_text=before.first_line if before else "",
                after_text=after.first_line if after else "",
                joiner=shown.style.joiner if (shown := after or before) is not None else ", ",
            )
        )
    return diffs
