"""``kiln buckets DATASET``: kohya's aspect-ratio buckets for a dataset, and the step math before training.

Registration is light; the dataset engine, rich and the bucket logic are imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curator.cli.options import (
    NUM_PROCESSES_HELP,
    OPTION_SPELLING,
    add_bucket_options,
    add_caption_extension,
    add_dataset,
    add_json,
    add_limit,
    add_no_progress,
    scan_config,
)
from curator.textsafe import dumps_json

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from curator.buckets import BucketReport, StepMath
    from curator.dataset import Dataset
    from curator.scan.config import ScanConfig


DEFAULT_BATCH_SIZE = 1  # curator.buckets.DEFAULT_BATCH_SIZE (kohya's, kiln train's), without importing it here
DEFAULT_EPOCHS = 10  # curator.buckets.DEFAULT_EPOCHS
LIST_LIMIT = 20  # rows shown per problem list unless --all


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``kiln buckets``."""
    parser = subparsers.add_parser(
        "buckets",
        help="kohya aspect-ratio buckets and the step math for a dataset",
        description=(
            "Show how kohya sd-scripts will bucket the dataset: the bucket list, each image's bucket, resize and "
            "centre crop, images that get upscaled, buckets holding only one or two images, and the steps per "
            "epoch for a batch size (kohya forms batches per bucket). Options not given come from --train-config "
            "(a kiln train config), else from the dataset TOML when DATASET is one, else kohya's defaults "
            "(resolution 512, buckets 256-1024 px, step 64, batch size 1): the same settings kiln check, the "
            "bucket: query and the TUI use. Writes nothing in the dataset except its .kiln/ index."
        ),
    )
    add_dataset(parser)
    add_bucket_options(parser)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help=f"train batch size (default: --train-config's, the dataset TOML's, else {DEFAULT_BATCH_SIZE}: kohya's "
        "and kiln train's)",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--epochs", type=int, default=None, metavar="N",
        help=f"epochs (default: --train-config's max_epochs or max_steps, else {DEFAULT_EPOCHS})",
    )
    group.add_argument(
        "--max-steps", type=int, default=None, metavar="N",
        help="target steps: prints the epochs it takes (default: --train-config's max_steps, else --epochs)",
    )
    parser.add_argument(
        "--grad-accum", type=int, default=None, metavar="N",
        help="gradient accumulation steps (default: --train-config's, else 1)",
    )
    parser.add_argument(
        "--num-processes",
        type=int,
        default=1,
        metavar="N",
        help=NUM_PROCESSES_HELP,
    )
    add_caption_extension(parser)
    parser.add_argument(
        "--images", action="store_true", help="also list every image with its bucket, resize and crop"
    )
    add_limit(parser, LIST_LIMIT, "upscaled images and thin buckets listed")
    parser.add_argument("--all", action="store_const", const=0, dest="limit", help=argparse.SUPPRESS)  # = --limit 0
    add_json(parser)
    add_no_progress(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``kiln buckets``; returns the exit code.

    The settings are checked against the layout (which only reads folder names) before the dataset is
    opened, so a typo in an option creates nothing, not even ``.kiln/``. They are chosen as every command
    chooses them (``curator.dataset.choose_buckets``): the options given, over ``--train-config``'s, over the
    dataset TOML's, over kohya's defaults.
    """
    from curator.buckets import (
        DEFAULT_BATCH_SIZE,
        DEFAULT_EPOCHS,
        TrainConfigBuckets,
        bucket_error_message,
        bucket_report,
        read_train_config_buckets,
        step_math,
    )
    from curator.dataset import choose_buckets
    from curator.layout import LayoutError, load_layout

    path: Path = args.dataset
    if not path.exists():
        print(f"kiln buckets: {path}: no such dataset folder or TOML file", file=sys.stderr)
        return 1
    try:
        layout = load_layout(path, args.caption_extension)
        config = scan_config(args)
        choice = choose_buckets(layout, config)
        train: TrainConfigBuckets | None = (
            read_train_config_buckets(args.train_config) if args.train_config is not None else None
        )
    except (OSError, ValueError) as exc:
        message = bucket_error_message(exc, OPTION_SPELLING) if not isinstance(exc, LayoutError) else str(exc)
        print(f"kiln buckets: {message}", file=sys.stderr)
        return 1
    if choice.settings is None:
        print(f"kiln buckets: {choice.error}", file=sys.stderr)
        return 1
    settings = choice.settings

    toml = dict(layout.toml_settings or {})
    batch_size = _first(args.batch_size, train.batch_size if train else None, toml.get("batch_size"),
                        DEFAULT_BATCH_SIZE)
    accumulation = _first(args.grad_accum, train.gradient_accumulation if train else None, 1)
    max_steps = args.max_steps
    epochs = args.epochs
    if epochs is None and max_steps is None:
        epochs = train.max_epochs if train else None
        max_steps = train.max_steps if train and epochs is None else None
        if epochs is None and max_steps is None:
            epochs = DEFAULT_EPOCHS

    def steps_for(counts: BucketReport | list[int]) -> StepMath:
        return step_math(
            counts,
            batch_size=batch_size,
            epochs=epochs,
            max_steps=max_steps,
            gradient_accumulation=accumulation,
            num_processes=args.num_processes,
        )

    try:  # check the numbers before the (possibly long) scan
        steps_for([])
    except ValueError as exc:
        print(f"kiln buckets: {_option_names(str(exc))}", file=sys.stderr)
        return 1
    notes = [f"bucket settings: {choice.source}", *settings.notes]
    if toml.get("enable_bucket") is False:
        notes.append(
            "the dataset TOML sets enable_bucket = false: kohya will not bucket; shown is what it would do"
        )
    if train is not None and not train.enable_bucket:
        notes.append(f"{train.source} sets enable_bucket = false: the trainer crops every image to the resolution")

    try:
        dataset = _open_dataset(path, config)
    except (OSError, ValueError) as exc:
        print(f"kiln buckets: {exc}", file=sys.stderr)
        return 1
    try:
        dataset.scan(progress=False if args.json or args.no_progress else None)
        records = dataset.images()
    except (OSError, ValueError) as exc:
        print(f"kiln buckets: {path}: {exc}", file=sys.stderr)
        return 1
    finally:
        dataset.close()

    report = bucket_report(records, settings)
    skipped = report.unreadable
    if not report.images:
        print(f"kiln buckets: {path}: no readable images to bucket", file=sys.stderr)
        return 1

    try:
        steps = steps_for(report)
    except ValueError as exc:
        print(f"kiln buckets: {_option_names(str(exc))}", file=sys.stderr)
        return 1

    if args.json:
        payload = report_to_json(report, steps, skipped=skipped, notes=notes)
        sys.stdout.write(dumps_json(payload))
        sys.stdout.write("\n")
    else:
        print_report(
            report,
            steps,
            root=dataset.root,
            skipped=skipped,
            notes=notes,
            show_images=args.images,
            limit=args.limit,
        )
    return 0


def _open_dataset(path: Path, config: ScanConfig) -> Dataset:
    from curator.dataset import Dataset

    return Dataset.open(path, config=config)


def _first(*values: Any) -> Any:  # noqa: ANN401 - option, config or raw TOML values, checked by step_math
    """The first value that is set (the option given, the train config's, the dataset TOML's, the default)."""
    return next(v for v in values if v is not None)


_OPTION_NAMES = {
    "min_bucket": "--min-bucket",
    "max_bucket": "--max-bucket",
    "batch_size": "--batch-size",
    "gradient_accumulation": "--grad-accum",
    "num_processes": "--num-processes",
    "max_steps": "--max-steps",
    "epochs": "--epochs",
}


def _option_names(message: str) -> str:
    """Spell the API's field names as this command's options."""
    import re

    pattern = r"(?<![-\w])(" + "|".join(_OPTION_NAMES) + r")\b"
    return re.sub(pattern, lambda m: _OPTION_NAMES[m.group(1)], message)


# --------------------------------------------------------------------------------------------------- JSON


def report_to_json(
    report: BucketReport, steps: StepMath, *, skipped: list[str] | None = None, notes: list[str] | None = None
) -> dict[str, Any]:
    """The ``--json`` document: buckets, per-image assignment, step math, and the problem lists."""
    s = report.settings
    return {
        "settings": {
            "resolution": list(s.resolution),
            "min_bucket": s.min_bucket,
            "max_bucket": s.max_bucket,
            "step": s.step,
            "no_upscale": s.no_upscale,
        },
        "buckets": [
            {
                "width": b.width,
                "height": b.height,
                "images": b.images,
                "with_repeats": b.with_repeats,
                "train_images": b.train_images,
                "reg_images": b.reg_images,
                "share": round(b.share, 6),
            }
            for b in report.buckets
        ],
        "images": [
            {
                "path": i.path,
                "bucket": list(i.assignment.bucket),
                "size": [i.width, i.height],
                "resized": list(i.assignment.resized),
                "crop": list(i.assignment.crop),
                "ar_error": round(i.assignment.ar_error, 6) if i.assignment.usable else None,
                "upscaled": i.assignment.upscaled,
                "repeats": i.repeats,
                "is_reg": i.is_reg,
            }
            for i in report.images
        ],
        "steps": {
            **steps.to_dict(),
            "images": sum(b.images for b in report.buckets),
            "train_with_repeats": report.train_with_repeats,
            "reg_with_repeats": report.reg_with_repeats,
            "reg_used_with_repeats": report.reg_used_with_repeats,
        },
        "upscaled": [i.path for i in report.upscaled],
        "thin_buckets": [[b.width, b.height] for b in report.thin],
        "unusable": [i.path for i in report.unusable],
        "reg_unused": list(report.reg_unused),
        "skipped_unreadable": list(skipped or []),
        "mean_ar_error": round(report.mean_ar_error, 6),
        "notes": list(notes or []),
    }


# --------------------------------------------------------------------------------------------------- tables


def share_bar(share: float, width: int = 20) -> str:
    """A bar of ``width`` cells for a 0..1 fraction, in eighth-cell steps."""
    eighths = round(max(0.0, min(1.0, share)) * width * 8)
    full, rest = divmod(eighths, 8)
    bar = "\u2588" * full + ("" if rest == 0 else " \u258f\u258e\u258d\u258c\u258b\u258a\u2589"[rest])
    return bar.ljust(width)


def _aspect_label(width: int, height: int) -> str:
    from math import gcd

    if not width or not height:
        return "-"
    g = gcd(width, height)
    return (
        f"{width // g}:{height // g}" if width // g <= 32 and height // g <= 32 else f"{width / height:.2f}"
    )


def print_report(
    report: BucketReport,
    steps: StepMath,
    *,
    root: Path,
    skipped: list[str],
    notes: list[str],
    show_images: bool = False,
    limit: int = LIST_LIMIT,
    console: Console | None = None,
) -> None:
    """The human report: settings, bucket table with share bars, problem lists, step math."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from curator.textsafe import cli_console, printable

    console = console or cli_console()
    s = report.settings
    mode = (
        "no upscale (buckets follow the images)"
        if s.no_upscale
        else f"buckets {s.min_bucket}-{s.max_bucket} px"
    )
    head = Text()
    head.append("Buckets for ", style="bold")
    head.append(printable(str(root)), style="bold cyan")
    head.append(f"\nresolution {s.resolution[0]}x{s.resolution[1]}, {mode}, step {s.step}", style="dim")
    console.print(head)
    for note in notes:
        console.print(Text(f"note: {note}", style="yellow"))

    table = Table(box=box.SIMPLE_HEAD, show_footer=True, pad_edge=False)
    total_images = sum(b.images for b in report.buckets)
    table.add_column("Bucket", footer=f"{len(report.buckets)} buckets", no_wrap=True)
    table.add_column("Aspect", justify="right")
    table.add_column("Images", justify="right", footer=str(total_images))
    has_reg = any(b.reg_images for b in report.buckets)
    if has_reg:
        table.add_column("Reg", justify="right", footer=str(sum(b.reg_images for b in report.buckets)))
    table.add_column("x Repeats", justify="right", footer=str(report.total_with_repeats))
    table.add_column(f"Batches @{steps.global_batch}", justify="right", footer=str(steps.batches_per_epoch))
    table.add_column("Share", footer="100%" if report.buckets else "", no_wrap=True)
    thin = {b.bucket for b in report.thin}
    bar_width = max(6, min(24, console.width - (74 if has_reg else 68)))
    top_share = max((b.share for b in report.buckets), default=0.0) or 1.0
    for b in report.buckets:
        batches = steps.batches_for(b.with_repeats)
        share = Text(share_bar(b.share / top_share, bar_width), style="green")
        share.append(f" {b.share * 100:5.1f}%")
        cells: list[Any] = [
            f"{b.width}x{b.height}",
            _aspect_label(b.width, b.height),
            Text(str(b.images), style="yellow" if b.bucket in thin else ""),
        ]
        if has_reg:
            cells.append(str(b.reg_images))
        table.add_row(*cells, str(b.with_repeats), str(batches), share)
    console.print(table)

    listed = limit or None
    if report.upscaled:
        up = Table(
            title=f"{len(report.upscaled)} image(s) will be upscaled",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        up.add_column("Image")
        up.add_column("Size", justify="right")
        up.add_column("Resized", justify="right")
        up.add_column("Scale", justify="right")
        ordered = sorted(report.upscaled, key=lambda i: i.assignment.resized[0] / i.width, reverse=True)
        for image in ordered[:listed]:
            a = image.assignment
            up.add_row(
                Text(printable(image.path)),
                f"{image.width}x{image.height}",
                f"{a.resized[0]}x{a.resized[1]}",
                Text(f"x{a.resized[0] / image.width:.2f}", style="yellow"),
            )
        console.print(up)
        if listed is not None and len(ordered) > listed:
            console.print(Text(f"  ... and {len(ordered) - listed} more (--limit 0 lists them all)", style="dim"))

    if report.thin:
        console.print(
            Text(
                f"{len(report.thin)} thin bucket(s): one or two images, every batch repeats them",
                style="bold yellow",
            )
        )
        members: dict[tuple[int, int], list[str]] = {}
        for image in report.images:
            if image.assignment.bucket in thin:
                members.setdefault(image.assignment.bucket, []).append(image.path)
        for b in report.thin[:listed]:
            line = Text(f"  {b.width}x{b.height}: ")
            line.append(printable(", ".join(members.get(b.bucket, []))))
            console.print(line)
        if listed is not None and len(report.thin) > listed:
            console.print(Text(f"  ... and {len(report.thin) - listed} more (--limit 0 lists them all)", style="dim"))

    if report.unusable:
        console.print(
            Text(
                f"{len(report.unusable)} image(s) too small or too thin for --no-upscale (kohya fails "
                f"on them): ",
                style="bold red",
            )
        )
        for image in report.unusable:
            console.print(Text(f"  {printable(image.path)} ({image.width}x{image.height})"))
    if skipped:
        console.print(
            Text(f"{len(skipped)} unreadable image(s) skipped; `kiln check` lists them", style="red")
        )

    if show_images:
        detail = Table(title="Images", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for column in ("Image", "Size", "Bucket", "Resized", "Crop L,T", "AR err", "Repeats"):
            detail.add_column(column, justify="left" if column == "Image" else "right")
        for image in sorted(report.images, key=lambda i: i.path):
            a = image.assignment
            err = f"{a.ar_error:+.3f}" if a.usable else "-"
            detail.add_row(
                Text(printable(image.path)),
                f"{image.width}x{image.height}",
                f"{a.bucket[0]}x{a.bucket[1]}",
                f"{a.resized[0]}x{a.resized[1]}",
                f"{a.crop[0]},{a.crop[1]}",
                err,
                str(image.repeats),
            )
        console.print(detail)

    console.print(_steps_table(report, steps))


def _steps_table(report: BucketReport, steps: StepMath) -> Table:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title="Step math (kohya)", title_justify="left", box=box.SIMPLE, show_header=False, pad_edge=False
    )
    table.add_column(style="dim")
    table.add_column(justify="right")
    table.add_column(style="dim")
    train_images = sum(b.train_images for b in report.buckets)
    reg_images = sum(b.reg_images for b in report.buckets)
    table.add_row("images", str(train_images + reg_images), f"{reg_images} reg" if reg_images else "")
    table.add_row("images x repeats", str(report.train_with_repeats), "train")
    if report.reg_with_repeats or report.reg_used_with_repeats:
        detail = f"reg, matched to train by kohya (folders: {report.reg_with_repeats})"
        if report.reg_unused:
            detail += f"; {len(report.reg_unused)} unused"
        table.add_row("", str(report.reg_used_with_repeats), detail)
    table.add_row("batch size", str(steps.batch_size), "per process" if steps.num_processes > 1 else "")
    if steps.num_processes > 1:
        table.add_row("processes", str(steps.num_processes), f"{steps.global_batch} samples per batch")
    partial = (
        f"per bucket; {steps.partial_batches} bucket(s) end in a short batch"
        if steps.partial_batches
        else "per bucket"
    )
    table.add_row("batches per epoch", str(steps.batches_per_epoch), partial)
    if steps.gradient_accumulation > 1:
        table.add_row("gradient accumulation", str(steps.gradient_accumulation), "")
    table.add_row("steps per epoch", Text(str(steps.steps_per_epoch), style="bold"), "")
    if steps.epochs is not None:
        table.add_row("epochs", str(steps.epochs), "")
    if steps.total_steps is not None:
        table.add_row("total steps", Text(str(steps.total_steps), style="bold green"), "")
    return table
