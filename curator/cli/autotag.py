"""`kiln autotag DATASET --model PATH_OR_REPO`: tag images with a WD14-family ONNX tagger.

Registration is light: onnxruntime, numpy and PIL are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from curator.cli.model_run import checked_config, fail
from curator.cli.options import (
    QUERY_HELP,
    add_caption_extension,
    add_dataset,
    add_json,
    add_no_progress,
    add_train_config,
)

if TYPE_CHECKING:
    from curator.autotag.config import AutotagConfig

EPILOG = """\
examples:
  kiln autotag ./dataset --model ~/models/wd-swinv2-tagger-v3
  kiln autotag ./dataset --model SmilingWolf/wd-swinv2-tagger-v3 --mode append --prefix ohwx
  kiln autotag ./dataset --model ./tagger --mcut --character-first --exclude "solo, simple background"
  kiln autotag ./dataset --model ./tagger --mode replace --dry-run --json

A model is a folder holding model.onnx and selected_tags.csv (SmilingWolf's layout), or a Hugging Face
repository id already in the local cache (kiln never downloads). Every caption write is one journal entry:
`kiln tags undo` reverts the whole run. Exit codes: 0 done, 1 nothing could be done, 2 conflicts left
some captions untouched.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `autotag` subcommand."""
    p = subparsers.add_parser(
        "autotag",
        help="tag images with a WD14 ONNX tagger (undoable)",
        description="Tag a dataset's images with a WD14-family ONNX tagger and write kohya captions.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataset(p)
    p.add_argument("--model", required=True, help="folder with model.onnx + selected_tags.csv, or a cached HF repo id")
    p.add_argument("--general", type=float, default=0.35, metavar="P", help="general tag threshold (default 0.35)")
    p.add_argument("--character", type=float, default=0.85, metavar="P", help="character tag threshold (default 0.85)")
    p.add_argument("--mcut", action="store_true",
                   help="MCut thresholds instead of fixed ones for general and character tags (character floor 0.15)")
    p.add_argument("--general-mcut", action="store_true", help="MCut for general tags only")
    p.add_argument("--character-mcut", action="store_true", help="MCut for character tags only (floored at 0.15)")
    p.add_argument("--ratings", action="store_true", help="add the most probable rating tag first")
    p.add_argument("--exclude", action="append", default=[], metavar="TAG", help="never write TAG (repeat or comma-separate; default: none)")
    p.add_argument("--keep-underscores", action="store_true", help="keep Danbooru underscores (long_hair)")
    p.add_argument("--character-first", action="store_true", help="character tags before general tags")
    p.add_argument("--max-tags", type=int, default=None, metavar="N", help="at most N general tags, the most confident (default: no limit)")
    p.add_argument("--prefix", action="append", default=[], metavar="TAG", help="tag(s) kept first, e.g. a trigger word (default: none)")
    p.add_argument(
        "--prefix-from-folder",
        action="store_true",
        help="keep each kohya folder's class tokens (10_ohwx woman -> 'ohwx woman') first",
    )
    p.add_argument("--include-reg", action="store_true",
                   help="also tag regularization images (left out by default: kohya captions them by folder name)")
    p.add_argument("--mode", choices=["missing", "append", "replace"], default="missing",
                   help="missing: only uncaptioned images (default); append: add new tags; replace: overwrite tags")
    p.add_argument("--tagger-batch", type=int, default=16, metavar="N", dest="batch_size",
                   help="images per tagger call (default 16)")
    p.add_argument("--batch-size", type=int, dest="batch_size", help=argparse.SUPPRESS)  # the name before issue 18
    p.add_argument("--threads", type=int, default=None, metavar="N", dest="workers",
                   help="image decoding threads (default: one per CPU core, at most 8)")
    p.add_argument("--workers", type=int, dest="workers", help=argparse.SUPPRESS)  # the name before issue 18
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "rocm"], default="auto",
                   help="execution provider (default auto: CUDA or ROCm when onnxruntime offers it, else CPU)")
    add_caption_extension(p)
    p.add_argument("--where", default=None, metavar="QUERY", help=QUERY_HELP)
    add_train_config(p)
    p.add_argument("--dry-run", action="store_true", help="print the per-file diff, change nothing")
    add_json(p)
    add_no_progress(p)
    p.set_defaults(func=run)


def _config_from_args(args: argparse.Namespace) -> AutotagConfig:
    from curator.autotag.config import AutotagConfig

    values = {
        "model": args.model,
        "general_threshold": args.general,
        "character_threshold": args.character,
        "general_mcut": args.mcut or args.general_mcut,
        "character_mcut": args.mcut or args.character_mcut,
        "ratings": args.ratings,
        "exclude": args.exclude,
        "keep_underscores": args.keep_underscores,
        "character_first": args.character_first,
        "max_tags": args.max_tags,
        "prefix": args.prefix,
        "prefix_from_folder": args.prefix_from_folder,
        "include_reg": args.include_reg,
        "mode": args.mode,
        "batch_size": args.batch_size,
        "device": args.device,
        "where": args.where,
        "dry_run": args.dry_run,
    }
    if args.workers is not None:
        values["workers"] = args.workers
    return AutotagConfig(**values)


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit code."""
    from curator.autotag.config import FIELD_HINTS

    config = checked_config("autotag", args, _config_from_args, FIELD_HINTS)
    if config is None:
        return 1

    from curator.autotag.model import ModelError, TaggerModel, resolve_model
    from curator.autotag.progress import progress_factory
    from curator.autotag.runner import AutotagError, run_autotag
    from curator.dataset import Dataset

    interactive = sys.stderr.isatty() and not args.json and not args.no_progress
    try:
        files = resolve_model(config.model)  # cheap checks first: a typo fails before any scanning
    except ModelError as exc:
        return fail("autotag", str(exc), args.json)
    ext = args.caption_extension
    if ext and not ext.startswith("."):
        ext = "." + ext
    from curator.scan.config import ScanConfig

    try:
        dataset = Dataset.open(args.dataset, caption_extension=ext, config=ScanConfig(train_config=args.train_config),
                               quiet=args.json)
    except (OSError, ValueError) as exc:  # LayoutError, IndexOpenError: the dataset cannot be read
        return fail("autotag", f"{args.dataset}: {exc}", args.json)
    with dataset:
        try:
            model = TaggerModel.load(files, device=config.device)
        except ModelError as exc:
            return fail("autotag", str(exc), args.json)
        try:
            dataset.scan(progress=interactive)
        except (OSError, ValueError) as exc:
            return fail("autotag", f"{args.dataset}: cannot scan: {exc}", args.json)
        with progress_factory(enabled=interactive) as progress:
            try:
                report = run_autotag(dataset, config, model=model, progress=progress)
            except (AutotagError, ModelError) as exc:
                return fail("autotag", str(exc), args.json)

    if args.json:
        print(json.dumps(report.to_dict()))  # ASCII: odd file names (surrogates) stay valid JSON
    else:
        from curator.autotag.report import print_report

        print_report(report, verbose=config.dry_run)
    if report.reason and report.exit_code == 1:
        print(f"kiln autotag: nothing to do: {report.reason}", file=sys.stderr)
    elif report.exit_code == 1:
        print("kiln autotag: no image could be tagged (see the bad images above)", file=sys.stderr)
    if report.interrupted:
        return 130
    return report.exit_code
