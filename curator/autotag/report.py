"""Human-readable autotag summary (rich, file-derived text always escaped and stripped of controls)."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from curator.autotag.runner import AutotagReport
from curator.textsafe import cli_console, printable


def print_report(report: AutotagReport, verbose: bool = False, console: Console | None = None) -> None:
    """Per-image lines for changes (dry runs: every change), then the problems and a summary."""
    console = console or cli_console(soft_wrap=True)
    if verbose:
        for o in report.outcomes:
            if o.status != "tagged":
                continue
            line = Text(printable(o.caption_path), style="bold")
            line.append(": ")
            added = set(o.added)
            for i, tag in enumerate(o.tags):
                if i:
                    line.append(", ")
                line.append(printable(tag), style="green" if tag in added else "")
            console.print(line)
    for o in report.bad_images:
        console.print(Text(f"bad image skipped: {printable(o.path)}: {printable(o.error or '')}", style="yellow"))
    for o in report.outcomes:
        if o.status in ("conflict", "error"):
            console.print(Text(f"{o.status}: {printable(o.caption_path)}: {printable(o.error or '')}", style="red"))
    verb = "would tag" if report.dry_run else "tagged"
    parts = [
        f"{verb} {report.count('tagged')}",
        f"unchanged {report.count('unchanged')}",
        f"skipped (already captioned) {report.count('skipped')}",
        f"bad images {len(report.bad_images)}",
    ]
    if report.count("conflict"):
        parts.append(f"conflicts {report.count('conflict')}")
    summary = f"autotag [{report.mode}] {report.images} image(s): " + ", ".join(parts)
    if report.considered:
        summary += f" in {report.seconds:.1f}s ({report.images_per_second:.1f} img/s on {', '.join(report.providers)})"
    console.print(Text(summary))
    if report.reg_excluded:
        console.print(Text(f"{report.reg_excluded} regularization image(s) left out (--include-reg tags them)"))
    if report.interrupted:
        console.print(Text("interrupted: the images tagged so far were written", style="yellow"))
    if report.entry_id is not None:
        console.print(Text(f"journal entry #{report.entry_id}: undo with `kiln tags undo`"))
    elif report.dry_run and report.count("tagged"):
        console.print(Text("dry run: nothing written"))
