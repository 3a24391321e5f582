"""Which runs kiln knows: ``./runs/`` of the current directory, plus a registry of every run launched or
seen (``<user data dir>/kiln/runs.jsonl``; ``KILN_DATA_DIR`` overrides the folder), so runs started anywhere
are found from anywhere. Also resolves a RUN argument (a run directory or a run name)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from train.runs.state import RunInfo, is_run_dir, read_run

REGISTRY = "runs.jsonl"
DEFAULT_RUNS_DIR = "runs"


class RunNotFound(LookupError):
    """RUN names no known run; the message lists what would work."""


def data_dir() -> Path:
    """kiln's user data folder (``KILN_DATA_DIR`` or the platform's, e.g. ~/.local/share/kiln)."""
    env = os.environ.get("KILN_DATA_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("kiln", appauthor=False))


def registry_path() -> Path:
    return data_dir() / REGISTRY


@dataclass(frozen=True)
class Launch:
    """A registry entry: a run directory and, when kiln launched it, the launched process."""

    dir: Path
    pid: int | None = None
    t: float | None = None


def remember_run(run_dir: Path, pid: int | None = None) -> None:
    """Add a run to the registry (append-only, one short line: safe with several writers). Never raises."""
    entry = {"dir": str(Path(run_dir).expanduser().resolve()), "t": round(time.time(), 3)}
    if pid is not None:
        entry["pid"] = int(pid)
    line = (json.dumps(entry) + "\n").encode("utf-8")
    try:
        path = registry_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError:
        pass  # the registry is a convenience; ./runs and explicit paths still work


def registered_runs() -> dict[Path, Launch]:
    """The registry, newest entry per directory, skipping folders that are gone."""
    out: dict[Path, Launch] = {}
    try:
        text = registry_path().read_text(encoding="utf-8", errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            path = Path(entry["dir"])
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
        pid = entry.get("pid")
        launch = Launch(path, pid if isinstance(pid, int) else None, entry.get("t"))
        old = out.get(path)
        if old is not None and launch.pid is None:
            launch = Launch(path, old.pid, old.t)  # a later "seen" entry keeps the launch record
        out[path] = launch
    return {p: launch for p, launch in out.items() if p.is_dir()}


def forget_missing() -> int:
    """Rewrite the registry without entries whose folder is gone; returns how many were dropped."""
    from curator.fsutil import atomic_write_bytes

    path = registry_path()
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return 0
    keep = []
    for line in lines:
        try:
            if Path(json.loads(line)["dir"]).is_dir():
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    if len(keep) != len(lines):
        atomic_write_bytes(path, ("\n".join(keep) + "\n" if keep else "").encode("utf-8"))
    return len(lines) - len(keep)


def default_search_dirs() -> list[Path]:
    """Where `kiln runs` looks without arguments: ./runs (and . itself when it is a run folder's parent)."""
    return [Path.cwd() / DEFAULT_RUNS_DIR]


def run_dirs_in(folder: Path) -> list[Path]:
    """``folder`` itself if it is a run directory, else its run-directory children."""
    folder = Path(folder).expanduser()
    if is_run_dir(folder):
        return [folder.resolve()]
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return []
    return [p.resolve() for p in children if is_run_dir(p)]


def find_runs(folders: list[Path] | None = None, include_registry: bool | None = None) -> list[RunInfo]:
    """The runs in ``folders`` (default: ./runs) plus the registry's (default: only without ``folders``),
    newest first."""
    if include_registry is None:
        include_registry = folders is None
    launches = registered_runs()
    dirs: list[Path] = []
    for folder in folders if folders is not None else default_search_dirs():
        dirs.extend(run_dirs_in(folder))
    if include_registry:
        dirs.extend(p for p in launches if is_run_dir(p) or launches[p].pid is not None)
    seen: set[Path] = set()
    runs: list[RunInfo] = []
    for path in dirs:
        if path in seen:
            continue
        seen.add(path)
        launch = launches.get(path)
        runs.append(read_run(path, known_pid=launch.pid if launch else None, launched_at=launch.t if launch else None))
    runs.sort(key=lambda r: (r.started_at or 0, r.name), reverse=True)
    return runs


def resolve_run(text: str, folders: list[Path] | None = None) -> Path:
    """A RUN argument: a run directory, or the name of a known run (its folder name or ``output.name``)."""
    path = Path(text).expanduser()
    if path.is_dir() and is_run_dir(path):
        return path.resolve()
    if path.is_dir():
        raise RunNotFound(f"{text}: this folder is not a run directory (no events.jsonl or status.json)")
    runs = find_runs(folders, include_registry=True)
    matches = [r for r in runs if text in (r.name, r.dir.name)]
    if len({r.dir for r in matches}) == 1:
        return matches[0].dir
    if matches:
        listing = "\n".join(f"  {r.dir}" for r in matches)
        raise RunNotFound(f"{text}: several runs have this name; give the directory:\n{listing}")
    known = ", ".join(sorted({r.name for r in runs})[:12]) or "none"
    raise RunNotFound(f"{text}: no such run directory or run name (known runs: {known}; `kiln runs` lists them)")
