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
from curator.cli.options import add_text_model, add_train_config

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


class KilnParser(argparse.ArgumentParser):
    """argparse, with the nearest choice suggested for a mistyped subcommand or choice (``kiln tags stast``:
    "did you mean 'stats'?"). Every parser of the command tree is one (subparsers take their parent's class)."""

    def _check_value(self, action: argparse.Action, value: object) -> None:
        choices = action.choices
        if choices is not None and isinstance(value, str) and value not in choices:
            import difflib

            names = [str(c) for c in choices]
            close = difflib.get_close_matches(value, names, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise argparse.ArgumentError(action, f"invalid choice: {value!r}{hint} (choose from {', '.join(names)})")
        super()._check_value(action, value)


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
        "(repeatable; default: none; as `kiln check --quality`, see docs/DATASET.md)",
    )
    add_train_config(parser)
    add_text_model(parser)
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
    from curator.cli.options import text_model_config

    try:
        text_model = text_model_config(args, "curate")
    except ValueError as exc:
        print("kiln: " + str(exc).replace("\n", "\nkiln: "), file=sys.stderr)
        return 1
    from tui.model import preload

    model = preload(dataset, quality=quality, train_config=args.train_config, text_model=text_model)  # reads the index meanwhile
    from tui.app import run_curator  # Textual is imported only here

    protocol = None if args.image_protocol in (None, "auto") else args.image_protocol
    return run_curator(dataset, image_protocol=protocol, theme=args.theme, quality=quality,
                       train_config=args.train_config, model=model)


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree; registration imports no heavy module."""
    parser: argparse.ArgumentParser = KilnParser(
        prog="kiln", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"kiln {curator_version}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")  # each a KilnParser, as its parent
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


def _not_a_command(word: str, commands: set[str]) -> str | None:
    """Why ``kiln WORD …`` is neither a command nor a dataset to open (None: open it as a dataset): a word
    close to a command is a typo of it; a word that is no path anywhere is not a dataset either."""
    import difflib

    if Path(word).exists():
        return None
    close = difflib.get_close_matches(word, sorted(commands), n=1, cutoff=0.6)
    if close:
        return f"unknown command {word!r}; did you mean 'kiln {close[0]}'? (kiln --help lists the commands)"
    if "/" in word or "." in word or "\\" in word:
        return None  # a path: the curator says it does not exist
    return (f"{word!r} is neither a command nor a dataset folder here; commands: {', '.join(sorted(commands))} "
            "(or give a dataset folder or TOML to open it)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run kiln; returns the process exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    commands = _known_commands(parser)
    if args_list and not args_list[0].startswith("-") and args_list[0] not in commands:
        problem = _not_a_command(args_list[0], commands)
        if problem is not None:
            from curator.textsafe import printable

            print(f"kiln: {printable(problem)}", file=sys.stderr)
            return 2
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
