"""The filter query language used for scoping everywhere (CLI ``--where``, the TUI, the trainer).

Grammar (keywords AND / OR / NOT are case-insensitive; juxtaposed terms are ANDed)::

    query   := or
    or      := and ( OR and )*
    and     := unary ( [AND] unary )*
    unary   := NOT unary | '-' unary | primary
    primary := '(' or ')' | term
    term    := FIELD ':' VALUE                  tag: name: folder: flag: bucket:
             | NUMFIELD OP NUMBER               tokens tags  with  < <= > >= = (also ``tokens:N``)
             | VALUE                            a bare word is ``tag:VALUE``

Values are bare words (parentheses inside a word are kept when balanced: ``tag:ganyu_(genshin_impact)``) or
double-quoted strings with ``\\"`` and ``\\\\`` escapes (``tag:"long hair"``). ``*`` and ``?`` are globs.
Tags compare by their key (case, underscores/spaces and escaped parentheses do not matter).

* ``tag:X`` the caption has tag X; ``name:X`` file name contains X (glob: the whole name matches);
* ``folder:X`` the concept folder (``rel_dir``, or its last part, or a glob on it);
* ``flag:KIND`` the image has a health flag of that kind (``flag:*`` any flag);
* ``bucket:WxH`` kohya assigns the image to that bucket (needs bucket settings in the context);
* ``tokens>N`` CLIP tokens of the caption; ``tags<N`` number of tags.

A bad query raises :class:`QueryError` whose ``position`` is the offending character. So does a value that
can match nothing: a ``flag:`` kind that does not exist (the error lists the kinds, as ``kiln check --kind``
does), and, when the caller names them (:func:`parse_query`'s ``folders`` / ``buckets``), a folder that is not
one of the dataset's or a bucket its bucket settings do not have.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from curator.captions.tagtext import tag_key
from curator.records import FLAG_KINDS

FIELDS = ("tag", "name", "folder", "flag", "bucket", "tokens", "tags")
NUMERIC = ("tokens", "tags")
CAPTION_FIELDS = frozenset({"tag", "tokens", "tags"})  # what needs the caption file; the rest is the image's
OPS = ("<=", ">=", "<", ">", "=")


class QueryError(ValueError):
    """A query that cannot be parsed. ``position`` is the 0-based index of the offending character."""

    def __init__(self, message: str, position: int, text: str = "") -> None:
        self.message = message
        self.position = position
        self.text = text
        super().__init__(f"{message} (at position {position + 1})")

    def pointer(self) -> str:
        """The query with a caret under the error."""
        return f"{self.text}\n{' ' * self.position}^"


@dataclass
class QueryItem:
    """What a query looks at for one image. ``tokens`` may be a callable computed on first use."""

    path: str  # posix relative to the dataset root
    name: str
    folder: str  # the subset's rel_dir ('' for a flat dataset)
    tags: frozenset[str]  # tag keys
    n_tags: int = 0
    flags: frozenset[str] = frozenset()
    width: int = 0
    height: int = 0
    bucket: tuple[int, int] | None = None
    token_count: int | Callable[[], int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        if callable(self.token_count):
            self.token_count = self.token_count()
        return int(self.token_count or 0)


# ---- AST ---------------------------------------------------------------------------------------------------


class Node:
    def matches(self, item: QueryItem) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def fields(self) -> set[str]:
        return set()


@dataclass
class And(Node):
    parts: list[Node]

    def matches(self, item: QueryItem) -> bool:
        return all(p.matches(item) for p in self.parts)

    def fields(self) -> set[str]:
        return set().union(*(p.fields() for p in self.parts))

    def __str__(self) -> str:
        return "(" + " AND ".join(map(str, self.parts)) + ")"


@dataclass
class Or(Node):
    parts: list[Node]

    def matches(self, item: QueryItem) -> bool:
        return any(p.matches(item) for p in self.parts)

    def fields(self) -> set[str]:
        return set().union(*(p.fields() for p in self.parts))

    def __str__(self) -> str:
        return "(" + " OR ".join(map(str, self.parts)) + ")"


@dataclass
class Not(Node):
    part: Node

    def matches(self, item: QueryItem) -> bool:
        return not self.part.matches(item)

    def fields(self) -> set[str]:
        return self.part.fields()

    def __str__(self) -> str:
        return f"NOT {self.part}"


def _is_glob(text: str) -> bool:
    return "*" in text or "?" in text


@dataclass
class Term(Node):
    field: str
    value: str
    op: str = ":"
    number: int | None = None
    _matcher: Callable[[QueryItem], bool] | None = None
    position: int = 0  # where the value starts in the query text (for errors)

    def __post_init__(self) -> None:
        self._matcher = self._build()

    def fields(self) -> set[str]:
        return {self.field}

    def __str__(self) -> str:
        if self.field in NUMERIC:
            return f"{self.field}{self.op}{self.number}"
        return f'{self.field}:"{self.value}"'

    def matches(self, item: QueryItem) -> bool:
        assert self._matcher is not None
        return self._matcher(item)

    def _build(self) -> Callable[[QueryItem], bool]:
        f, value = self.field, self.value
        if f == "tag":
            key = tag_key(value)
            if _is_glob(key):
                rx = re.compile(fnmatch.translate(key))
                return lambda it: any(rx.match(t) for t in it.tags)
            return lambda it: key in it.tags
        if f == "name":
            low = value.lower()
            if _is_glob(low):
                return lambda it: fnmatch.fnmatchcase(it.name.lower(), low)
            return lambda it: low in it.name.lower()
        if f == "folder":
            low = value.lower().strip("/")
            if _is_glob(low):
                return lambda it: (
                    fnmatch.fnmatchcase(it.folder.lower(), low)
                    or fnmatch.fnmatchcase(it.folder.lower().rsplit("/", 1)[-1], low)
                )
            return lambda it: (
                it.folder.lower() == low
                or it.folder.lower().rsplit("/", 1)[-1] == low
                or (low in (".", "") and it.folder == "")
            )
        if f == "flag":
            low = value.lower()
            if _is_glob(low):
                return lambda it: any(fnmatch.fnmatchcase(k, low) for k in it.flags)
            return lambda it: low in it.flags
        if f == "bucket":
            w, h = _parse_wxh(value)
            return lambda it: it.bucket == (w, h)
        n = self.number
        assert n is not None
        compare: Callable[[int], bool] = {
            "<": lambda a: a < n,
            "<=": lambda a: a <= n,
            ">": lambda a: a > n,
            ">=": lambda a: a >= n,
            "=": lambda a: a == n,
        }[self.op]
        if f == "tokens":
            return lambda it: compare(it.tokens)
        return lambda it: compare(it.n_tags)


def _parse_wxh(value: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", value)
    if not m:
        raise ValueError(value)
    return int(m.group(1)), int(m.group(2))


class MatchAll(Node):
    def matches(self, item: QueryItem) -> bool:
        return True

    def __str__(self) -> str:
        return "*"


@dataclass
class Query:
    """A parsed query. ``matches(item)`` tests one :class:`QueryItem`."""

    text: str
    root: Node

    def matches(self, item: QueryItem) -> bool:
        return self.root.matches(item)

    @property
    def fields(self) -> set[str]:
        """The fields the query uses (so callers compute only what is needed: tokens, buckets, flags)."""
        return self.root.fields()

    def terms(self, field_name: str) -> list[Term]:
        """The terms on ``field_name``, in the order written."""
        return [t for t in _walk(self.root) if isinstance(t, Term) and t.field == field_name]

    def check(self, folders: Collection[str] | None = None, buckets: Collection[tuple[int, int]] | None = None) -> None:
        """Refuse terms that can match nothing here: a ``folder:`` that is none of ``folders`` (subset
        ``rel_dir``s), a ``bucket:`` that is none of ``buckets``; each error lists what exists. Globs pass when
        they match one. Raises :class:`QueryError`."""
        if folders is not None:
            names = sorted({f or "." for f in folders} | {f.rsplit("/", 1)[-1] for f in folders if f})
            for term in self.terms("folder"):
                probe = QueryItem(path="", name="", folder="", tags=frozenset())
                if any(term.matches(_with_folder(probe, f)) for f in folders):
                    continue
                raise _unknown(self.text, term, "folder", names)
        if buckets is not None:
            for term in self.terms("bucket"):
                w, h = _parse_wxh(term.value)
                if (w, h) not in buckets:
                    shown = [f"{bw}x{bh}" for bw, bh in sorted(buckets)]
                    raise _unknown(self.text, term, "bucket", shown, what="the bucket settings in use have no such "
                                   "bucket")

    def __str__(self) -> str:
        return str(self.root)


# ---- lexer ---------------------------------------------------------------------------------------------


@dataclass
class Tok:
    kind: str  # LPAR RPAR NOT AND OR MINUS TERM WORD STRING END
    pos: int
    text: str = ""
    field: str = ""
    op: str = ""
    value: str = ""
    quoted: bool = False


_SPECIAL_END = set(" \t\r\n")


def _read_value(text: str, i: int) -> tuple[str, int, bool]:
    """Read a quoted or bare value at ``i``; returns (value, next index, quoted)."""
    n = len(text)
    if i < n and text[i] == '"':
        start = i
        i += 1
        out = []
        while i < n and text[i] != '"':
            if text[i] == "\\" and i + 1 < n and text[i + 1] in '"\\':
                out.append(text[i + 1])
                i += 2
            else:
                out.append(text[i])
                i += 1
        if i >= n:
            raise QueryError('unterminated quoted value: add the closing "', start, text)
        return "".join(out), i + 1, True
    start = i
    depth = 0
    while i < n and text[i] not in _SPECIAL_END:
        ch = text[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                break
            depth -= 1
        elif ch == "\\" and i + 1 < n:
            i += 1
        i += 1
    return text[start:i], i, False


def _lex(text: str) -> list[Tok]:
    toks: list[Tok] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in _SPECIAL_END:
            i += 1
            continue
        if ch == "(":
            toks.append(Tok("LPAR", i, "("))
            i += 1
            continue
        if ch == ")":
            toks.append(Tok("RPAR", i, ")"))
            i += 1
            continue
        if ch == "-" or ch == "!":
            toks.append(Tok("MINUS", i, ch))
            i += 1
            continue
        if ch == '"':
            value, j, _q = _read_value(text, i)
            toks.append(Tok("WORD", i, text[i:j], value=value, quoted=True))
            i = j
            continue
        m = re.match(r"([A-Za-z]+)\s*(<=|>=|<|>|=|:)", text[i:])
        if m and m.group(1).lower() in FIELDS:
            fld, op = m.group(1).lower(), m.group(2)
            j = i + m.end()
            if fld in NUMERIC:
                if op == ":":
                    mm = re.match(r"\s*(<=|>=|<|>|=)?", text[j:])
                    op = mm.group(1) if mm and mm.group(1) else "="
                    j += mm.end() if mm else 0
                mnum = re.match(r"\s*(\d+)", text[j:])
                if not mnum:
                    raise QueryError(f"{fld}{op} needs a whole number, e.g. {fld}{op}75", j, text)
                toks.append(Tok("TERM", i, text[i : j + mnum.end()], field=fld, op=op, value=mnum.group(1)))
                i = j + mnum.end()
                continue
            if op != ":":
                raise QueryError(f"{fld} takes ':' (as in {fld}:VALUE), not {op!r}", i + m.start(2), text)
            if j >= n or text[j] in _SPECIAL_END or text[j] == ")":
                raise QueryError(f"{fld}: needs a value, e.g. {fld}:{_EXAMPLE[fld]}", j, text)
            value, k, quoted = _read_value(text, j)
            if not value and not quoted:
                raise QueryError(f"{fld}: needs a value", j, text)
            toks.append(Tok("TERM", i, text[i:k], field=fld, op=":", value=value, quoted=quoted))
            i = k
            continue
        m2 = re.match(r"([A-Za-z_]+):", text[i:])
        if m2:
            raise QueryError(f"unknown field {m2.group(1)!r}; fields are {', '.join(FIELDS)}", i, text)
        value, j, _q = _read_value(text, i)
        if j == i:
            raise QueryError(f"unexpected {text[i]!r}", i, text)
        word = value.upper()
        if word in ("AND", "OR", "NOT"):
            toks.append(Tok(word, i, value))
        elif word in ("&&", "||"):
            toks.append(Tok("AND" if word == "&&" else "OR", i, value))
        else:
            if re.fullmatch(r"(tokens|tags)\S*", value, re.IGNORECASE):
                raise QueryError(f"{value!r}: write {value[:6].lower()}>N, <N, <=N, >=N or =N", i, text)
            toks.append(Tok("WORD", i, value, value=value))
        i = j
    toks.append(Tok("END", n))
    return toks


_EXAMPLE = {
    "tag": '"long hair"',
    "name": "img_001",
    "folder": '"10_ohwx woman"',
    "flag": "low-res",
    "bucket": "512x768",
}


# ---- parser --------------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _lex(text)
        self.i = 0

    def peek(self) -> Tok:
        return self.toks[self.i]

    def take(self) -> Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def error(self, message: str, tok: Tok) -> QueryError:
        return QueryError(message, tok.pos, self.text)

    def parse(self) -> Node:
        if self.peek().kind == "END":
            return MatchAll()
        node = self.parse_or()
        tok = self.peek()
        if tok.kind == "RPAR":
            raise self.error("unmatched ')'", tok)
        if tok.kind != "END":
            raise self.error(f"unexpected {tok.text!r}", tok)
        return node

    def parse_or(self) -> Node:
        parts = [self.parse_and()]
        while self.peek().kind == "OR":
            self.take()
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else Or(parts)

    def parse_and(self) -> Node:
        parts = [self.parse_unary()]
        while True:
            tok = self.peek()
            if tok.kind == "AND":
                self.take()
                parts.append(self.parse_unary())
            elif tok.kind in ("TERM", "WORD", "NOT", "MINUS", "LPAR"):
                parts.append(self.parse_unary())
            else:
                break
        return parts[0] if len(parts) == 1 else And(parts)

    def parse_unary(self) -> Node:
        tok = self.peek()
        if tok.kind in ("NOT", "MINUS"):
            self.take()
            return Not(self.parse_unary())
        return self.parse_primary()

    def parse_primary(self) -> Node:
        tok = self.take()
        if tok.kind == "LPAR":
            if self.peek().kind == "RPAR":
                raise self.error("empty parentheses", self.peek())
            node = self.parse_or()
            close = self.peek()
            if close.kind != "RPAR":
                raise self.error(f"missing ')' to close the '(' at position {tok.pos + 1}", close)
            self.take()
            return node
        if tok.kind == "TERM":
            return self._term(tok)
        if tok.kind == "WORD":
            return self._term(Tok("TERM", tok.pos, tok.text, field="tag", op=":", value=tok.value))
        if tok.kind == "END":
            raise self.error("the query ends where a term was expected", tok)
        if tok.kind == "RPAR":
            raise self.error("unmatched ')'" if self.i > 1 else "unexpected ')'", tok)
        raise self.error(f"{tok.text!r} needs a term before and after it", tok)

    def _term(self, tok: Tok) -> Node:
        position = self._value_position(tok)
        if tok.field in NUMERIC:
            return Term(tok.field, tok.value, op=tok.op, number=int(tok.value), position=position)
        if tok.field == "bucket":
            try:
                _parse_wxh(tok.value)
            except ValueError:
                raise self.error(
                    f"bucket:{tok.value} is not WIDTHxHEIGHT (e.g. bucket:512x768)", tok
                ) from None
        term = Term(tok.field, tok.value, position=position)
        if tok.field == "flag":
            low = tok.value.lower()
            known = any(fnmatch.fnmatchcase(k, low) for k in FLAG_KINDS) if _is_glob(low) else low in FLAG_KINDS
            if not known:
                raise _unknown(self.text, term, "flag", list(FLAG_KINDS), what="no health check has that kind")
        return term

    def _value_position(self, tok: Tok) -> int:
        """Where ``tok``'s value starts (after ``field:``), for errors about the value."""
        prefix = f"{tok.field}{tok.op}"
        return tok.pos + len(prefix) if self.text.startswith(prefix, tok.pos) else tok.pos


def _walk(node: Node) -> Iterator[Node]:
    yield node
    if isinstance(node, And | Or):
        for part in node.parts:
            yield from _walk(part)
    elif isinstance(node, Not):
        yield from _walk(node.part)


def _with_folder(item: QueryItem, folder: str) -> QueryItem:
    item.folder = folder
    return item


def _unknown(text: str, term: Term, field_name: str, valid: list[str], what: str = "") -> QueryError:
    """``field:value`` matches nothing: the error says so and lists the valid values (the nearest first)."""
    near = difflib.get_close_matches(term.value.lower(), valid, n=1, cutoff=0.6)
    hint = f"did you mean {field_name}:{near[0]}? " if near else ""
    listed = ", ".join(valid[:40]) + (f" … ({len(valid)} in all)" if len(valid) > 40 else "")
    reason = what or f"no {field_name} is called that"
    return QueryError(f"{field_name}:{term.value} matches nothing: {reason}; {hint}{field_name}s are: {listed}",
                      term.position, text)


def parse_query(
    text: str | None,
    folders: Collection[str] | None = None,
    buckets: Collection[tuple[int, int]] | None = None,
) -> Query:
    """Parse a filter query (empty or None matches everything). Raises :class:`QueryError`, also for a
    ``flag:`` kind that does not exist and, when given, a folder not in ``folders`` or a bucket not in
    ``buckets`` (see :meth:`Query.check`)."""
    text = text or ""
    query = Query(text=text, root=_Parser(text).parse())
    query.check(folders, buckets)
    return query


def filter_items(query: Query | str | None, items: list[QueryItem]) -> list[QueryItem]:
    q = query if isinstance(query, Query) else parse_query(query)
    return [it for it in items if q.matches(it)]
