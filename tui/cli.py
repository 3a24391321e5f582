"""The `kiln` entry point: one argparse parser that dispatches to the headless packages and the TUI.

This module must stay light: `kiln --help` and the headless commands never import Textual, torch,
diffusers or onnxruntime here. Each package registers its own subcommands and imports its
implementation only when the command runs.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from curator import __version__ as curator_version
from curator.cli.options import add_train_config

DESCRIPTION = """\
kiln: curate image datasets and train LoRA adapters for Stable Diffusion, from the terminal.

  kiln DATASET              open the curator TUI on a dataset folder (kohya layout, flat, or dataset TOML)
  kiln scan DATASET         build or refresh the dataset's index and print a summary
  kiln check DATASET        list every health flag (broken, low-res, duplicates, caption problems)
  kiln tags stats DATASET   tag statistics; `kiln tags --help` for the bulk tag operations
  kiln train CONFIG.toml    train a LoRA; `kiln train --print-config easy` prints a config to start from
  kiln runs                 list training runs; `kiln watch RUN` attaches to one
  kiln lora info FILE       what a LoRA is; `kiln lora --help` for extract, resize, merge and grid
"""


def _add_curate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("curate", help="open the curator TUI on a dataset", description="Open the curator TUI.")
    parser.add_argument("dataset", type=Path, help="dataset folder or kohya dataset TOML")
    parser.add_argument(
        "--image-protocol",
        choices=["auto", "halfblock", "sixel", "kitty"],
        default=None,
        help="how previews are drawn (default: auto-detect; env KILN_IMAGE_PROTOCOL)",
    )
    parser.add_argument(
        "--theme", default=None, help="theme name from themes/ or your themes folder (default: the last one used, else kiln-dark)"
    )
    parser.add_argument(
        "--quality",
        action="append",
        default=[],
        metavar="KIND=VALUE",
        help="an image-quality threshold for the health view, e.g. blurry=0.3, heavy-jpeg=40, letterbox=off "
        "(repeatable; as `kiln check --quality`, see docs/DATASET.md)",
    )
    add_train_config(parser)
    parser.set_defaults(func=_run_curate)


def _run_curate(args: argparse.Namespace) -> int:
    dataset: Path = args.dataset
    if not dataset.exists():
        print(f"kiln: {dataset}: no such dataset folder or TOML file", file=sys.stderr)
        return 1
    from pydantic import ValidationError

    from curator.scan.config import QualityThresholds, config_error_message

    try:
        quality = QualityThresholds.parse(args.quality) if args.quality else None
    except ValidationError as exc:
        print("kiln: --quality " + config_error_message(exc).replace("\n", "\nkiln: --quality "), file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"kiln: {exc}", file=sys.stderr)
        return 1
    from tui.app import run_curator  # Textual is imported only here

    protocol = None if args.image_protocol in (None, "auto") else args.image_protocol
    return run_curator(dataset, image_protocol=protocol, theme=args.theme, quality=quality,
                       train_config=args.train_config)


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree; registration imports no heavy module."""
    parser = argparse.ArgumentParser(
        prog="kiln", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"kiln {curator_version}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_curate(subparsers)
    import curator.cli
    import train.cli

    curator.cli.register(subparsers)
    train.cli.register(subparsers)
    return parser


def _known_commands(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def main(argv: Sequence[str] | None = None) -> int:
    """Run kiln; returns the process exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if args_list and not args_list[0].startswith("-") and args_list[0] not in _known_commands(parser):
        args_list.insert(0, "curate")  # `kiln DATASET` opens the curator
    args = parser.parse_args(args_list)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("kiln: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except (OSError, sqlite3.Error) as exc:  # a fault of the machine (full disk, busy index): one line, no traceback
        from curator.faults import describe

        print(f"kiln: {describe(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
