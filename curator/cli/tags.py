"""``kiln tags SUBCOMMAND DATASET ...``: caption statistics and journaled bulk tag operations.

Every subcommand takes ``--where QUERY`` / ``--files PATH...`` (scope), ``--dry-run`` (print the per-file
diff, change nothing) and ``--json``. Exit codes: 0 done, 1 nothing could be done (the reason on stderr), 2
conflicts left some files untouched (listed). Registration is light; the engine is imported when a command
runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from curator.cli.options import (
    QUERY_HELP,
    add_caption_extension,
    add_dataset,
    add_json,
    add_limit,
    add_train_config,
)

EXIT_OK, EXIT_FAIL, EXIT_CONFLICT = 0, 1, 2
DIFF_LIMIT = 200
STATS_LIMIT = 40
HISTORY_LIMIT = 50



def _common(parser: argparse.ArgumentParser, scoped: bool = True, writes: bool = True) -> None:
    add_dataset(parser)
    if scoped:
        parser.add_argument("--where", metavar="QUERY", default=None, help=QUERY_HELP)
        parser.add_argument(
            "--files",
            nargs="+",
            metavar="PATH",
            default=None,
            help="scope: these images (or their caption files) only (default: every image)",
        )
    if writes:
        parser.add_argument("--dry-run", action="store_true", help="print the per-file diff, change nothing")
        add_limit(parser, DIFF_LIMIT, "files shown in a diff")
    add_json(parser)
    add_caption_extension(parser)
    parser.add_argument("--separator", default=",", metavar="SEP", help="tag separator (default ',')")
    if scoped:
        add_train_config(parser)  # the bucket settings of bucket: queries


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``kiln tags`` and its sub-subcommands."""
    tags = subparsers.add_parser(
        "tags",
        help="caption tags: statistics and bulk edits with undo/redo",
        description="Caption statistics and bulk tag edits. Every edit is one journal entry: "
        "`kiln tags undo` / `redo` work across restarts; `--dry-run` previews the diff.",
    )
    sub = tags.add_subparsers(dest="tags_command", metavar="SUBCOMMAND")

    def show_help(_args: argparse.Namespace) -> int:
        tags.print_help()
        return EXIT_OK

    tags.set_defaults(func=show_help)

    p = sub.add_parser("stats", help="tag frequencies, co-occurrence, token counts")
    _common(p, writes=False)
    p.add_argument("--dry-run", action="store_true", help=argparse.SUPPRESS)  # stats never write
    p.add_argument("--by-folder", action="store_true", help="frequencies per concept folder")
    p.add_argument("--tag", metavar="TAG", help="co-occurrence of TAG and the images with / without it (default: "
                   "tag frequencies)")
    p.add_argument(
        "--tokens", action="store_true", help="CLIP token count per caption (warns past 75/150/225)"
    )
    add_limit(p, STATS_LIMIT, "rows shown per table", "--top")  # --top: its name before issue 18
    p.set_defaults(func=_run, op="stats")

    p = sub.add_parser("add", help="add a tag (skipped where present); creates missing caption files")
    _common(p)
    p.add_argument("tag", help="tag to add (a comma list adds several)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--front", action="store_true", help="insert at the front (default: the end)")
    where.add_argument("--at", type=int, metavar="N", help="insert at position N (0 = front; default: the end)")
    p.add_argument("--no-create", action="store_true", help="skip images without a caption file")
    p.set_defaults(func=_run, op="add")

    p = sub.add_parser("remove", help="remove tags (names or globs like '*_background')")
    _common(p)
    p.add_argument("tags", nargs="+", metavar="TAG")
    p.set_defaults(func=_run, op="remove")

    p = sub.add_parser("replace", help="replace / rename a tag (plain or --regex)")
    _common(p)
    p.add_argument("old")
    p.add_argument("new", help="replacement ('' removes; a comma list gives several tags)")
    p.add_argument(
        "--regex", action="store_true", help="OLD is a Python regex applied to each tag; NEW may use \\1"
    )
    p.set_defaults(func=_run, op="replace")

    p = sub.add_parser("trigger", help="put the activation token first (default: each folder's class tokens)")
    _common(p)
    p.add_argument(
        "word", nargs="?", default=None, help="trigger word (default: the concept folder's class tokens)"
    )
    p.set_defaults(func=_run, op="trigger")

    p = sub.add_parser("consolidate", help="apply aliases and implications (built-in Danbooru table + yours)")
    _common(p)
    p.add_argument(
        "--rules", action="append", default=[], metavar="FILE",
        help="your rules TOML (repeatable; default: the built-in table only)",
    )
    p.add_argument("--no-builtin", action="store_true", help="do not use the built-in Danbooru table")
    p.add_argument(
        "--suffix-heuristic",
        action="store_true",
        help="kohya's rule: drop a one-word tag when another tag ends with it ('shirt' with 'white shirt')",
    )
    p.set_defaults(func=_run, op="consolidate")

    p = sub.add_parser(
        "suggest",
        help="consolidations and implications found in the captions (red footwear, red boots -> red boots)",
        description="List tag consolidations (one specific tag makes others redundant: 'boots, red footwear, "
        "red boots' -> keep 'red boots') and implications (a general tag in every caption with a specific one), "
        "each with its counts and an example; apply one, several or all with --apply (one journal entry).",
    )
    _common(p)
    p.add_argument(
        "--apply", nargs="+", metavar="ID", default=None, help="apply these suggestions: numbers as listed, ids, or all (default: list them, change nothing)"
    )
    p.add_argument(
        "--kind", action="append", choices=["consolidate", "implication"], default=None, help="only this kind (default: both)"
    )
    p.add_argument("--rules", action="append", default=[], metavar="FILE", help="your rules TOML (repeatable; default: the built-in table only)")
    p.add_argument("--no-builtin", action="store_true", help="do not use the built-in Danbooru table")
    p.add_argument(
        "--min-implication", type=int, default=3, metavar="N",
        help="an implication needs its specific tag in at least N captions (default 3)",
    )  # fmt: skip
    p.add_argument(
        "--save-rules", type=Path, default=None, metavar="FILE",
        help="with --apply: write the chosen suggestions as [implications] to FILE instead of editing captions "
        "(default: edit the captions)",
    )  # fmt: skip
    p.set_defaults(func=_run, op="suggest")

    p = sub.add_parser(
        "suspects",
        help="probably wrong tags: low autotag confidence, contradictions, tags in one or two images",
        description="List tags to review: the autotagger was unsure of them (its probabilities are kept in the "
        "index), they contradict another tag of the caption, or they are in only one or two captions. "
        "--remove deletes them from the images where they are suspect (one journal entry).",
    )
    _common(p)
    p.add_argument(
        "--kind", action="append", choices=["low-confidence", "contradiction", "rare"], default=None,
        help="only this kind (repeatable; default: every kind)",
    )  # fmt: skip
    p.add_argument("--below", type=float, default=0.5, metavar="P", help="low confidence: under P (default 0.5)")
    p.add_argument("--rare", type=int, default=2, metavar="N", help="rare: in N captions or fewer (default 2)")
    p.add_argument("--conflicts", action="append", default=[], metavar="FILE", help="your conflicts TOML (repeatable; default: the built-in one only)")
    p.add_argument("--no-builtin", action="store_true", help="do not use the built-in contradictions")
    p.add_argument(
        "--remove", nargs="+", metavar="WHAT", default=None,
        help="remove suspects: a kind (low-confidence, contradiction, rare), tags, or all (default: list them)",
    )  # fmt: skip
    p.set_defaults(func=_run, op="suspects")

    p = sub.add_parser("absorb", help="list tags in >= X%% of a concept's images; remove the chosen ones")
    _common(p)
    p.add_argument(
        "--min-share", type=float, default=0.8, metavar="X", help="minimum share, 0-1 (default 0.8)"
    )
    p.add_argument(
        "--apply", nargs="+", metavar="TAG", default=None,
        help="remove these tags (the trigger absorbs them; default: list the candidates, change nothing)",
    )
    p.set_defaults(func=_run, op="absorb")

    p = sub.add_parser("sort", help="sort tags alphabetically or by dataset frequency")
    _common(p)
    p.add_argument("--by", choices=["alpha", "freq"], default="alpha",
                   help="alphabetically or by how many images have the tag (default alpha)")
    p.add_argument("--keep", type=int, default=0, metavar="N", help="leave the first N tags in place (default 0)")
    p.set_defaults(func=_run, op="sort")

    p = sub.add_parser("dedupe", help="remove repeated tags within each caption")
    _common(p)
    p.set_defaults(func=_run, op="dedupe")

    p = sub.add_parser("normalize", help="underscores to spaces, lower case, escape parentheses")
    _common(p)
    p.add_argument(
        "--spaces", action="store_true", help="underscores to spaces (kaomoji like ^_^ keep theirs)"
    )
    p.add_argument("--lower", action="store_true", help="lower case")
    p.add_argument("--escape", action="store_true", help="escape parentheses for A1111 prompts: \\( \\)")
    p.add_argument("--unescape", action="store_true", help="unescape \\( \\) to ( )")
    p.set_defaults(func=_run, op="normalize")

    for name, text in (("undo", "undo the last tag operation"), ("redo", "redo the last undone operation")):
        p = sub.add_parser(name, help=text)
        _common(p, scoped=False, writes=True)
        p.set_defaults(func=_run, op=name)

    p = sub.add_parser("history", help="list journal entries (newest first)")
    _common(p, scoped=False, writes=False)
    p.add_argument("--dry-run", action="store_true", help="with --prune: say how many would go, change nothing")
    add_limit(p, HISTORY_LIMIT, "entries listed, newest first")
    p.add_argument("--show", type=int, metavar="ID", help="print the diff of entry ID (default: list the entries)")
    p.add_argument(
        "--prune", type=int, metavar="N",
        help="forget all but the newest N entries (no undo past them; default: keep every entry)",
    )
    p.set_defaults(func=_run, op="history")


def _run(args: argparse.Namespace) -> int:
    from curator.tags.commands import run

    return run(args)
