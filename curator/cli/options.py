"""Options several commands share, defined once so that each has the same name, meaning and help everywhere.

Registration stays light: nothing here imports pydantic or the engine. The defaults named in the help texts are
kohya's (``curator.buckets.BucketSettings()`` and ``DEFAULT_BATCH_SIZE``) and the text detector's
(``TextModelConfig``); the options default to None so that the config's own default applies, and
tests/test_bucket_settings.py and tests/test_text_model.py keep the named figures equal to the configs'.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from curator.scan.config import ScanConfig
    from curator.textdetect.config import TextModelConfig

# kohya's defaults, as BucketSettings() has them (checked by a test; importing it here would load pydantic)
KOHYA_RESOLUTION = 512
KOHYA_MIN_BUCKET = 256
KOHYA_MAX_BUCKET = 1024
KOHYA_STEP = 64
DATASET_DEFAULT = "the dataset TOML's or --train-config's, else kohya's"
# TextModelConfig's defaults, named in the help (checked by a test; the options pass only what the user gave)
TEXT_MODEL_PRESET = "db"
TEXT_MODEL_SIDE = 640

QUERY_HELP = (
    "scope: a filter query, e.g. 'tag:\"long hair\" AND -tag:solo', 'folder:10_ohwx tokens>75', "
    "'name:img_0* OR flag:low-res', 'bucket:512x768', 'tags<5' (see docs/TAGS.md; default: every image)"
)

NO_PROGRESS_HELP = "no progress bar (default: one on a terminal, none otherwise)"
NUM_PROCESSES_HELP = "processes (GPUs) training together through accelerate (default 1)"
ALLOW_PICKLE_HELP = "allow pickled .ckpt/.pt checkpoints, which can run code: trusted files only (default: safetensors only)"

OPTION_SPELLING = {
    "resolution": "--resolution",
    "min_bucket": "--min-bucket",
    "max_bucket": "--max-bucket",
    "step": "--step",
    "bucket_step": "--step",
    "no_upscale": "--no-upscale",
    "train_config": "--train-config",
}
"""``BucketSettings`` field -> the option that sets it (for messages)."""


def add_dataset(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", type=Path, help="dataset folder (kohya <repeats>_<name>/ or flat) or kohya TOML")


def add_caption_extension(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--caption-extension",
        default=None,
        metavar="EXT",
        help="caption file extension, .txt or .caption (default .txt for a folder; a dataset TOML's own, else "
        "kohya's .caption)",
    )


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of tables")


def add_no_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)


def add_limit(parser: argparse.ArgumentParser, default: int, what: str, *aliases: str) -> None:
    """``--limit N``: how many rows a listing shows (0 = all); a listing that is cut says how much and how to
    see the rest. ``aliases``: old spellings, accepted but not listed in the help."""
    parser.add_argument(
        "--limit", type=int, default=default, metavar="N", help=f"{what} (default {default}; 0 = all)"
    )
    for alias in aliases:
        parser.add_argument(alias, type=int, dest="limit", help=argparse.SUPPRESS)


def add_train_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--train-config",
        type=Path,
        default=None,
        metavar="CONFIG",
        help="a kiln train config (kiln train CONFIG.toml): use its [dataset] bucket options (default: the "
        "dataset TOML's, else kohya's: resolution 512, buckets 256-1024 px, step 64)",
    )


def add_text_model(parser: argparse.ArgumentParser) -> None:
    """``--text-model PATH``, ``--text-model-preset``, ``--text-model-side``: the optional ONNX text detector of
    the text-heavy check (``kiln check`` and the TUI's health pass, ``kiln DATASET``)."""
    parser.add_argument(
        "--text-model", type=Path, default=None, metavar="PATH",
        help="an ONNX text detector (DB, EAST or docTR family) for the text-heavy check, run offline on each new "
        "or changed image (default: none, the check is not run; see docs/DATASET.md for models that fit)",
    )  # fmt: skip
    parser.add_argument(
        "--text-model-preset", choices=["db", "doctr", "east"], default=None,
        help=f"the detector family, for its input normalisation (default {TEXT_MODEL_PRESET}: PaddleOCR DB)",
    )  # fmt: skip
    parser.add_argument(
        "--text-model-side", type=int, default=None, metavar="N",
        help=f"longer side of the image fed to a detector with free input size (multiple of 32; default "
        f"{TEXT_MODEL_SIDE})",
    )  # fmt: skip


def text_model_config(args: argparse.Namespace, command: str) -> TextModelConfig | None:
    """The text detector's config from :func:`add_text_model`'s options, None without ``--text-model``; raises
    ValueError with the lines to print (``command``: how the error names the command, e.g. ``check``)."""
    if args.text_model is None:
        return None
    from pydantic import ValidationError

    from curator.configerrors import describe_validation_error
    from curator.textdetect.config import FIELD_HINTS, TextModelConfig

    try:
        given = {"preset": args.text_model_preset, "side": args.text_model_side}
        return TextModelConfig(path=args.text_model, **{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        raise ValueError(describe_validation_error(exc, f"{command} --text-model", FIELD_HINTS)) from exc


def add_bucket_options(parser: argparse.ArgumentParser) -> None:
    """``--resolution``, ``--min-bucket``, ``--max-bucket``, ``--step``, ``--no-upscale`` and ``--train-config``:
    kohya's bucket options, each over the train config's, over the dataset TOML's, over kohya's default."""
    parser.add_argument(
        "--resolution",
        default=None,
        metavar="R",
        help=f"training resolution: N or W,H (default: {DATASET_DEFAULT} {KOHYA_RESOLUTION})",
    )
    parser.add_argument(
        "--min-bucket",
        type=int,
        default=None,
        metavar="PX",
        help=f"kohya --min_bucket_reso (default: {DATASET_DEFAULT} {KOHYA_MIN_BUCKET})",
    )
    parser.add_argument(
        "--max-bucket",
        type=int,
        default=None,
        metavar="PX",
        help=f"kohya --max_bucket_reso (default: {DATASET_DEFAULT} {KOHYA_MAX_BUCKET})",
    )
    parser.add_argument(
        "--step",
        type=int,
        default=None,
        metavar="PX",
        help=f"kohya --bucket_reso_steps (default: {DATASET_DEFAULT} {KOHYA_STEP})",
    )
    parser.add_argument(
        "--no-upscale",
        action="store_true",
        default=None,
        help="kohya --bucket_no_upscale: buckets follow the images (default: the dataset's, else off)",
    )
    add_train_config(parser)


def scan_config(args: argparse.Namespace, **overrides: object) -> ScanConfig:
    """The ``ScanConfig`` of the options a command was given (those it does not have are left unset). Raises
    pydantic's ``ValidationError`` (``config_error_message`` words it)."""
    from curator.scan.config import ScanConfig

    values = {
        "caption_extension": getattr(args, "caption_extension", None),
        "workers": getattr(args, "workers", None),
        "pixel_limit": getattr(args, "pixel_limit", None),
        "resolution": getattr(args, "resolution", None),
        "min_bucket": getattr(args, "min_bucket", None),
        "max_bucket": getattr(args, "max_bucket", None),
        "bucket_step": getattr(args, "step", None),
        "no_upscale": getattr(args, "no_upscale", None),
        "train_config": getattr(args, "train_config", None),
        **overrides,
    }
    return ScanConfig.model_validate({k: v for k, v in values.items() if v is not None})
