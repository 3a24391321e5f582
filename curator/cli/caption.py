"""``kiln caption DATASET --model PATH``: natural-language captions from a local transformers model.

Registration is light: torch and transformers are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from curator.cli.model_run import checked_config, fail
from curator.cli.options import QUERY_HELP, add_caption_extension

if TYPE_CHECKING:
    from curator.caption.config import CaptionConfig
    from curator.caption.runner import CaptionReport

EPILOG = """\
examples:
  kiln caption ./dataset --model ~/models/blip-image-captioning-large
  kiln caption ./dataset --model microsoft/Florence-2-large --prompt "<DETAILED_CAPTION>" --device cuda
  kiln caption ./dataset --model ./llava --prompt "Describe the image; the person is {trigger}." --prefix ohwx
  kiln caption ./dataset --model ./blip --mode prepend --dry-run     # the sentence before the tags

A model is a local folder (config.json, weights, processor files) or a repository id already in the Hugging
Face cache (kiln never downloads): BLIP captioning models, Florence-2, or an image-text-to-text model with a
chat template (LLaVA, JoyCaption, Qwen2-VL, SmolVLM). --mode write puts the caption in its own file (.caption,
or --extension); prepend/append put it into the tag caption. Every write is one journal entry: `kiln tags undo`
reverts the run. Exit codes: 0 done, 1 nothing could be done, 2 conflicts left some captions untouched.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``caption`` subcommand."""
    p = subparsers.add_parser(
        "caption",
        help="natural-language captions from a local BLIP / Florence-2 / LLaVA-style model (undoable)",
        description="Caption a dataset's images with a local transformers captioning model.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dataset", type=Path, help="dataset folder (kohya layout or flat) or kohya dataset TOML")
    p.add_argument("--model", required=True, help="model folder, or a repo id in the local Hugging Face cache")
    p.add_argument("--mode", choices=["write", "prepend", "append"], default="write",
                   help="write: its own file (default); prepend/append: into the tag caption")  # fmt: skip
    p.add_argument("--extension", default=".caption", metavar="EXT", help="write mode: file extension (default .caption)")
    p.add_argument("--prompt", default=None, metavar="TEXT",
                   help="the prompt (BLIP: the caption's start; Florence-2: a task token; chat models: the request); "
                   "placeholders {trigger} {tags} {folder} (default: the model's own)")  # fmt: skip
    p.add_argument("--prefix", action="append", default=[], metavar="WORD", help="put WORD first, e.g. a trigger (repeatable; default: none)")
    p.add_argument("--prefix-from-folder", action="store_true", help="put each kohya folder's class tokens first")
    p.add_argument("--max-length", type=int, default=75, metavar="N", help="most new tokens per caption (default 75)")
    p.add_argument("--beams", type=int, default=3, metavar="N", help="beam search width (default 3; 1 = greedy)")
    p.add_argument("--caption-batch", type=int, default=8, metavar="N", dest="batch_size",
                   help="images per model call (default 8)")  # not --batch-size: that is the train batch everywhere
    p.add_argument("--batch-size", type=int, dest="batch_size", help=argparse.SUPPRESS)  # its first name
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="cpu or cuda (default auto: CUDA when torch sees it)")
    p.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"], default="auto",
                   help="default auto: float16 on CUDA, float32 on CPU")  # fmt: skip
    p.add_argument("--where", default=None, metavar="QUERY", help=QUERY_HELP)
    p.add_argument("--include-reg", action="store_true", help="also caption regularization images")
    p.add_argument("--force", action="store_true", help="write mode: replace existing caption files (refused without --force)")
    p.add_argument("--keep-commas", action="store_true",
                   help="prepend/append: keep commas in the sentence (by default they become ';' so kohya keeps it whole)")  # fmt: skip
    add_caption_extension(p)
    p.add_argument("--dry-run", action="store_true", help="caption and show what would change; change nothing")
    p.add_argument("--json", action="store_true", help="print a JSON report on stdout")
    p.set_defaults(func=run)


def _config(args: argparse.Namespace) -> CaptionConfig:
    from curator.caption.config import CaptionConfig

    return CaptionConfig(
        model=args.model,
        mode=args.mode,
        extension=args.extension,
        prompt=args.prompt,
        prefix=args.prefix,
        prefix_from_folder=args.prefix_from_folder,
        max_new_tokens=args.max_length,
        num_beams=args.beams,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        where=args.where,
        include_reg=args.include_reg,
        force=args.force,
        keep_commas=args.keep_commas,
        dry_run=args.dry_run,
    )


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit code."""
    from curator.caption.config import FIELD_HINTS

    config = checked_config("caption", args, _config, FIELD_HINTS)
    if config is None:
        return 1
    from curator.autotag.progress import progress_factory
    from curator.caption.model import Captioner, CaptionModelError, resolve_model
    from curator.caption.runner import CaptionError, run_caption
    from curator.dataset import Dataset

    try:
        folder = resolve_model(config.model)  # cheap checks first: a typo fails before any scanning
    except CaptionModelError as exc:
        return fail("caption", str(exc), args.json)
    try:
        dataset = Dataset.open(args.dataset, caption_extension=args.caption_extension, quiet=args.json)
    except (OSError, ValueError) as exc:
        return fail("caption", f"{args.dataset}: {exc}", args.json)
    interactive = sys.stderr.isatty() and not args.json
    with dataset:
        try:
            captioner = Captioner.load(folder, config.device, config.dtype, name=config.model)
        except CaptionModelError as exc:
            return fail("caption", str(exc), args.json)
        dataset.scan(progress=interactive)
        with progress_factory(enabled=interactive, label="caption") as progress:
            try:
                report = run_caption(dataset, config, captioner, progress=progress)
            except CaptionError as exc:
                return fail("caption", str(exc), args.json)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        _print(report)
    if report.reason and report.exit_code == 1:
        print(f"kiln caption: nothing to do: {report.reason}", file=sys.stderr)
    return 130 if report.interrupted else report.exit_code


def _print(report: CaptionReport) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from curator.textsafe import printable

    console = Console(highlight=False)
    table = Table(title=Text(f"{report.model} ({report.family}, {report.device}): {report.count('captioned')} "
                             f"caption(s){' (dry run, nothing written)' if report.dry_run else ''}"),
                  title_justify="left")  # fmt: skip
    table.add_column("image", overflow="fold")
    table.add_column("status")
    table.add_column("caption", overflow="fold")
    for outcome in report.outcomes[:200]:
        table.add_row(Text(printable(outcome.path)), outcome.status, Text(printable(outcome.text or outcome.error or "")))
    console.print(table)
    if report.entry_id is not None:
        console.print(Text(f"journal entry #{report.entry_id}; undo with: kiln tags undo DATASET"))
