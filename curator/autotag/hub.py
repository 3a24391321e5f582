"""Finding a WD14 tagger in the local Hugging Face cache, offline (never downloads)."""

from __future__ import annotations

import os
import re
from pathlib import Path

MODEL_FILES = ("model.onnx", "selected_tags.csv")
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def looks_like_repo_id(text: str) -> bool:
    """`owner/name` with Hugging Face's allowed characters (a relative path with one slash looks the same)."""
    return bool(REPO_ID_RE.match(text)) and ".." not in text


def hub_cache_dirs() -> list[Path]:
    """Where huggingface_hub keeps its cache, in its own order of precedence (all that are set)."""
    dirs: list[Path] = []
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            dirs.append(Path(os.environ[var]).expanduser())
    if os.environ.get("HF_HOME"):
        dirs.append(Path(os.environ["HF_HOME"]).expanduser() / "hub")
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    dirs.append(base / "huggingface" / "hub")
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def download_hint(repo_id: str) -> str:
    files = " ".join(MODEL_FILES)
    return (
        f"on a machine with internet run `huggingface-cli download {repo_id} {files}` "
        f"(or `hf download {repo_id} {files}`), then copy the cache folder "
        f"models--{repo_id.replace('/', '--')} into {hub_cache_dirs()[0]}, or pass a local folder that holds "
        f"{' and '.join(MODEL_FILES)}"
    )


def _with_library(repo_id: str, cache_dir: Path) -> Path | None:
    """huggingface_hub's own offline lookup (refs/main -> snapshot); None when absent or not installed."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found: list[Path] = []
    for name in MODEL_FILES:
        try:
            hit = try_to_load_from_cache(repo_id, name, cache_dir=str(cache_dir))
        except Exception:  # noqa: BLE001 - a malformed cache or an old/new library signature: fall back to our own walk
            return None
        if not isinstance(hit, str):
            return None
        found.append(Path(hit))
    if found[0].parent != found[1].parent:
        return None
    return found[0].parent


def _by_layout(repo_id: str, cache_dir: Path) -> Path | None:
    """models--owner--name/snapshots/<rev>/ holding both files: refs/main's revision first, else the newest."""
    repo_dir = cache_dir / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    candidates: list[Path] = []
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        rev = ref.read_text(encoding="utf-8", errors="replace").strip()
        if rev:
            candidates.append(snapshots / rev)
    others = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    candidates.extend(p for p in others if p not in candidates)
    for snap in candidates:
        if all((snap / name).is_file() for name in MODEL_FILES):
            return snap
    return None


def find_in_cache(repo_id: str) -> Path | None:
    """The snapshot folder holding model.onnx and selected_tags.csv for repo_id, or None."""
    for cache_dir in hub_cache_dirs():
        if not cache_dir.is_dir():
            continue
        hit = _with_library(repo_id, cache_dir) or _by_layout(repo_id, cache_dir)
        if hit is not None:
            return hit
    return None
