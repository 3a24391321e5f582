"""`kiln runs`, `kiln watch`, `kiln stop`, `kiln resume`: list, watch and control training runs.

Only argparse at import time; everything else is imported when a command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from train.image_losses import RankedImage
    from train.rundir import Event
    from train.runs.state import RunInfo

RUN_HELP = "a run directory, or the name of a run `kiln runs` lists"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "runs", help="list training runs (state, progress, loss, outputs)",
        description="List training runs: those under ./runs, those in DIR, and every run kiln launched or saw "
                    "(a registry in the user data dir). A run whose process died without finishing is 'dead'.",
    )
    p.add_argument("dirs", nargs="*", type=Path, metavar="DIR",
                   help="a run directory or a folder of runs (default: ./runs and the known runs)")
    p.add_argument("--json", action="store_true", help="print JSON: [{name, dir, state, step, total_steps, loss, "
                                                        "outputs, ...}]")
    ranking = p.add_mutually_exclusive_group()
    ranking.add_argument("--hardest", type=int, nargs="?", const=20, metavar="N",
                         help="for one RUN: the N images the model fits worst (loss x typical at their timesteps), "
                              "with their captions; mislabelled, broken or odd-one-out images come first (default N: 20)")
    ranking.add_argument("--easiest", type=int, nargs="?", const=20, metavar="N",
                         help="for one RUN: the N images the model fits best (default N: 20)")
    p.set_defaults(func=_runs)

    p = subparsers.add_parser(
        "watch", help="show a run live (progress, loss chart, saves); quitting never touches the run",
        description="Attach the live display to a running or finished run by reading its directory. Ctrl-C "
                    "leaves the display; the run goes on. The display ends by itself when the run ends.",
    )
    p.add_argument("run", help=RUN_HELP)
    p.add_argument("--once", action="store_true", help="print the run's current state once and exit")
    p.add_argument("--plain", action="store_true", help="log lines instead of the live display")
    p.set_defaults(func=_watch)

    p = subparsers.add_parser(
        "stop", help="ask a run to save and stop at its next step",
        description="Ask a running trainer to stop gracefully: it saves a LoRA and its resumable state, then "
                    "exits. Continue later with `kiln resume RUN`.",
    )
    p.add_argument("run", help=RUN_HELP)
    p.add_argument("--wait", action="store_true", help="wait until the run has stopped")
    p.add_argument("--save-now", action="store_true",
                   help="do not stop: save a LoRA and resumable state at the next step and keep training")
    p.set_defaults(func=_stop)

    p = subparsers.add_parser(
        "resume", help="continue a stopped run in the background",
        description="Continue a stopped (or dead) run from its saved state, detached: "
                    "`kiln train --resume RUN_DIR --detach`.",
    )
    p.add_argument("run", help=RUN_HELP)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config key for the rest of the run; the value is a TOML literal, e.g. "
                   "train.max_steps=3000 (repeatable; default: none)")
    p.add_argument("--force", action="store_true",
                   help="accept a learning-rate (or LR schedule) change, written to the run log (refused without --force)")
    p.set_defaults(func=_resume)


def _err(command: str, message: str) -> int:
    from curator.textsafe import printable

    for line in str(message).splitlines():
        print(f"kiln {command}: {printable(line)}", file=sys.stderr)
    return 1


def _resolve(command: str, text: str) -> Path | None:
    from train.runs.discover import RunNotFound, resolve_run

    try:
        return resolve_run(text)
    except RunNotFound as exc:
        _err(command, str(exc))
        return None


# ------------------------------------------------------------------------------------------------------ runs
def _runs(args: argparse.Namespace) -> int:
    import json

    from train.runs.discover import find_runs, registered_runs, remember_run

    if args.hardest is not None or args.easiest is not None:
        return _ranking(args)
    for d in args.dirs:
        if not d.exists():
            return _err("runs", f"{d}: no such folder")
    runs = find_runs(list(args.dirs) or None)
    if args.dirs:  # runs found by hand become known everywhere
        known = registered_runs()
        for run in runs:
            if run.dir not in known:
                remember_run(run.dir)
    if args.json:
        json.dump([r.to_json() for r in runs], sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return 0
    if not runs:
        where = ", ".join(str(d) for d in args.dirs) or "./runs or the registry"
        print(f"no runs found in {where}. Start one with `kiln train CONFIG --detach`.", file=sys.stderr)
        return 0
    from curator.textsafe import cli_console

    console = cli_console()
    console.print(runs_table(runs))
    for run in runs:
        if run.state == "dead":
            print_dead(console, run)
    return 0


def _ranking(args: argparse.Namespace) -> int:
    """``kiln runs RUN --hardest / --easiest``: the per-image ranking of train/image_losses.py."""
    import json

    from train.image_losses import IMAGE_LOSSES, rank_images, read_image_losses, run_dataset_root

    if len(args.dirs) != 1:
        return _err("runs", "--hardest / --easiest take one RUN (a run directory or a run name)")
    run_dir = _resolve("runs", str(args.dirs[0]))
    if run_dir is None:
        return 1
    data = read_image_losses(run_dir)
    if data is None:
        return _err("runs", f"{run_dir}: no {IMAGE_LOSSES} yet; the trainer writes it at each epoch end and when "
                            "the run ends")
    count = args.hardest if args.hardest is not None else args.easiest
    if count < 1:
        return _err("runs", f"--{'hardest' if args.hardest is not None else 'easiest'}: {count} is not allowed: "
                            "must be >= 1")
    ranked = rank_images(data, easiest=args.easiest is not None)
    root = run_dataset_root(run_dir)
    if args.json:
        json.dump([{"rank": r.rank, "score": round(r.score, 4), "draws": r.draws, "path": r.path,
                    "abs_path": str(root / r.path) if root else None, "caption": r.caption} for r in ranked[:count]],
                  sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    from rich.console import Console

    console = Console(highlight=False)
    console.print(ranking_table(ranked[:count], step=int(data.get("step", 0)), root=root,
                                hardest=args.hardest is not None, total=len(ranked)))
    return 0


def ranking_table(ranked: list[RankedImage], *, step: int, root: Path | None, hardest: bool, total: int) -> Table:
    """The ``--hardest`` / ``--easiest`` table (file-derived text shown as data, never markup)."""
    from rich.table import Table
    from rich.text import Text

    from curator.textsafe import printable

    title = (f"{'hardest' if hardest else 'easiest'} {len(ranked)} of {total} images at step {step}"
             + (f" — {printable(str(root))}" if root else ""))
    table = Table(box=None, header_style="bold", pad_edge=False, title=Text(title), title_justify="left")
    for col in ("RANK", "LOSS", "DRAWS", "IMAGE", "CAPTION"):
        table.add_column(col, no_wrap=col not in ("CAPTION",), overflow="fold" if col == "CAPTION" else "ellipsis",
                         justify="right" if col in ("RANK", "LOSS", "DRAWS") else "left")
    for row in ranked:
        caption = printable(row.caption)
        table.add_row(str(row.rank), Text(f"x{row.score:.2f}", style="bold red" if row.score >= 1.25 and hardest
                                          else ""),
                      str(row.draws), Text(printable(row.path)),
                      Text(caption if len(caption) <= 120 else caption[:117] + "..."))
    return table


def runs_table(runs: list[RunInfo]) -> Table:
    """The `kiln runs` table (a rich Table)."""
    import time

    from rich.table import Table
    from rich.text import Text

    from curator.textsafe import printable
    from train.runs.live import STATE_STYLES
    from train.runs.track import fmt_loss

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("NAME", "STATE", "PROGRESS", "STARTED", "LOSS", "OUTPUTS"):
        table.add_column(col, no_wrap=col != "OUTPUTS", overflow="fold")
    for run in runs:
        progress = f"{run.step}/{run.total_steps}" if run.total_steps else (str(run.step) if run.step else "—")
        if run.fraction is not None:
            progress += f" {100 * run.fraction:.0f}%"
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.started_at)) if run.started_at else "—"
        state = run.state + (" (stop requested)" if run.stop_requested and run.active else "")
        names = [Path(p).name for p in run.outputs]
        outputs = ", ".join(names[-3:]) + (f" (+{len(names) - 3})" if len(names) > 3 else "") if names else "—"
        table.add_row(Text(printable(run.name), style="bold"), Text(state, style=STATE_STYLES.get(run.state, "")),
                      progress, started, fmt_loss(run.loss), Text(printable(outputs)))
    return table


def print_dead(console: Console, run: RunInfo) -> None:
    from rich.text import Text

    from curator.textsafe import printable

    console.print()
    console.print(Text(f"{printable(run.name)} is dead: {printable(run.message)}", style="bold red"))
    console.print(Text(f"  {printable(str(run.dir))}", style="grey50"))
    for line in run.log_tail[-10:]:
        console.print(Text("  " + line, style="red"))
    if run.resumable:
        console.print(Text(f"  continue it: kiln resume {printable(str(run.dir))}", style="grey62"))


# ------------------------------------------------------------------------------------------------------ watch
def _watch(args: argparse.Namespace) -> int:
    run_dir = _resolve("watch", args.run)
    if run_dir is None:
        return 1
    from rich.console import Console

    from train.runs.live import LiveDisplay, follow, render_run
    from train.runs.state import read_run
    from train.runs.tail import EventTail
    from train.runs.track import RunTracker

    console = Console()
    if args.once:
        tracker = RunTracker()
        tracker.feed_all(EventTail(run_dir / "events.jsonl").read_new())
        info = read_run(run_dir)
        console.print(render_run(tracker, width=min(console.width, 140), state=info.state, info=info))
        return 0 if info.state not in ("dead", "failed") else 1
    plain = args.plain or not console.is_terminal
    display: _PlainWatch | LiveDisplay = _PlainWatch() if plain else LiveDisplay(console=console)
    try:
        info = follow(run_dir, display)
    except KeyboardInterrupt:
        display.close()
        print(f"stopped watching; the run goes on (kiln watch {run_dir})", file=sys.stderr)
        return 0
    display.close()
    if plain and info.state == "dead":
        print_dead(console, info)
    return 0 if info.state not in ("dead", "failed") else 1


class _PlainWatch:
    """`kiln watch` into a pipe or log: one line per event (step lines at most every 10 s)."""

    def __init__(self) -> None:
        from train.display import PlainDisplay

        self.plain = PlainDisplay(stream=sys.stdout, interval=10.0)

    def __call__(self, event: Event) -> None:
        try:
            self.plain(event)
        except (KeyError, TypeError, ValueError):
            pass

    def close(self) -> None:
        sys.stdout.flush()


# ------------------------------------------------------------------------------------------------------ control
def _stop(args: argparse.Namespace) -> int:
    run_dir = _resolve("stop", args.run)
    if run_dir is None:
        return 1
    from train.runs.control import ControlError, save_now, stop_run, wait_until_inactive

    try:
        info = save_now(run_dir) if args.save_now else stop_run(run_dir)
    except ControlError as exc:
        return _err("stop", str(exc))
    if args.save_now:
        print(f"asked {info.name} to save at its next step (step {info.step + 1}); it keeps training")
        return 0
    print(f"asked {info.name} to stop: it saves its LoRA and state at its next step, then exits")
    if not args.wait:
        print(f"follow it: kiln watch {run_dir}")
        return 0
    try:
        final = wait_until_inactive(run_dir)
    except KeyboardInterrupt:
        print("stopped waiting; the stop request stands", file=sys.stderr)
        return 0
    print(f"{final.name} is {final.state} at step {final.step}")
    return 0 if final.state in ("stopped", "finished") else 1


def _resume(args: argparse.Namespace) -> int:
    run_dir = _resolve("resume", args.run)
    if run_dir is None:
        return 1
    from train.runs.control import ControlError, resume_run

    try:
        launched = resume_run(run_dir, args.overrides, force=args.force)
    except ControlError as exc:
        return _err("resume", str(exc))
    sys.stdout.write(launched.output)
    return 0
