"""Assemble a complete diffusers-style config folder (JSON configs + CLIP tokenizer files) for offline loading.

The JSON configs ship in `train/models/configs/<name>/`. The CLIP BPE tokenizer files (vocab.json, merges.txt,
about 2 MB) are not duplicated per architecture: they are built once from open_clip's
`bpe_simple_vocab_16e6.txt.gz` (shipped in the curator's data folder, `clip/`) or taken from its
`clip_tokenizer/`, and linked (or copied) into an assembled folder under the kiln cache dir.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from curator.data import data_dir
from curator.fsutil import atomic_write_bytes

from .arch import ModelLoadError

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
SHIPPED_CONFIGS = ("sd15", "sd2", "sd2-base", "sdxl")
CLIP_TOKENIZER_DIR = data_dir() / "clip_tokenizer"
CLIP_BPE_GZ = data_dir() / "clip" / "bpe_simple_vocab_16e6.txt.gz"
TOKENIZER_FILES = ("vocab.json", "merges.txt")
CLIP_VOCAB_SIZE = 49408


class ConfigAssemblyError(ModelLoadError):
    """The shipped configs or tokenizer files are missing or unreadable."""


def cache_root() -> Path:
    """kiln's cache dir: $KILN_CACHE_DIR, else the platform user cache dir."""
    env = os.environ.get("KILN_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("kiln"))


def clip_tokenizer_files() -> Path:
    """Folder holding CLIP `vocab.json` + `merges.txt` (built into the cache on first use)."""
    if all((CLIP_TOKENIZER_DIR / f).is_file() for f in TOKENIZER_FILES):
        return CLIP_TOKENIZER_DIR
    if not CLIP_BPE_GZ.is_file():
        raise ConfigAssemblyError(
            f"CLIP tokenizer files are missing: neither {CLIP_TOKENIZER_DIR}/vocab.json+merges.txt nor "
            f"{CLIP_BPE_GZ} exists. Reinstall kiln."
        )
    digest = hashlib.sha256(CLIP_BPE_GZ.read_bytes()).hexdigest()[:12]
    out = cache_root() / "tokenizers" / f"clip-bpe-{digest}"
    if all((out / f).is_file() for f in TOKENIZER_FILES):
        return out
    # the one BPE builder, shared with the curator's token counting
    from curator.tags.tokens import write_hf_tokenizer_files

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=".clip-bpe-"))
    write_hf_tokenizer_files(staging)
    out.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        atomic_write_bytes(out / name, (staging / name).read_bytes())
    shutil.rmtree(staging, ignore_errors=True)
    return out


def _tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def _tokenizer_subdirs(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.iterdir()) if p.is_dir() and p.name.startswith("tokenizer")]


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        dst.symlink_to(src)
    except OSError:
        shutil.copyfile(src, dst)


def assemble_config_dir(source: str | Path) -> Path:
    """A complete diffusers config folder (no weights) for `source`: a shipped name or any config folder.

    Tokenizer subfolders that lack vocab.json/merges.txt get the CLIP BPE files. Result is cached by content.
    """
    src = CONFIGS_DIR / source if isinstance(source, str) and source in SHIPPED_CONFIGS else Path(source)
    if not (src / "model_index.json").is_file():
        raise ConfigAssemblyError(f"model.config_dir: {src} is not a diffusers config folder (no model_index.json).")
    needs_tokenizer = [d for d in _tokenizer_subdirs(src) if not all((d / f).is_file() for f in TOKENIZER_FILES)]
    if not needs_tokenizer:
        return src
    tok_dir = clip_tokenizer_files()
    digest = hashlib.sha256(f"{_tree_digest(src)}:{tok_dir.resolve()}".encode()).hexdigest()[:12]
    return _assemble_cached(src.resolve(), digest, tok_dir, cache_root())


@lru_cache(maxsize=32)
def _assemble_cached(src: Path, digest: str, tok_dir: Path, cache: Path) -> Path:
    out = cache / "model-configs" / f"{src.name}-{digest}"
    if (out / ".complete").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        for sub in _tokenizer_subdirs(tmp):
            for name in TOKENIZER_FILES:
                if not (sub / name).exists():
                    _link_or_copy(tok_dir / name, sub / name)
        (tmp / ".complete").write_text("ok\n")
        try:
            os.replace(tmp, out)
        except OSError:  # another process won the race
            if not (out / ".complete").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def shipped_config_name(arch: str, v_prediction: bool) -> str:
    """Which shipped config folder fits an architecture ('sd1', 'sd2', 'sdxl')."""
    if arch == "sd1":
        return "sd15"
    if arch == "sd2":
        return "sd2" if v_prediction else "sd2-base"
    if arch == "sdxl":
        return "sdxl"
    raise ValueError(f"unknown architecture {arch!r}")
