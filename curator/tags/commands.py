"""The implementation of ``kiln tags ...`` (argument parsing lives in ``curator/cli/tags.py``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curator.tags.describe import (
    describe_absorb,
    describe_add,
    describe_consolidate,
    describe_dedupe,
    describe_normalize,
    describe_remove,
    describe_replace,
    describe_sort,
    describe_trigger,
)
from curator.textsafe import dumps_json, printable

if TYPE_CHECKING:
    from rich.console import Console

    from curator.dataset import Dataset
    from curator.tags.items import CaptionItem
    from curator.tags.journal import ApplyResult, CaptionChange, Rebase
    from curator.tags.suggest import Suggestion
    from curator.tags.suspects import Suspect

EXIT_OK, EXIT_FAIL, EXIT_CONFLICT = 0, 1, 2


def _err(message: str) -> int:
    print(f"kiln tags: {printable(message, keep_newlines=True)}", file=sys.stderr)
    return EXIT_FAIL


def _console() -> Console:
    from curator.textsafe import cli_console

    return cli_console(soft_wrap=True)


def _emit_json(data: object) -> None:
    sys.stdout.write(dumps_json(data) + "\n")


def _open(args: argparse.Namespace) -> Dataset:
    from curator.dataset import Dataset

    path: Path = args.dataset
    if not path.exists():
        raise _Fail(f"{path}: no such dataset folder or TOML file")
    from curator.scan.config import ScanConfig

    config = ScanConfig(train_config=getattr(args, "train_config", None))
    try:
        return Dataset.open(path, caption_extension=args.caption_extension, config=config, quiet=args.json)
    except (OSError, ValueError) as exc:
        raise _Fail(f"{path}: cannot open the dataset: {exc}") from None


class _Fail(Exception):
    pass


def run(args: argparse.Namespace) -> int:
    """Dispatch one ``kiln tags`` subcommand; returns the exit code."""
    from curator.tags.bulk import paused_gc
    from curator.tags.items import ScopeError
    from curator.tags.ops import OperationError
    from curator.tags.query import QueryError

    try:
        dataset = _open(args)
    except _Fail as exc:
        return _err(str(exc))
    try:
        handler = _HANDLERS[args.op]
        with paused_gc():  # see curator.tags.bulk; the collector resumes once the items are freed
            return handler(dataset, args)
    except QueryError as exc:
        return _err(f"bad query: {exc.message}\n  {exc.text}\n  {' ' * exc.position}^")
    except (OperationError, ScopeError) as exc:
        return _err(str(exc))
    except _Fail as exc:
        return _err(str(exc))
    except OSError as exc:
        from curator.faults import describe

        return _err(describe(exc))
    finally:
        dataset.close()


def _items(dataset: Dataset, args: argparse.Namespace, cached: bool = False) -> list[CaptionItem]:
    """The images in scope; an empty scope that was asked for (``--where``, ``--files``) is a failure that says
    so, not an empty result."""
    from curator.tags.items import load_items

    items = load_items(dataset, where=args.where, files=args.files, separator=args.separator, cached=cached)
    args.scope_size = len(items)
    if not items and (args.where or args.files):
        total = len(dataset.images())
        scope = f"--where {args.where!r}" if args.where else "--files"
        raise _Fail(f"no image matches {scope} (0 of {total} images); nothing to do")
    return items


# ---- writing ----------------------------------------------------------------------------------------------


Plan = Callable[[list["CaptionItem"]], list["CaptionChange"]]


def _planned(
    dataset: Dataset,
    args: argparse.Namespace,
    plan: Plan,
    op: str,
    description: str,
    extra: dict[str, Any] | None = None,
    items: list[CaptionItem] | None = None,
) -> int:
    """Work ``plan`` out on the selected items and apply it (see :func:`_apply`); files another process
    changes meanwhile get the plan worked out again on their new content (merged, never overwritten)."""
    items = _items(dataset, args) if items is None else items
    return _apply(dataset, args, plan(items), op, description, extra, rebase=_rebaser(dataset, args, items, plan))


def _rebaser(dataset: Dataset, args: argparse.Namespace, items: list[CaptionItem], plan: Plan) -> Rebase:
    """The journal's ``rebase`` for ``plan``: worked out again on files' new content, still in scope."""
    from curator.tags.items import refreshed_items

    def rebase(currents: list[tuple[Path, bytes | None]]) -> dict[Path, bytes | None]:
        fresh = refreshed_items(dataset, items, currents, where=args.where)
        return {c.caption_path: c.after for c in plan(fresh)}

    return rebase


def _apply(
    dataset: Dataset,
    args: argparse.Namespace,
    changes: list[CaptionChange],
    op: str,
    description: str,
    extra: dict[str, Any] | None = None,
    rebase: Rebase | None = None,
) -> int:
    """Preview (``--dry-run``) or apply through the journal; report conflicts and merges."""
    from curator.tags.journal import apply_changes
    from curator.tags.ops import plan_to_diff
    from curator.tags.preview import render_diffs

    extra = extra or {}
    if args.dry_run:
        diffs = plan_to_diff(changes, args.separator)
        if args.json:
            _emit_json(
                {
                    "op": op,
                    "description": description,
                    "dry_run": True,
                    "files": len(diffs),
                    "diff": [d.to_dict() for d in diffs],
                    **extra,
                }
            )
        else:
            con = _console()
            con.print(render_diffs(diffs, dataset.root, limit=args.limit or None), end="")
            con.print(f"{len(diffs)} caption file(s) would change; nothing written (--dry-run).")
        return EXIT_OK
    if not changes:
        if args.json:
            _emit_json(
                {
                    "op": op,
                    "description": description,
                    "entry_id": None,
                    "applied": [],
                    "conflicts": [],
                    "errors": [],
                    **extra,
                }
            )
        else:
            size = getattr(args, "scope_size", None)
            print("no caption needs changing" + (f" in the {size} image(s) in scope." if size is not None else "."))
        return EXIT_OK
    result = apply_changes(dataset, changes, op, description, rebase=rebase)
    return _report(dataset, args, result, extra)


def _report(
    dataset: Dataset,
    args: argparse.Namespace,
    result: ApplyResult,
    extra: dict[str, Any] | None = None,
    hint: bool = True,
) -> int:
    if args.json:
        _emit_json({**result.to_dict(), **(extra or {})})
    else:
        from rich.text import Text

        con = _console()
        con.print(
            Text(
                f"#{result.entry_id} {printable(result.description)}: {len(result.applied)} caption file(s) "
                "changed"
            )
        )
        if result.merged:
            con.print(
                Text(
                    f"merged: {len(result.merged)} caption file(s) were changed by another process since kiln "
                    "read them; the operation was worked out again on their new content",
                    style="yellow",
                )
            )
        for path in result.conflicts:
            con.print(
                Text(
                    f"conflict (changed on disk since read, left as is): {printable(_rel(dataset, path))}",
                    style="yellow",
                )
            )
        for path, reason in result.errors:
            con.print(
                Text(f"not written: {printable(_rel(dataset, path))}: {printable(reason)}", style="red")
            )
        if result.applied and hint:
            con.print("undo with: kiln tags undo " + printable(str(args.dataset)))
    return EXIT_OK if result.ok else EXIT_CONFLICT


def _rel(dataset: Dataset, path: Path) -> str:
    try:
        return Path(path).relative_to(dataset.root).as_posix()
    except ValueError:
        return str(path)


# ---- handlers ----------------------------------------------------------------------------------------------


def _add(dataset: Dataset, args: argparse.Namespace) -> int:
    from curator.tags.ops import Position, add_tags

    position: Position = "front" if args.front else (int(args.at) if args.at is not None else "end")
    where = "front" if position == "front" else ("end" if position == "end" else f"position {position}")
    return _planned(
        dataset,
        args,
        lambda items: add_tags(items, args.tag, position=position, create=not args.no_create),
        "add",
        describe_add([args.tag], where),
    )


def _remove(dataset: Dataset, args: argparse.Namespace) -> int:
    from curator.tags.ops import remove_tags

    return _planned(
        dataset,
        args,
        lambda items: remove_tags(items, args.tags),
        "remove",
        describe_remove(args.tags),
    )


def _replace(dataset: Dataset, args: argparse.Namespace) -> int:
    from curator.tags.ops import replace_tag

    return _planned(
        dataset,
        args,
        lambda items: replace_tag(items, args.old, args.new, regex=args.regex),
        "replace",
        describe_replace(args.old, args.new, regex=args.regex),
    )


def _trigger(dataset: Dataset, args: argparse.Namespace) -> int:
    from curator.tags.ops import set_trigger

    items = _items(dataset, args)
    plan = set_trigger(items, args.word, separator=args.separator)
    if not plan.words:
        return _err(
            "no trigger word: give one (kiln tags trigger DATASET WORD) or use kohya folders "
            "named <repeats>_<class tokens>"
        )
    extra = {
        "keep_tokens": plan.keep_tokens,
        "trigger": plan.words,
        "folders_without_class_tokens": plan.skipped_folders,
    }
    words = [", ".join(w) for w in plan.words.values()]
    rebase = _rebaser(dataset, args, items, lambda it: set_trigger(it, args.word, separator=args.separator).changes)
    code = _apply(
        dataset, args, plan.changes, "trigger", describe_trigger(words), extra, rebase=rebase
    )
    if not args.json:
        print(
            f"train with keep_tokens = {plan.keep_tokens} (kohya --keep_tokens / TOML keep_tokens) so "
            "caption shuffling keeps the trigger first."
        )
        for folder in plan.skipped_folders:
            print(f"skipped {printable(folder or '.')}: no class tokens in the folder name; pass WORD")
    return code


def _consolidate(dataset: Dataset, args: argparse.Namespace) -> int:
    from curator.tags.consolidate import RulesError, consolidate, load_rules

    try:
        rules = load_rules(args.rules, builtin=not args.no_builtin)
    except RulesError as exc:
        return _err(str(exc))
    items = _items(dataset, args)
    plan = consolidate(items, rules, suffix_heuristic=args.suffix_heuristic)
    extra = {"rules": [{"kind": h.kind, "rule": h.rule, "files": h.files} for h in plan.hits]}
    if args.dry_run and not args.json:
        from rich.table import Table
        from rich.text import Text

        table = Table(title="what each rule changes", title_justify="left")
        table.add_column("kind")
        table.add_column("rule")
        table.add_column("files", justify="right")
        for h in plan.hits[: args.limit or None]:
            table.add_row(h.kind, Text(printable(h.rule)), str(h.files))
        _console().print(table)
        if args.limit and len(plan.hits) > args.limit:
            print(f"... {len(plan.hits) - args.limit} more rule(s) not shown (--limit 0 shows them all)")
    desc = describe_consolidate(rules.sources, suffix_heuristic=args.suffix_heuristic)
    rebase = _rebaser(
        dataset, args, items, lambda it: consolidate(it, rules, suffix_heuristic=args.suffix_heuristic).changes
    )
    return _apply(dataset, args, plan.changes, "consolidate", desc, extra, rebase=rebase)


def _absorb(dataset: Dataset, args: argparse.Namespace) -> int:
    from curator.tags.ops import absorb, absorb_candidates

    items = _items(dataset, args)
    if args.apply:
        return _planned(
            dataset,
            args,
            lambda chosen: absorb(chosen, args.apply),
            "absorb",
            describe_absorb(args.apply),
            items=items,
        )
    cands = absorb_candidates(items, args.min_share)
    if args.json:
        _emit_json(
            {
                "min_share": args.min_share,
                "candidates": [
                    {
                        "folder": c.folder,
                        "tag": c.tag,
                        "count": c.count,
                        "images": c.total,
                        "share": round(c.share, 4),
                    }
                    for c in cands
                ],
            }
        )
        return EXIT_OK
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"tags in >= {args.min_share:.0%} of a concept's images", title_justify="left")
    for col in ("folder", "tag", "images", "share"):
        table.add_column(col, justify="right" if col in ("images", "share") else "left")
    for c in cands:
        table.add_row(
            Text(printable(c.folder or ".")), Text(printable(c.tag)), f"{c.count}/{c.total}", f"{c.share:.0%}"
        )
    con = _console()
    con.print(table)
    con.print(
        "remove the constant traits the trigger should absorb with: kiln tags absorb DATASET --apply TAG ..."
    )
    return EXIT_OK


def _sort(dataset: Dataset, args: argparse.Namespace) -> int:
    from curator.tags.ops import sort_tags

    freq = None
    if args.by == "freq":
        from curator.tags.stats import tag_frequencies

        freq = tag_frequencies(dataset).counts
    return _planned(
        dataset,
        args,
        lambda items: sort_tags(items, by=args.by, keep=args.keep, frequencies=freq),
        "sort",
        describe_sort(args.by, args.keep),
    )


def _dedupe(dataset: Dataset, args: argparse.Namespace) -> int:
    from curator.tags.ops import dedupe

    return _planned(dataset, args, dedupe, "dedupe", describe_dedupe())


def _normalize(dataset: Dataset, args: argparse.Namespace) -> int:
    from curator.tags.ops import normalize

    what = [n for n in ("spaces", "lower", "escape", "unescape") if getattr(args, n)]
    return _planned(
        dataset,
        args,
        lambda items: normalize(
            items, spaces=args.spaces, lower=args.lower, escape=args.escape, unescape=args.unescape
        ),
        "normalize",
        describe_normalize(what),
    )


def _undo_redo(dataset: Dataset, args: argparse.Namespace) -> int:
    from curator.tags import journal

    if args.dry_run:
        peek = journal.journal_for(dataset).peek(args.op)
        if peek is None:
            if args.json:
                _emit_json({"entry_id": None, "dry_run": True, "diff": []})
            return _err(f"nothing to {args.op}")
        entry, changes = peek
        if not args.json:
            print(
                f"{args.op} would revert #{entry.id} {printable(entry.description)}:"
                if args.op == "undo"
                else f"redo would re-apply #{entry.id} {printable(entry.description)}:"
            )
        return _apply(dataset, args, changes, args.op, entry.description, {"entry_id": entry.id})
    result = journal.undo(dataset) if args.op == "undo" else journal.redo(dataset)
    if result is None:
        if args.json:
            _emit_json({"entry_id": None, "applied": [], "conflicts": [], "errors": []})
        return _err(f"nothing to {args.op}")
    if not args.json:
        print(f"{args.op}:", end=" ")
    return _report(dataset, args, result, hint=False)


def _history(dataset: Dataset, args: argparse.Namespace) -> int:
    from curator.tags.journal import journal_for

    journal = journal_for(dataset)
    if args.prune is not None:
        if args.dry_run:
            total = len(journal.history(limit=-1))
            print(f"would forget {max(0, total - args.prune)} of {total} journal entries.")
            return EXIT_OK
        removed = journal.prune(args.prune)
        if args.json:
            _emit_json({"pruned": removed})
        else:
            print(f"forgot {removed} journal entr{'y' if removed == 1 else 'ies'}; {args.prune} kept.")
        return EXIT_OK
    if args.show is not None:
        from curator.tags.journal import CaptionChange
        from curator.tags.ops import plan_to_diff
        from curator.tags.preview import render_diffs

        rows = journal.changes(args.show)
        if not rows:
            return _err(f"no journal entry #{args.show}")
        diffs = plan_to_diff([CaptionChange(p, b, a) for p, b, a, _s in rows], args.separator)
        if args.json:
            _emit_json(
                {
                    "entry_id": args.show,
                    "diff": [
                        {**d.to_dict(), "status": s} for d, (_p, _b, _a, s) in zip(diffs, rows, strict=True)
                    ],
                }
            )
        else:
            _console().print(render_diffs(diffs, dataset.root), end="")
        return EXIT_OK
    entries = journal.history(args.limit or -1)
    older = len(journal.history(-1)) - len(entries) if args.limit and len(entries) == args.limit else 0
    if args.json:
        _emit_json([e.to_dict() for e in entries])
        return EXIT_OK
    import time

    from rich.table import Table
    from rich.text import Text

    table = Table(title="caption journal (newest first)", title_justify="left")
    for col in ("#", "when", "operation", "files", "state"):
        table.add_column(col, justify="right" if col in ("#", "files") else "left")
    for e in entries:
        state = e.state + (f" ({e.note})" if e.note else "")
        table.add_row(
            str(e.id),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.created)),
            Text(printable(e.description)),
            str(e.n_changes),
            state,
        )
    _console().print(table)
    if not entries:
        print("no tag operations recorded yet.")
    elif older:
        print(f"... {older} older entr{'y' if older == 1 else 'ies'} not shown (--limit 0 shows them all)")
    return EXIT_OK


def _stats(dataset: Dataset, args: argparse.Namespace) -> int:
    from rich.table import Table
    from rich.text import Text

    from curator.tags import stats

    items = _items(dataset, args, cached=True)
    top = args.limit or None

    def cut(shown: int, total: int, what: str) -> None:
        """Say what a table left out, and how to see it."""
        if total > shown:
            con.print(Text(f"... {total - shown} more {what} not shown (--limit 0 shows them all)", style="dim"))
    con = _console()  # prints nothing with --json
    out: dict[str, Any] = {}
    if args.tag:
        co = stats.cooccurrence(dataset, args.tag, scope=items)
        if args.json:
            out["cooccurrence"] = co.to_dict()
        else:
            n = len(co.with_tag)
            table = Table(
                title=f"with {co.tag!r}: {n} image(s); without: {len(co.without_tag)}", title_justify="left"
            )
            table.add_column("co-occurring tag")
            table.add_column("images", justify="right")
            table.add_column("share", justify="right")
            for tag, c in co.together.most_common(top):
                table.add_row(Text(printable(tag)), str(c), f"{c / n:.0%}" if n else "-")
            con.print(table)
            cut(min(len(co.together), top or len(co.together)), len(co.together), "co-occurring tag(s)")
            if not n:
                con.print(Text(f"no image in scope has the tag {printable(co.tag)!r}", style="yellow"))
    if args.tokens:
        counts = stats.token_counts(dataset, scope=items)
        summary = stats.token_summary(counts)
        if args.json:
            out["tokens"] = {"summary": summary, "captions": [c.to_dict() for c in counts]}
        else:
            counts.sort(key=lambda c: -c.tokens)
            table = Table(
                title=(
                    f"CLIP tokens: {summary['captions']} captions, max {summary['max']}; over 75: "
                    f"{summary['over_75']}, over 150: {summary['over_150']}, over 225: {summary['over_225']}"
                ),
                title_justify="left",
            )
            table.add_column("image")
            table.add_column("tokens", justify="right")
            table.add_column("warning")
            for count in counts[:top]:
                table.add_row(
                    Text(printable(count.path)), str(count.tokens), Text(count.warning or "", style="yellow")
                )
            con.print(table)
            cut(len(counts[:top]), len(counts), "caption(s)")
    if not args.tag and not args.tokens or args.by_folder:
        freqs = stats.tag_frequencies(dataset, scope=items, by_folder=args.by_folder)
        groups = freqs if isinstance(freqs, dict) else {None: freqs}
        if args.json:
            out["frequencies"] = {
                ("." if k == "" else k) if k is not None else "*": v.to_dict() for k, v in groups.items()
            }
        else:
            for folder, f in groups.items():
                title = (
                    f"{'folder ' + (folder or '.') + ': ' if folder is not None else ''}{f.images} image(s), "
                    f"{f.captioned} captioned, {len(f.counts)} distinct tags"
                )
                table = Table(title=printable(title), title_justify="left")
                table.add_column("tag")
                table.add_column("images", justify="right")
                table.add_column("share", justify="right")
                for tag, c in f.counts.most_common(top):
                    table.add_row(Text(printable(tag)), str(c), f"{c / f.images:.0%}" if f.images else "-")
                con.print(table)
                cut(min(len(f.counts), top or len(f.counts)), len(f.counts), "tag(s)")
                if f.images and not f.counts:
                    con.print(Text(f"none of the {f.images} image(s) has a tag (no caption, or empty captions)",
                                   style="yellow"))
    if args.json:
        _emit_json(out)
    return EXIT_OK


def _suggest(dataset: Dataset, args: argparse.Namespace) -> int:
    from curator.tags.consolidate import RulesError, load_rules
    from curator.tags.suggest import choose, suggest, suggestion_changes

    try:
        rules = load_rules(args.rules, builtin=not args.no_builtin)
    except RulesError as exc:
        return _err(str(exc))
    items = _items(dataset, args)
    found = suggest(items, rules, min_implication=args.min_implication, kinds=args.kind)
    if args.apply is None:
        if args.json:
            _emit_json({"suggestions": [s.to_dict() for s in found]})
        else:
            _print_suggestions(found, args)
        return EXIT_OK
    try:
        chosen = choose(found, args.apply)
    except ValueError as exc:
        return _err(str(exc))
    if not chosen:
        return _err("no suggestion to apply")
    if args.save_rules is not None:
        return _save_rules(args.save_rules, chosen, args)
    changes = suggestion_changes(items, chosen)
    names = ", ".join(s.id for s in chosen[:5]) + (f" and {len(chosen) - 5} more" if len(chosen) > 5 else "")
    extra = {"suggestions": [s.to_dict() for s in chosen]}
    rebase = _rebaser(dataset, args, items, lambda fresh: suggestion_changes(fresh, chosen))
    return _apply(dataset, args, changes, "suggest", f"suggestions: {names}", extra, rebase=rebase)


def _print_suggestions(found: list[Suggestion], args: argparse.Namespace) -> None:
    from rich.table import Table
    from rich.text import Text

    con = _console()
    if not found:
        con.print("no consolidation or implication found in these captions.")
        return
    table = Table(title=f"{len(found)} suggestion(s): keep the first tag, drop the others where it is",
                  title_justify="left", show_lines=True)  # fmt: skip
    for col in ("#", "kind", "keep", "drop (captions together / with the tag)", "files"):
        table.add_column(col, justify="right" if col in ("#", "files") else "left", overflow="fold")
    for n, s in enumerate(found[: args.limit or None], start=1):
        drops = Text()
        for d in s.drop:
            drops.append(printable(d.tag), style="red")
            drops.append(f"  {d.together}/{d.count}  ")
            drops.append(printable(d.reason), style="dim")
            drops.append("\n")
        if s.example:
            drops.append("e.g. " + printable(s.example[0]) + " after: ", style="dim")
            drops.append(printable(s.example[2]))
        table.add_row(str(n), s.kind, Text(f"{printable(s.keep)} ({s.keep_count})"), drops, str(s.files))
    con.print(table)
    con.print(
        "apply with: kiln tags suggest DATASET --apply 1 3 (numbers or ids, or all); add --dry-run to see every "
        "file's diff first"
    )


def _save_rules(path: Path, chosen: list[Suggestion], args: argparse.Namespace) -> int:
    import tomllib

    import tomli_w

    from curator.fsutil import atomic_write_bytes

    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            return _err(f"{path}: cannot add to it ({exc}); give a new file or fix this one")
    implications = data.setdefault("implications", {})
    for s in chosen:
        known = list(implications.get(s.keep, []))
        implications[s.keep] = known + [d.tag for d in s.drop if d.tag not in known]
    if args.dry_run:
        print(tomli_w.dumps(data), end="")
        return EXIT_OK
    atomic_write_bytes(path, tomli_w.dumps(data).encode("utf-8"))
    if args.json:
        _emit_json({"saved": str(path), "implications": {s.keep: [d.tag for d in s.drop] for s in chosen}})
    else:
        print(f"saved {len(chosen)} rule(s) to {printable(str(path))}; use them with: kiln tags consolidate DATASET "
              f"--rules {printable(str(path))}")  # fmt: skip
    return EXIT_OK


def _suspects(dataset: Dataset, args: argparse.Namespace) -> int:
    from curator.autotag.scores import load
    from curator.tags.suspects import KINDS, ConflictError, find_suspects, load_conflicts, removal_changes

    if not 0 < args.below <= 1:
        return _err(f"--below {args.below}: use a probability in (0, 1], e.g. 0.5")
    if args.rare < 1:
        return _err(f"--rare {args.rare}: use 1 or more (captions)")
    try:
        conflicts = load_conflicts(args.conflicts, builtin=not args.no_builtin)
    except ConflictError as exc:
        return _err(str(exc))
    items = _items(dataset, args)
    confidences = load(dataset.index, [it.path for it in items])
    found = find_suspects(items, confidences, conflicts, args.below, args.rare, args.kind or KINDS)
    if args.remove is None:
        if args.json:
            _emit_json({"suspects": [s.to_dict() for s in found]})
        else:
            _print_suspects(found, args)
        return EXIT_OK
    wanted = {w.strip() for w in args.remove}
    from curator.captions.tagtext import tag_key

    keys = {tag_key(w) for w in wanted if w not in KINDS and w != "all"}
    chosen = [s for s in found if "all" in wanted or s.kind in wanted or s.tag in keys]
    missing = sorted(k for k in keys if not any(s.tag == k for s in found))
    if missing:
        return _err(f"not a suspect here: {', '.join(missing)} (list them first: kiln tags suspects DATASET)")
    changes = removal_changes(items, chosen)
    what = ", ".join(sorted(wanted))
    rebase = _rebaser(dataset, args, items, lambda fresh: removal_changes(fresh, chosen))
    return _apply(dataset, args, changes, "suspects", f"remove suspect tags: {what}",
                  {"removed": [s.to_dict() for s in chosen]}, rebase=rebase)  # fmt: skip


def _print_suspects(found: list[Suspect], args: argparse.Namespace) -> None:
    from rich.table import Table
    from rich.text import Text

    con = _console()
    if not found:
        con.print("no suspect tag.")
        return
    table = Table(title=f"{len(found)} suspect tag(s)", title_justify="left")
    for col in ("kind", "tag", "images", "why", "where"):
        table.add_column(col, justify="right" if col == "images" else "left", overflow="fold")
    for s in found[: args.limit or None]:
        where = ", ".join(printable(p) for p in s.paths[:3]) + (f" +{len(s.paths) - 3}" if len(s.paths) > 3 else "")
        table.add_row(s.kind, Text(printable(s.tag)), str(len(s.paths)), Text(printable(s.detail)), Text(where))
    con.print(table)
    con.print("remove with: kiln tags suspects DATASET --remove low-confidence (a kind, tags, or all); --dry-run first")


_HANDLERS = {
    "stats": _stats,
    "add": _add,
    "remove": _remove,
    "replace": _replace,
    "trigger": _trigger,
    "consolidate": _consolidate,
    "absorb": _absorb,
    "suggest": _suggest,
    "suspects": _suspects,
    "sort": _sort,
    "dedupe": _dedupe,
    "normalize": _normalize,
    "undo": _undo_redo,
    "redo": _undo_redo,
    "history": _history,
}
