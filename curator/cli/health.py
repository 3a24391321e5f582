"""``kiln scan``, ``kiln check``, ``kiln dupes``: the dataset's index and health, for people and scripts.

Human output is rich tables on stdout; ``--json`` prints one JSON document. Exit status: 0 when the dataset
was read (even with findings), 1 when it cannot be read at all (the reason goes to stderr).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from curator.cli.options import (
    add_bucket_options,
    add_caption_extension,
    add_dataset,
    add_json,
    add_no_progress,
    add_text_model,
    scan_config,
    text_model_config,
)
from curator.textsafe import dumps_json

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from curator.dataset import Dataset
    from curator.dupes import Cluster
    from curator.records import Flag, ImageRecord
    from curator.scan.scanner import ScanSummary
    from curator.textdetect.config import TextModelConfig


def _common(parser: argparse.ArgumentParser) -> None:
    add_dataset(parser)
    add_caption_extension(parser)
    parser.add_argument(
        "--workers", type=int, default=None, metavar="N", help="scan processes (default: one per CPU core)"
    )
    parser.add_argument(
        "--pixel-limit", type=int, default=None, metavar="PX",
        help="refuse images above this many pixels (default 100000000: 100 MP)",
    )
    add_json(parser)
    add_no_progress(parser)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``scan``, ``check`` and ``dupes``."""
    scan = subparsers.add_parser(
        "scan",
        help="build or refresh the dataset's index and print a summary",
        description="Index the dataset (.kiln/index.sqlite): only new and changed files are read. "
        "Writes nothing in the dataset except .kiln/.",
    )
    _common(scan)
    scan.set_defaults(func=run_scan)

    check = subparsers.add_parser(
        "check",
        help="list every health flag: broken, low-res, caption problems, duplicates",
        description="Refresh the index, then report every finding (see docs/DATASET.md for the kinds).",
    )
    _common(check)
    add_bucket_options(check)
    check.add_argument(
        "--threshold", type=int, default=None, metavar="BITS", help="near-duplicate pHash distance in bits (default 8)"
    )
    check.add_argument(
        "--kind", action="append", default=None, metavar="KIND", help="only these kinds (repeatable; default: every kind)"
    )
    check.add_argument(
        "--quality",
        action="append",
        default=[],
        metavar="KIND=VALUE",
        help="an image-quality threshold, e.g. blurry=0.3, too-dark=0.1, heavy-jpeg=40, letterbox=off (repeatable; "
        "default: none; see docs/DATASET.md)",
    )
    check.add_argument(
        "--sort",
        choices=["path", "kind", "score"],
        default="path",
        help="order of the findings (default path; score: the worst first, findings without a score last)",
    )
    check.add_argument("--no-geometric", action="store_true", help="near duplicates by whole-frame hash only")
    add_text_model(check)
    check.set_defaults(func=run_check)

    dupes = subparsers.add_parser(
        "dupes",
        help="exact and near-duplicate clusters, with the image to keep",
        description="Cluster exact duplicates (same bytes or pixels) and near duplicates (perceptual hash).",
    )
    _common(dupes)
    dupes.add_argument(
        "--threshold", type=int, default=None, metavar="BITS", help="near-duplicate pHash distance in bits (default 8)"
    )
    dupes.add_argument(
        "--no-geometric", action="store_true", help="skip the search for cropped, rotated and locally edited copies"
    )
    dupes.set_defaults(func=run_dupes)


# ------------------------------------------------------------------------------------------------ helpers


def _error(message: str) -> int:
    from curator.textsafe import printable

    print(f"kiln: {printable(message)}", file=sys.stderr)
    return 1


def _open(args: argparse.Namespace, **overrides: object) -> Dataset | int:
    """Open the dataset or return an exit code after printing why it cannot be opened."""
    from pydantic import ValidationError

    from curator.dataset import Dataset
    from curator.index import IndexOpenError
    from curator.layout import LayoutError
    from curator.scan.config import config_error_message

    try:
        config = scan_config(args, **overrides)
    except ValidationError as exc:
        return _error(config_error_message(exc))
    try:
        return Dataset.open(args.dataset, config=config)
    except (LayoutError, IndexOpenError) as exc:
        return _error(str(exc))
    except OSError as exc:
        return _error(f"{args.dataset}: cannot read the dataset ({exc.strerror or exc})")


def _console() -> Console:
    from curator.textsafe import cli_console

    return cli_console()


def _scan(dataset: Dataset, args: argparse.Namespace, report_skipped: bool = True) -> ScanSummary | None:
    progress = False if (args.no_progress or args.json) else None
    summary = dataset.scan(progress=progress)
    if report_skipped:
        _print_skipped(summary)
    if summary.images == 0 and summary.unreadable_dirs:
        return None
    return summary


def _print_skipped(summary: ScanSummary) -> None:
    """The images the scan could not look at (symlink loops, bad names), on stderr (the tables stay clean)."""
    from curator.textsafe import printable

    for path, why in summary.skipped:
        print(f"kiln: skipped {printable(path)}: {printable(why)}", file=sys.stderr)
    for name in summary.bad_names:
        print(f"kiln: skipped {printable(name)}: the file name is not valid UTF-8", file=sys.stderr)


def _text(value: object) -> Text:
    from rich.text import Text

    from curator.textsafe import printable

    return Text(printable(value))


def _print_warnings(dataset: Dataset) -> None:
    from curator.textsafe import printable

    for warning in dataset.layout.warnings:
        print(f"kiln: {printable(warning)}", file=sys.stderr)


# ------------------------------------------------------------------------------------------------ scan


def run_scan(args: argparse.Namespace) -> int:
    dataset = _open(args)
    if isinstance(dataset, int):
        return dataset
    with dataset:
        _print_warnings(dataset)
        summary = _scan(dataset, args, report_skipped=args.json)
        if summary is None:
            return _error(f"{dataset.root}: no subset folder could be read")
        records = dataset.images()
        if args.json:
            out = summary.to_dict()
            out["root"] = str(dataset.root)
            out["layout"] = dataset.layout.source
            out["index"] = str(dataset.index.path)
            out["subsets"] = _subset_rows(dataset, records)
            print(dumps_json(out))
            return 0
        _print_scan(dataset, summary, records)
    return 0


def _subset_rows(dataset: Dataset, records: list[ImageRecord]) -> list[dict[str, Any]]:
    counts: dict[str, int] = {}
    for record in records:
        counts[record.subset.rel_dir] = counts.get(record.subset.rel_dir, 0) + 1
    return [
        {
            "folder": s.rel_dir or ".",
            "repeats": s.repeats,
            "class_tokens": s.class_tokens,
            "is_reg": s.is_reg,
            "caption_extension": s.caption_extension,
            "images": counts.get(s.rel_dir, 0),
        }
        for s in dataset.layout.subsets
    ]


def _print_scan(dataset: Dataset, summary: ScanSummary, records: list[ImageRecord]) -> None:
    from rich.table import Table

    console = _console()
    table = Table(title=_text(f"{dataset.root} ({dataset.layout.source} layout)"), title_justify="left")
    for column in ("folder", "repeats", "class tokens", "reg", "captions", "images"):
        table.add_column(column, justify="right" if column in ("repeats", "images") else "left")
    for row in _subset_rows(dataset, records):
        table.add_row(
            _text(row["folder"]),
            str(row["repeats"]),
            _text(row["class_tokens"]),
            "reg" if row["is_reg"] else "",
            _text(row["caption_extension"]),
            f"{row['images']:,}",
        )
    console.print(table)
    rate = f", {summary.images_per_second:,.0f} images/s" if summary.probed else ""
    console.print(
        _text(
            f"{summary.images:,} images: {summary.new:,} new, {summary.changed:,} changed, {summary.removed:,} removed, "
            f"{summary.unchanged:,} unchanged ({summary.seconds:.2f} s{rate})"
        )
    )
    if summary.flags_by_kind:
        parts = ", ".join(f"{kind} {n:,}" for kind, n in sorted(summary.flags_by_kind.items()))
        console.print(_text(f"file findings: {parts}; run `kiln check` for all checks"))
    for path, why in summary.skipped:
        console.print(_text(f"skipped ({why}): {path}"), style="yellow")
    for name in summary.bad_names:
        console.print(_text(f"skipped (file name is not valid UTF-8): {name}"), style="yellow")
    where = "user cache (dataset is read-only)" if dataset.index.in_cache else "dataset"
    console.print(_text(f"index: {dataset.index.path} ({where})"), style="dim")


# ------------------------------------------------------------------------------------------------ check


def run_check(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from curator.scan.config import QualityThresholds, config_error_message

    try:
        quality = QualityThresholds.parse(args.quality) if args.quality else None
    except ValidationError as exc:
        return _error("--quality " + config_error_message(exc).replace("\n", "\n--quality "))
    except ValueError as exc:
        return _error(str(exc))
    text_model = _text_model(args)
    if isinstance(text_model, int):
        return text_model
    overrides = {
        "near_threshold": args.threshold,
        "quality": quality,
        "geometric": False if args.no_geometric else None,
        "text_model": text_model,
    }
    dataset = _open(args, **overrides)
    if isinstance(dataset, int):
        return dataset
    with dataset:
        from curator.records import FLAG_KINDS
        from curator.textsafe import printable

        unknown = [k for k in args.kind or [] if k not in FLAG_KINDS]
        if unknown:
            return _error(f"unknown kind {unknown[0]!r}; kinds are: {', '.join(FLAG_KINDS)}")
        _print_warnings(dataset)
        if dataset.buckets.settings is None:
            print(f"kiln: the bucket checks are left out: {printable(dataset.buckets.error)}", file=sys.stderr)
        if _scan(dataset, args) is None:
            return _error(f"{dataset.root}: no subset folder could be read")
        from curator.textdetect.model import TextModelError

        try:
            dataset.text_areas(progress=not (args.no_progress or args.json) and sys.stderr.isatty())
            flags = dataset.flags(refresh=False)  # the text areas are cached now
        except TextModelError as exc:
            return _error(str(exc))
        if args.kind:
            flags = [f for f in flags if f.kind in set(args.kind)]
        flags = sort_flags(flags, args.sort)
        images = len(dataset.images())
        if args.json:
            print(dumps_json({"images": images, "flags": [f.to_dict() for f in flags]}))
            return 0
        _print_check(dataset, images, flags)
    return 0


def _text_model(args: argparse.Namespace) -> TextModelConfig | None | int:
    """The text detector's config from ``--text-model*``, None without one, or an exit code after saying why."""
    try:
        return text_model_config(args, "check")
    except ValueError as exc:
        return _error(str(exc).replace("\n", "\nkiln: "))


def sort_flags(flags: list[Flag], order: str) -> list[Flag]:
    """Findings by path (as found), by kind, or by score: the worst first, unscored findings after."""
    from curator.records import FLAG_KINDS

    rank = {kind: n for n, kind in enumerate(FLAG_KINDS)}
    if order == "kind":
        return sorted(flags, key=lambda f: (rank.get(f.kind, 99), f.path))
    if order == "score":
        return sorted(flags, key=lambda f: (f.score is None, -(f.score or 0.0), rank.get(f.kind, 99), f.path))
    return list(flags)


def _print_check(dataset: Dataset, images: int, flags: list[Flag]) -> None:
    from collections import Counter

    from rich.table import Table

    from curator.records import FLAG_KINDS

    console = _console()
    if not flags:
        console.print(_text(f"{images:,} images, no findings"))
        return
    table = Table(title=_text(f"{dataset.root}: {len(flags):,} findings in {images:,} images"), title_justify="left")
    table.add_column("path", overflow="fold")
    table.add_column("kind", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for flag in flags:
        score = "" if flag.score is None else f"{flag.score:.2f}"
        table.add_row(_text(flag.path), _text(flag.kind), score, _text(flag.detail))
    console.print(table)
    counts = Counter(f.kind for f in flags)
    summary = Table(title="by kind", title_justify="left")
    summary.add_column("kind")
    summary.add_column("count", justify="right")
    for kind in FLAG_KINDS:
        if counts.get(kind):
            summary.add_row(kind, f"{counts[kind]:,}")
    console.print(summary)


# ------------------------------------------------------------------------------------------------ dupes


def run_dupes(args: argparse.Namespace) -> int:
    dataset = _open(args, near_threshold=args.threshold, geometric=False if args.no_geometric else None)
    if isinstance(dataset, int):
        return dataset
    with dataset:
        _print_warnings(dataset)
        if _scan(dataset, args) is None:
            return _error(f"{dataset.root}: no subset folder could be read")
        clusters = dataset.duplicates()
        if args.json:
            print(dumps_json({"clusters": [c.to_dict() for c in clusters]}))
            return 0
        _print_dupes(dataset, clusters)
    return 0


def _print_dupes(dataset: Dataset, clusters: list[Cluster]) -> None:
    from rich.table import Table

    console = _console()
    if not clusters:
        console.print(_text(f"no duplicates (near threshold {dataset.config.near_threshold} bits)"))
        return
    records = {r.path: r for r in dataset.images()}
    table = Table(
        title=_text(f"{len(clusters)} duplicate clusters (near threshold {dataset.config.near_threshold} bits)"),
        title_justify="left",
    )
    for column in ("cluster", "kind", "", "path (and why)", "size", "bytes"):
        table.add_column(column, justify="right" if column in ("cluster", "bytes") else "left",
                         overflow="fold" if column.startswith("path") else "ellipsis")  # fmt: skip
    for cluster in clusters:
        for number, path in enumerate(cluster.members):
            record = records.get(path)
            size = f"{record.width}x{record.height}" if record else ""
            nbytes = f"{record.size:,}" if record else ""
            mark = "keep" if path == cluster.keep else "remove?"
            if path == cluster.keep:
                why = cluster.keep_reason
            else:
                reason = cluster.why.get(path, {})
                distance = f", pHash {reason['distance']} bits" if cluster.kind == "near" else ""
                why = f"{reason.get('transform', '')}{distance} (vs {reason.get('matched', cluster.keep)})"
            cell = _text(path)
            if why:
                cell.append("\n")
                cell.append(_text(why).plain, style="dim")
            table.add_row(
                str(cluster.id) if number == 0 else "",
                cluster.kind if number == 0 else "",
                mark,
                cell,
                size,
                nbytes,
            )
        table.add_section()
    console.print(table)
