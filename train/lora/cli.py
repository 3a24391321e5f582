"""`kiln lora ...`: info, extract, resize, merge, grid, presets (argparse only at import time; each command
imports its implementation when it runs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from train.prompts import SAMPLER_NAMES

EPILOG = """\
the seed workflows (docs/LORA_TOOLS.md):
  kiln lora extract --base sdxl.safetensors --tuned finetune.safetensors --dim 128 --te --min-diff 1e-6 \\
      --out extracted.safetensors
  kiln lora resize extracted.safetensors --rank 16 --out final.safetensors
  kiln lora grid --base sdxl.safetensors --base animagine.safetensors --lora runs/mylora \\
      --strengths 0.6,0.8,1.0 --prompts prompts.txt --out grid.png
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "lora", help="inspect, extract, resize, merge and test LoRA files",
        description="Work with LoRA files: inspect, extract from a fine-tune, resize, merge, test in a grid.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="lora_command", metavar="COMMAND")
    parser.set_defaults(func=lambda args: _usage(parser))

    info = commands.add_parser("info", help="what a LoRA file is: format, architecture, blocks, ranks, metadata, "
                               "hashes", description="Inspect a LoRA (kohya, LyCORIS or PEFT) without loading a model.")
    info.add_argument("file", type=Path, metavar="FILE", help="LoRA .safetensors (or a PEFT adapter folder)")
    info.add_argument("--json", action="store_true", help="print everything as JSON")
    info.add_argument("--modules", action="store_true", help="list every module (name, type, rank, alpha, block)")
    info.add_argument("--top-tags", type=int, default=20, metavar="N", help="how many of the most frequent tags")
    info.add_argument("--no-hashes", action="store_true", help="skip hashing the file")
    _common(info, device=False, force=False)
    info.set_defaults(func=_run_info)

    extract = commands.add_parser("extract", help="a LoRA from the difference of a fine-tune and its base (SVD)",
                                  description="Extract a kohya LoRA from (base, fine-tuned) models by SVD.")
    extract.add_argument("--base", type=Path, required=True, help="the original model (single file or diffusers "
                         "folder)")
    extract.add_argument("--tuned", type=Path, required=True, help="the fine-tuned model")
    extract.add_argument("--dim", type=int, required=True, help="rank of the LoRA (linear and 1x1-conv layers)")
    extract.add_argument("--conv-dim", type=int, help="also extract the 3x3 convs (LoCon) at this rank")
    extract.add_argument("--clamp-quantile", type=float, default=0.99,
                         help="clamp outliers of the factors at this quantile (kohya's default 0.99; 1 = no clamp)")
    extract.add_argument("--min-diff", type=float, default=0.01, help="a text encoder whose weights changed by no "
                         "more than this is left out (kohya's default 0.01; the seed guide uses 1e-6)")
    extract.add_argument("--te", action="store_true", help="extract the text encoder(s) too (when they changed)")
    extract.add_argument("--out", type=Path, required=True, help="output .safetensors")
    extract.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="fp16", help="saved precision")
    _common(extract)
    extract.set_defaults(func=_run_extract)

    resize = commands.add_parser("resize", help="a LoRA at a lower rank (SVD), with the share of the norm kept",
                                 description="Resize a LoRA (kohya's resize_lora): fixed or dynamic rank.")
    resize.add_argument("file", type=Path, metavar="FILE", help="LoRA .safetensors")
    resize.add_argument("--rank", type=int, help="new rank (with --dynamic: the largest rank)")
    resize.add_argument("--conv-rank", type=int, help="new rank of 3x3 convs (default: --rank)")
    resize.add_argument("--dynamic", choices=["sv_ratio", "sv_fro", "sv_cumulative"], help="choose each module's "
                        "rank from its singular values")
    resize.add_argument("--dynamic-param", type=float, help="sv_ratio: largest/smallest kept singular value (e.g. 8);"
                        " sv_fro, sv_cumulative: share to keep (e.g. 0.99)")
    resize.add_argument("--out", type=Path, required=True, help="output .safetensors")
    resize.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], help="saved precision (default: as the input)")
    resize.add_argument("--summary", action="store_true", help="print the totals only, not every module")
    _common(resize)
    resize.set_defaults(func=_run_resize)

    merge = commands.add_parser("merge", help="LoRAs into a checkpoint (--into), or into one LoRA",
                                description="Merge LoRAs into a checkpoint at given strengths, or into one LoRA.")
    merge.add_argument("loras", nargs="+", metavar="LORA[:STRENGTH]", help="LoRA files, each with a strength "
                       "(default 1), e.g. style.safetensors:0.8")
    merge.add_argument("--into", type=Path, metavar="CKPT", help="merge into this checkpoint (single file or "
                       "diffusers folder); without it the LoRAs merge into one LoRA")
    merge.add_argument("--out", type=Path, required=True, help="output .safetensors")
    merge.add_argument("--svd-rank", type=int, help="LoRA + LoRA: re-factorise the sum at this rank (default: "
                       "concatenate the ranks, exact)")
    merge.add_argument("--svd-conv-rank", type=int, help="rank of 3x3 convs with --svd-rank")
    merge.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], help="saved precision (default: as the input)")
    _common(merge)
    merge.set_defaults(func=_run_merge)

    grid = commands.add_parser("grid", help="test LoRAs: prompts x strengths x epochs x checkpoints, one seed",
                               description="Render a labelled contact sheet of a LoRA's saved epochs at several "
                               "strengths on one or more base checkpoints.")
    grid.add_argument("--base", type=Path, action="append", required=True, dest="bases", metavar="CKPT",
                      help="base checkpoint (repeat for several)")
    grid.add_argument("--lora", type=Path, nargs="+", action="extend", required=True, dest="loras",
                      metavar="RUN_OR_FILE", help="LoRA files, or a run directory (its saved epoch files)")
    grid.add_argument("--prompts", type=Path, required=True, help="prompts file: one a line, kohya's --n/--w/--h/"
                      "--d/--l/--s options allowed")
    grid.add_argument("--strengths", default="0.6,0.8,1.0", help="comma-separated (0, the control, is always added)")
    grid.add_argument("--seed", type=int, default=1234)
    grid.add_argument("--steps", type=int, default=20)
    grid.add_argument("--cfg", type=float, default=7.0, dest="cfg_scale")
    grid.add_argument("--sampler", choices=SAMPLER_NAMES, default="euler_a")
    grid.add_argument("--width", type=int)
    grid.add_argument("--height", type=int)
    grid.add_argument("--negative", default="", help="negative prompt for every image")
    grid.add_argument("--blocks", action="append", default=[], metavar="PRESET[,PRESET]",
                      help="per-block strength presets (ALL, INS, IND, INALL, MIDD, OUTD, OUTS, OUTALL, INX:0.5, "
                      "OUTX, ... or 12/17/20/26 weights); each preset adds rows")
    grid.add_argument("--thumb", type=int, default=384, help="largest side of an image in the sheet (pixels)")
    grid.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], default="auto",
                      help="auto: fp16 on a GPU, fp32 on the CPU")
    grid.add_argument("--prediction", choices=["auto", "epsilon", "v"], default="auto",
                      help="SD2 checkpoints that do not say: epsilon (512-base) or v (768-v)")
    grid.add_argument("--out", type=Path, required=True, help="contact sheet .png (cells and JSON index beside it)")
    _common(grid)
    grid.set_defaults(func=_run_grid)

    presets = commands.add_parser("presets", help="list the block ids and the --blocks presets")
    presets.set_defaults(func=_run_presets)


def _common(parser: argparse.ArgumentParser, *, device: bool = True, force: bool = True) -> None:
    parser.add_argument("--allow-pickle", action="store_true", help="allow pickled .ckpt/.pt inputs (they can run "
                        "code: trusted files only)")
    if force:
        parser.add_argument("--force", action="store_true", help="replace an existing output file")
    if device:
        parser.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu, cuda, cuda:N")
        parser.add_argument("--config-dir", type=Path, help="diffusers config folder for a single-file checkpoint "
                            "of unusual size (default: kiln's shipped SD1/SD2/SDXL configs)")
        parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 1


def _err(command: str, message: str) -> int:
    from curator.textsafe import printable

    for line in str(message).splitlines():
        print(f"kiln lora {command}: {printable(line)}", file=sys.stderr)
    return 1


def _say(message: str) -> None:
    from curator.textsafe import printable

    print(printable(message), file=sys.stderr)


def _pct(value: float) -> str:
    return f"{value * 100:.2f}%"


def _guarded(command: str, args: argparse.Namespace, run: Any) -> int:
    from train.cli import quiet_libraries
    from train.lora.errors import LoraToolError

    quiet_libraries()
    try:
        result: int = run(args)
        return result
    except LoraToolError as exc:
        return _err(command, str(exc))
    except BrokenPipeError:  # `kiln lora info X | head`: the reader has gone, stay quiet
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # disk full, permission denied while writing: the temporary file is gone already
        from curator.faults import DiskFullError

        if isinstance(exc, DiskFullError):  # names the disk and the space needed; the old output is untouched
            return _err(command, str(exc))
        return _err(command, f"{exc.strerror or exc} ({exc.filename or 'output'}); the output was not written")
    except KeyboardInterrupt:
        if command == "grid":
            return _err(command, "interrupted; the images rendered so far are kept, the sheet and its index were "
                                 "not written")
        return _err(command, "interrupted; the output was not written")


def _run_info(args: argparse.Namespace) -> int:
    def run(a: argparse.Namespace) -> int:
        from train.lora.info import inspect_lora, render, to_json

        report = inspect_lora(a.file, allow_pickle=a.allow_pickle, hashes=not a.no_hashes, top_tags=a.top_tags)
        print(to_json(report) if a.json else render(report, modules=a.modules))
        return 0

    return _guarded("info", args, run)


def _run_extract(args: argparse.Namespace) -> int:
    def run(a: argparse.Namespace) -> int:
        from train.lora.extract import extract
        from train.lora.options import ExtractOptions, validated

        opts = validated(ExtractOptions, base=a.base, tuned=a.tuned, out=a.out, dim=a.dim, conv_dim=a.conv_dim,
                         clamp_quantile=a.clamp_quantile, min_diff=a.min_diff, text_encoders=a.te, dtype=a.dtype,
                         device=a.device, force=a.force, allow_pickle=a.allow_pickle, config_dir=a.config_dir)
        report = extract(opts, progress=False if a.quiet else None, say=_say)
        parts = {"unet": 0, "te": 0}
        for m in report.modules:
            parts["unet" if m.name.startswith("lora_unet_") else "te"] += 1
        ranks = sorted({m.rank for m in report.modules})
        print(f"wrote {report.out}: {len(report.modules)} modules (UNet {parts['unet']}, text encoder "
              f"{parts['te']}), rank {'/'.join(map(str, ranks))}, Frobenius norm of the difference kept "
              f"{_pct(report.fro_kept)} ({report.seconds:.1f}s)")
        return 0

    return _guarded("extract", args, run)


def _run_resize(args: argparse.Namespace) -> int:
    def run(a: argparse.Namespace) -> int:
        from curator.textsafe import printable
        from train.lora.options import ResizeOptions, validated
        from train.lora.resize import resize

        opts = validated(ResizeOptions, file=a.file, out=a.out, rank=a.rank, conv_rank=a.conv_rank,
                         dynamic=a.dynamic, dynamic_param=a.dynamic_param, dtype=a.dtype, device=a.device,
                         force=a.force, allow_pickle=a.allow_pickle)
        report = resize(opts, config_dir=a.config_dir, progress=False if a.quiet else None, say=_say)
        if not a.summary:
            width = max((len(m.name) for m in report.modules), default=10)
            print(f"{'module'.ljust(width)}  rank        norm kept")
            for m in report.modules:
                old = "-" if m.old_rank is None else str(m.old_rank)
                extra = f"  ({m.converted})" if m.converted else ""
                print(f"{printable(m.name).ljust(width)}  {old:>4} -> {m.new_rank:<4} {_pct(m.fro_kept):>8}{extra}")
        ranks = [m.new_rank for m in report.modules]
        mean = sum(m.fro_kept for m in report.modules) / len(report.modules) if report.modules else 1.0
        print(f"wrote {report.out}: {len(report.modules)} modules resized (rank {min(ranks, default=0)}-"
              f"{max(ranks, default=0)}), {len(report.kept)} kept as they are; Frobenius norm kept: "
              f"{_pct(report.fro_kept)} in total, {_pct(mean)} per module on average ({report.seconds:.1f}s)")
        return 0

    return _guarded("resize", args, run)


def parse_lora_strength(text: str) -> tuple[Path, float]:
    """``path[:strength]``: a trailing ``:number`` is the strength (default 1). ``B`` stands for
    ``B.safetensors`` when only that exists."""
    path, strength = Path(text), 1.0
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            path, strength = Path(head), float(tail)
        except ValueError:
            pass
    if not path.exists() and path.suffix == "" and path.with_suffix(".safetensors").is_file():
        path = path.with_suffix(".safetensors")
    return path, strength


def _run_merge(args: argparse.Namespace) -> int:
    def run(a: argparse.Namespace) -> int:
        from train.lora.merge import merge_into_checkpoint, merge_loras
        from train.lora.options import MergeOptions, validated

        opts = validated(MergeOptions, loras=[parse_lora_strength(t) for t in a.loras], out=a.out, into=a.into,
                         svd_rank=a.svd_rank, svd_conv_rank=a.svd_conv_rank, dtype=a.dtype, device=a.device,
                         force=a.force, allow_pickle=a.allow_pickle, config_dir=a.config_dir)
        progress = False if a.quiet else None
        if opts.into is not None:
            report = merge_into_checkpoint(opts, progress=progress, say=_say)
            print(f"wrote {report.out}: {report.modules} modules merged into {report.layers} layers "
                  f"({report.seconds:.1f}s)")
        else:
            report = merge_loras(opts, progress=progress, say=_say)
            kept = f", Frobenius norm kept {_pct(report.fro_kept)}" if report.fro_kept is not None else ""
            print(f"wrote {report.out}: {report.modules} modules, largest rank {report.max_rank}{kept} "
                  f"({report.seconds:.1f}s)")
        return 0

    return _guarded("merge", args, run)


def split_blocks(values: list[str]) -> list[str]:
    """``--blocks`` values -> preset specs: ``OUTD,INS`` is two presets, ``1,0,0,...`` one list of weights."""
    specs: list[str] = []
    for value in values:
        items = [v.strip() for v in value.split(",") if v.strip()]
        if items and all(_is_weight(v) for v in items):
            specs.append(",".join(items))
        else:
            specs += items
    return specs


def _is_weight(text: str) -> bool:
    if text.upper() == "X":
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def _run_grid(args: argparse.Namespace) -> int:
    def run(a: argparse.Namespace) -> int:
        from train.lora.errors import LoraToolError
        from train.lora.grid import render_grid
        from train.lora.options import GridOptions, validated

        try:
            strengths = [float(s) for s in a.strengths.split(",") if s.strip()]
        except ValueError:
            raise LoraToolError(f"--strengths {a.strengths!r}: give numbers separated by commas, e.g. "
                                "0.6,0.8,1.0") from None
        opts = validated(GridOptions, bases=a.bases, loras=a.loras, prompts=a.prompts, out=a.out,
                         strengths=strengths, seed=a.seed, steps=a.steps, cfg_scale=a.cfg_scale, sampler=a.sampler,
                         width=a.width, height=a.height, negative=a.negative, blocks=split_blocks(a.blocks),
                         thumb=a.thumb, device=a.device, force=a.force, allow_pickle=a.allow_pickle,
                         config_dir=a.config_dir)
        report = render_grid(opts, prediction=a.prediction, precision=a.precision,
                             progress=False if a.quiet else None, say=_say)
        print(f"wrote {report.sheet} ({len(report.rows)} rows x {len(report.columns)} columns), "
              f"{report.images} images in {report.cells_dir}/, index {report.index}")
        return 0

    return _guarded("grid", args, run)


def _run_presets(args: argparse.Namespace) -> int:
    from train.lora.blocks import BLOCK_IDS_BY_LENGTH, PRESETS

    print("block ids by list length (LoRA Block Weight):")
    for length, ids in sorted(BLOCK_IDS_BY_LENGTH.items()):
        print(f"  {length:2d}: {','.join(ids)}")
    print("presets (X = the value after ':', 1 when none; blocks a list does not name get 0):")
    for name, values in PRESETS.items():
        print(f"  {name:7} {values}")
    return 0
