"""`kiln train`: train a LoRA from a TOML config or a preset, check a config, print a commented config,
resume a run, launch several processes, or detach into the background.

Only argparse at import time; the config, torch and the trainer are imported when the command runs.
Also runnable as ``python -m train.cli ...`` (what --detach and --num-processes launch).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curator.cli.options import ALLOW_PICKLE_HELP, NO_PROGRESS_HELP, NUM_PROCESSES_HELP

if TYPE_CHECKING:
    from train.config import TrainConfig
    from train.preflight import Report

DETACH_WAIT_S = 60.0  # how long --detach waits for the background trainer to write its trainer.pid

EPILOG = """\
examples:
  kiln train --print-config easy > my.toml      a complete, commented config to start from
  kiln train my.toml --check                    validate it (and scan the dataset) without training
  kiln train my.toml --estimate                 peak memory, time and disk from a few-step dry run
  kiln train my.toml --set train.max_steps=200  train, overriding any key
  kiln train --preset easy --set model.path=sd15.safetensors --set dataset.path=./data
  kiln train --resume runs/mylora               continue a stopped run exactly where it stopped
  kiln train my.toml --detach                   train in the background; `kiln watch` attaches
  kiln train --from-kohya cfg.toml --out my.toml   a kohya (sd-scripts TOML / bmaltais GUI JSON) config as kiln's
  kiln train --from-kohya gui.json --train         import it and train it right away
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``kiln train``, the run commands of train/runs/cli.py (runs, watch, stop, resume) and ``kiln lora``
    (train/lora/cli.py). Each registration is argparse only."""
    from train.lora.cli import register as register_lora
    from train.runs.cli import register as register_runs

    parser = subparsers.add_parser(
        "train", help="train a LoRA from a config file or preset",
        description="Train a LoRA (kohya-compatible) from a TOML config or a shipped preset.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run_train)
    register_runs(subparsers)
    register_lora(subparsers)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", type=Path, help="training config (.toml)")
    parser.add_argument("--preset", metavar="NAME", help="start from a shipped preset (see --print-config; default: "
                        "none, the config file alone)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config key; the value is a TOML literal (repeatable; default: none)")
    parser.add_argument("--print-config", metavar="NAME", nargs="?", const="default",
                        help="print a preset (or 'default') as a complete, commented config file and exit")
    parser.add_argument("--difficulty", metavar="A-I",
                        help="with --print-config: rank, alpha, steps and network type for a character of the "
                             "seed's difficulty category A-I (C+ = half a category harder), with the reasons (default: none)")
    parser.add_argument("--list-presets", action="store_true", help="list the shipped presets and exit")
    parser.add_argument("--check", action="store_true",
                        help="validate the config and scan the dataset without loading the model or training")
    parser.add_argument("--estimate", action="store_true",
                        help="a few-step dry run of the config: peak memory, time per step, total time, disk, and "
                             "how much each memory-saving option would save (one short dry run each)")
    parser.add_argument("--no-levers", action="store_true",
                        help="with --estimate: measure the config only, not the memory-saving options")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a stopped run from its state/ (default: a new run)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help=ALLOW_PICKLE_HELP)
    parser.add_argument("--num-processes", type=int, default=1, metavar="N",
                        help=NUM_PROCESSES_HELP)
    parser.add_argument("--detach", action="store_true",
                        help="train in the background (own session), logging to <run>/train.log")
    parser.add_argument("--force", action="store_true",
                        help="start a new run in an existing run directory (its events and state are replaced); "
                             "with --resume: accept a learning-rate change (both refused without --force)")
    parser.add_argument("--no-progress", action="store_true", dest="quiet", help=NO_PROGRESS_HELP)  # plain log lines
    parser.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)  # the name before issue 18
    kohya = parser.add_argument_group("kohya configs")
    kohya.add_argument("--from-kohya", type=Path, metavar="FILE",
                       help="read a kohya training config (sd-scripts --config_file TOML or bmaltais GUI .json), "
                            "print it as a kiln config and list what could not be mapped (default: train CONFIG)")
    kohya.add_argument("--out", type=Path, metavar="FILE",
                       help="with --from-kohya: write the kiln config to FILE (default: print it; --force replaces "
                            "an existing one)")
    kohya.add_argument("--train", action="store_true",
                       help="with --from-kohya: train the imported config now (also implied by --check / "
                            "--detach)")


def _err(message: str) -> int:
    from curator.textsafe import printable

    for line in str(message).splitlines():
        print(f"kiln train: {printable(line)}", file=sys.stderr)
    return 1


def quiet_libraries() -> None:
    """Keep diffusers' and transformers' internal notices out of the user's terminal (errors still show);
    set DIFFUSERS_VERBOSITY / TRANSFORMERS_VERBOSITY to see them."""
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def run_train(args: argparse.Namespace) -> int:
    from train import config as tc

    quiet_libraries()

    if args.list_presets:
        for name in tc.list_presets():
            first = (tc.PRESET_DIR / f"{name}.toml").read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
            print(f"{name:24} {first}")
        return 0
    if args.print_config:
        from train.difficulty import DifficultyError, apply_suggestion, suggest

        try:
            raw = {} if args.print_config == "default" else tc.load_preset_raw(args.print_config)
            if args.overrides:
                tc.apply_overrides(raw, args.overrides)
        except tc.ConfigError as exc:
            return _err(str(exc))
        title, why = f"preset {args.print_config}", ""
        if args.difficulty:
            model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
            sdxl = "sdxl" in args.print_config or str((model or {}).get("architecture", "")).lower() == "sdxl"
            try:
                suggestion = suggest(args.difficulty, sdxl=sdxl, base=raw)
            except DifficultyError as exc:
                return _err(f"--difficulty: {exc}")
            raw = apply_suggestion(raw, suggestion)
            title += f", difficulty {suggestion.category}"
            why = "".join(f"# {line}\n" for line in ["Character difficulty (the seed's table):",
                                                      *(f"  {r}" for r in suggestion.reasons)])
        text = tc.commented_config(raw, title=title)
        head, _, rest = text.partition("\n")
        sys.stdout.write(head + "\n" + why + rest if why else text)
        return 0
    if args.difficulty:
        return _err("--difficulty goes with --print-config (e.g. --print-config character --difficulty E)")
    if args.num_processes < 1:
        return _err(f"--num-processes: {args.num_processes} is not allowed: must be >= 1")

    imported: dict[str, Any] | None = None
    if args.from_kohya is not None:
        outcome = import_kohya_config(args)
        if isinstance(outcome, int):
            return outcome
        imported = outcome
    elif args.out is not None or args.train:
        return _err("--out and --train go with --from-kohya FILE")

    overrides = list(args.overrides)
    if args.allow_pickle:
        overrides.append("model.allow_pickle=true")
    notes: list[str] = []
    try:
        if args.resume is not None:
            run_dir = args.resume
            config_file = run_dir / "config.toml"
            if not config_file.is_file():
                return _err(f"--resume: {run_dir} is not a run directory (no config.toml)")
            cfg = tc.load_config(config_file, overrides=overrides)
        elif imported is not None and args.config is None:
            cfg = tc.validate_raw(tc.apply_overrides(imported, overrides), str(args.from_kohya))
            run_dir = cfg.run_dir
        elif args.config is None and not args.preset and not args.overrides:
            return _err("give a config file or --preset NAME (start with: kiln train --print-config easy > my.toml)")
        else:
            cfg = tc.load_config(args.config, preset=args.preset, overrides=overrides, notes=notes)
            run_dir = cfg.run_dir
    except tc.ConfigError as exc:
        return _err(str(exc))
    main_process = int(os.environ.get("RANK", "0")) == 0
    for note in notes if main_process else []:
        print(f"note: {note}", file=sys.stderr)
    if args.resume is not None:
        from curator.textsafe import printable
        from train.preflight.resume import plan_resume

        plan = plan_resume(run_dir, cfg)
        if main_process:
            for line in plan.lines() if plan.progress is not None else []:
                print(printable(line))
            sys.stdout.flush()
        refusal = plan.refusal(force=args.force)
        if refusal:
            return _err(refusal)

    if args.check:
        return check(cfg, num_processes=args.num_processes)
    if args.estimate:
        return estimate(cfg, num_processes=args.num_processes, levers=not args.no_levers)

    from train.preflight import run_preflight

    report = run_preflight(cfg, stages=("config",), num_processes=args.num_processes)  # before anything is made
    if main_process:
        _print_findings(report)
    if not report.ok:
        return 1

    if args.resume is None and (run_dir / "events.jsonl").exists() and not args.force:
        return _err(f"{run_dir} already holds a run. Continue it with --resume {run_dir}, pick another name "
                    f"(--set output.name=NEW), or start over in it with --force")
    if args.resume is None and args.force:
        for name in ("events.jsonl", "status.json"):
            (run_dir / name).unlink(missing_ok=True)
        for name in ("state", "state.old", "state.tmp"):  # no state of the old run is left to resume from
            shutil.rmtree(run_dir / name, ignore_errors=True)

    if args.detach:
        return detach(args, run_dir)
    launched_by_torch = "LOCAL_RANK" in os.environ or "RANK" in os.environ
    if not launched_by_torch:
        from train.rundir import write_pid

        write_pid(run_dir)  # the process that trains (or launches the training processes) is the run's
    if args.num_processes > 1 and not launched_by_torch:
        return launch_processes(args)
    return train_here(cfg, args.resume, quiet=args.quiet)


def import_kohya_config(args: argparse.Namespace) -> int | dict[str, Any]:
    """``--from-kohya``: print (or ``--out``: write) the imported config and list what was not mapped (an exit
    code); with ``--train`` / ``--check`` / ``--detach`` the imported raw config to go on with. ``--detach``
    keeps it in the run directory (``kohya-import.toml``) for the background process to read."""
    from curator.fsutil import atomic_write_bytes
    from curator.textsafe import printable
    from train.kohya_import import KohyaImportError, import_kohya
    from train.lora.errors import LoraToolError
    from train.lora.files import check_output

    if args.config is not None or args.preset or args.resume is not None:
        return _err("--from-kohya replaces the config file: give either a config, --preset, --resume or --from-kohya")
    try:
        imported = import_kohya(args.from_kohya)
    except KohyaImportError as exc:
        return _err(str(exc))
    goes_on = bool(args.train or args.check or args.detach or args.estimate)
    out: Path | None = args.out
    replace = bool(args.force)
    if out is None and args.detach:
        output = imported.raw.get("output", {})
        run_dir = Path(str(output.get("dir") or "runs")) / str(output.get("name") or "lora")
        out, replace = run_dir / "kohya-import.toml", True
    if out is not None:
        try:
            out = check_output(out, force=replace, suffixes=(".toml",))
        except LoraToolError as exc:
            return _err(str(exc))
    dataset_file = out.with_name(out.stem + ".dataset.toml") if out is not None else None
    if imported.dataset_toml is not None:
        if dataset_file is None and goes_on:
            return _err("train_data_dir and reg_data_dir are separate folders: kiln writes a dataset TOML for "
                        "them; give --out FILE to say where")
        shown = str(dataset_file.resolve()) if dataset_file else "<FILE.dataset.toml, written with --out FILE>"
        imported.set("dataset.path", shown, "train_data_dir + reg_data_dir (a dataset TOML kiln writes)")
    for skipped in imported.skipped:
        print(f"kiln train: not mapped: {printable(skipped.key)}: {printable(skipped.reason)}", file=sys.stderr)
    for problem in imported.problems:
        print(f"kiln train: kiln refuses: {printable(problem)}", file=sys.stderr)
    text = imported.to_toml()
    if out is None and not goes_on:
        sys.stdout.write(text)
        return 0
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if imported.dataset_toml is not None and dataset_file is not None:
            atomic_write_bytes(dataset_file, imported.dataset_toml.encode("utf-8"))
        atomic_write_bytes(out, text.encode("utf-8"))
        print(f"wrote {out} ({len(imported.skipped)} kohya key(s) not mapped)", file=sys.stderr)
    if not imported.complete:
        if goes_on:
            return _err("the kohya config names no usable model or dataset: set model.path and dataset.path "
                        "(--set model.path=... or in the written file)") if not args.overrides else imported.raw
        print("kiln train: set model.path and dataset.path in it before training", file=sys.stderr)
        return 0
    if not goes_on:
        return 0
    if args.detach and out is not None:
        args.config, args.from_kohya = out, None
    return imported.raw


def estimate(cfg: TrainConfig, num_processes: int = 1, levers: bool = True) -> int:
    """``--estimate``: the pre-flight, a dry run of a few steps and one per memory lever (train/estimate.py)."""
    from curator.textsafe import printable
    from train.estimate import EstimateError
    from train.estimate import estimate as measure

    if num_processes > 1:
        return _err("--estimate measures one process: run it without --num-processes (each process of a "
                    "multi-GPU run needs about what one process does, on its own GPU)")
    try:
        result = measure(cfg, levers=levers, progress=lambda text: print(printable(text), file=sys.stderr))
    except EstimateError as exc:
        return _err(str(exc))
    for line in result.lines():
        print(printable(line))
    return 0


def train_here(cfg: TrainConfig, resume: Path | None, quiet: bool = False) -> int:
    """Train in this process (the config-stage pre-flight has passed; the loop runs the dataset stage)."""
    from train.display import make_display
    from train.loop import train

    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        from train.runs.discover import remember_run

        remember_run(cfg.run_dir)
    display = make_display(quiet=quiet) if rank == 0 else None
    try:
        result = train(cfg, resume=resume, listeners=[display] if display else [], checked=True)
    finally:
        if display is not None:
            display.close()
    if result.reason == "error":
        return _err(result.message) if rank == 0 else 1
    if result.reason == "stopped" and rank == 0:
        print(result.message, file=sys.stderr)
    return 0


def _child_argv(args: argparse.Namespace, *, drop: tuple[str, ...]) -> list[str]:
    """The command line again, for a child process, without the options in ``drop``."""
    argv: list[str] = []
    if args.config is not None:
        argv.append(str(Path(args.config).resolve()))
    if args.preset:
        argv += ["--preset", args.preset]
    for item in args.overrides:
        argv += ["--set", item]
    if args.resume is not None:
        argv += ["--resume", str(Path(args.resume).resolve())]
    if args.allow_pickle:
        argv.append("--allow-pickle")
    if args.force and ("--force" not in drop or args.resume is not None):  # with --resume it only allows LR changes
        argv.append("--force")
    if args.num_processes > 1 and "--num-processes" not in drop:
        argv += ["--num-processes", str(args.num_processes)]
    return argv


def launch_processes(args: argparse.Namespace) -> int:
    """Relaunch N processes with torch's launcher (what `accelerate launch --multi_gpu` runs too); each one
    joins the process group through accelerate: NCCL on GPUs, gloo on CPU."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.num_processes),
           "-m", "train.cli", *_child_argv(args, drop=("--num-processes", "--force"))]
    if args.quiet:
        cmd.append("--quiet")
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.call(cmd, env=env)


def detach(args: argparse.Namespace, run_dir: Path) -> int:
    """Start training in its own process session, output to <run>/train.log; once the trainer has written
    its pid to <run>/trainer.pid, print how to follow it."""
    from train.rundir import PID_FILE, read_pid
    from train.runs.discover import remember_run

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / PID_FILE).unlink(missing_ok=True)  # a previous run's
    log_path = run_dir / "train.log"
    cmd = [sys.executable, "-m", "train.cli", *_child_argv(args, drop=()), "--quiet"]
    with open(log_path, "ab") as log:
        log_start = log.tell()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=os.getcwd())
    deadline = time.monotonic() + DETACH_WAIT_S
    while read_pid(run_dir) != proc.pid:
        code = proc.poll()
        if code is not None:
            with open(log_path, "rb") as log:
                log.seek(log_start)
                said = log.read().decode("utf-8", errors="replace").strip()
            return _err(f"the background trainer exited at once (code {code}){': ' + said if said else ''}")
        if time.monotonic() > deadline:
            return _err(f"the background trainer (pid {proc.pid}) did not start within {DETACH_WAIT_S:.0f} s; "
                        f"see {log_path}")
        time.sleep(0.05)
    remember_run(run_dir, pid=proc.pid)  # so `kiln runs` and the TUI find it from any folder
    print(f"training in the background (pid {proc.pid})")
    print(f"run directory: {run_dir}")
    print(f"watch it:      kiln watch {run_dir}    (or: tail -f {log_path})")
    print(f"stop it:       kiln stop {run_dir}     (or: touch {run_dir / 'stop.request'})")
    return 0


def _print_findings(report: Report, *, errors: bool = True) -> None:
    from curator.textsafe import printable

    if errors and report.errors:
        _err(report.error_text())
    for finding in report.warnings:
        for n, line in enumerate(finding.lines()):
            print(f"{'warning: ' if n == 0 else '         '}{printable(line)}", file=sys.stderr)


def check(cfg: TrainConfig, num_processes: int = 1) -> int:
    """The whole pre-flight (train.preflight): the config-stage checks, the dataset scan, the dataset-stage
    checks; print every problem with its fix, or the model, images, buckets, step count and disk estimate."""
    from train.data.dataset import bucket_counts
    from train.models.arch import ModelLoadError
    from train.preflight import Context, full_preflight
    from train.preflight.storage import estimate_disk, human

    warnings: list[str] = []
    skipped: set[str] = set()

    def warn(message: str, path: str | None) -> None:
        warnings.append(message)
        if path is not None:
            skipped.add(path)

    report, data = full_preflight(cfg, num_processes=num_processes, warn=warn)
    _print_findings(report)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if not report.ok or data is None:
        return 1
    items = data.items
    try:
        from train.models.probe import inspect_base_model

        info = inspect_base_model(cfg.model, allow_pickle=cfg.model.allow_pickle)
        model_line = f"{info.arch_name} ({info.kind}{', v-prediction' if info.v_prediction else ''})"
    except ModelLoadError as exc:
        return _err(str(exc))
    counts = bucket_counts(items)
    steps = data.step_math(cfg.train, num_processes=num_processes)
    need = estimate_disk(Context(cfg=cfg, num_processes=num_processes, data=data))
    sizes = sorted(set(data.batch_sizes().values()))
    batch = f"batch {'/'.join(map(str, sizes))}" + (f" x {steps.num_processes} processes"
                                                   if steps.num_processes > 1 else "")
    print("config OK")
    print(f"  model:    {model_line}")
    print(f"  images:   {sum(1 for i in items if not i.is_reg)} training, {sum(1 for i in items if i.is_reg)} "
          f"regularization ({sum(i.repeats for i in items)} with repeats), {len(skipped)} skipped")
    print("  buckets:  " + ", ".join(f"{w}x{h}:{n}" for (w, h), n in sorted(counts.items())))
    print(f"  steps:    {steps.total_steps} ({steps.steps_per_epoch} per epoch, {steps.epochs} epochs, {batch})")
    if need is not None:
        print(f"  disk:     ~{human(sum(need.by_folder.values()))} ({'; '.join(need.parts)})")
    if cfg.train.phases and steps.total_steps:
        try:
            spans = cfg.train.phase_spans(steps.total_steps, steps.steps_per_epoch)
        except ValueError as exc:
            return _err(str(exc))
        print("  schedule: " + ", then ".join(f"{p.lr_scheduler} {a + 1}-{b}" + (f" x{p.lr_scale:g}" if p.lr_scale != 1
                                                                                  else "") for a, b, p in spans))
    print(f"  run dir:  {cfg.run_dir}")
    if cfg.network.type == "full":
        from train.finetune.memory import planned_memory

        print("  memory:   " + "\n            ".join(planned_memory(cfg, info.arch).lines()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kiln train", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run_train(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
