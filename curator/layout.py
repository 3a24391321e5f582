"""Dataset layouts kiln understands: kohya folders, a flat folder, or a kohya dataset TOML.

* kohya folders: ``ROOT/<repeats>_<class tokens>/`` subfolders (``10_sks dog``), images directly inside
  (kohya does not recurse). ``ROOT/reg/<repeats>_<name>/`` are regularization subsets, and so are the
  ``reg/`` folders of bmaltais' GUI layout ``ROOT/img/`` + ``ROOT/reg/``.
* flat: images directly in ROOT, repeats 1.
* TOML: kohya's ``--dataset_config`` file (``[general]``, ``[[datasets]]``, ``[[datasets.subsets]]``); subset keys
  inherit from the dataset and from ``[general]`` as in kohya's ``config_util``.

Loading a layout reads directory names only (no image is opened).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".avif"})
CAPTION_EXTENSIONS = (".txt", ".caption")
KOHYA_FOLDER = re.compile(r"^(\d+)_(.*)$")
REG_FOLDER_NAMES = ("reg", "reg_data", "regularization")
TOML_CAPTION_DEFAULT = ".caption"  # kohya's DreamBooth subset default when the TOML names none
FOLDER_CAPTION_DEFAULT = ".txt"

# Keys of [general]/[[datasets]] that matter for curation (bucketing, captions); kept in toml_settings.
_DATASET_KEYS = (
    "resolution",
    "enable_bucket",
    "min_bucket_reso",
    "max_bucket_reso",
    "bucket_reso_steps",
    "bucket_no_upscale",
    "batch_size",
)


class LayoutError(ValueError):
    """The path is not a dataset kiln can read; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Subset:
    """One folder of images with its kohya settings. ``rel_dir`` is posix, relative to the root ('' = root).

    From a dataset TOML: ``dataset`` is the index of its ``[[datasets]]`` block, ``options`` every key that
    applies to it as kohya resolves them (the subset's own, else its dataset's, else ``[general]``), and
    ``metadata_file`` the kohya JSON captions of a fine-tuning subset."""

    image_dir: Path
    rel_dir: str
    repeats: int = 1
    class_tokens: str = ""
    is_reg: bool = False
    caption_extension: str = FOLDER_CAPTION_DEFAULT
    keep_tokens: int = 0
    dataset: int = 0
    options: Mapping[str, object] = field(default_factory=dict, compare=False, hash=False)
    metadata_file: Path | None = None

    @property
    def name(self) -> str:
        return self.rel_dir or "."


@dataclass(slots=True)
class DatasetLayout:
    """Where a dataset's images are. ``toml_settings`` holds the dataset-level keys from a TOML
    (resolution, bucket options); ``warnings`` lists what was skipped and why."""

    root: Path
    subsets: list[Subset]
    source: Literal["kohya", "flat", "toml"]
    toml_settings: dict[str, Any] = field(default_factory=dict)
    toml_path: Path | None = None
    warnings: list[str] = field(default_factory=list)
    training_subsets: list[Subset] = field(default_factory=list)
    """Every subset as a trainer reads it, in the file's order: from a TOML, one per [[datasets.subsets]] block
    (a folder listed in two datasets is two subsets); else the same as ``subsets``."""
    dataset_options: list[dict[str, Any]] = field(default_factory=list)
    """Per [[datasets]] block of a TOML, its keys over [general]'s (kohya's resolution)."""

    def __post_init__(self) -> None:
        if not self.training_subsets:
            self.training_subsets = list(self.subsets)

    def subset_for(self, rel_dir: str) -> Subset | None:
        for subset in self.subsets:
            if subset.rel_dir == rel_dir:
                return subset
        return None


def normalize_caption_extension(extension: str) -> str:
    """``txt`` → ``.txt``; rejects empty and path-like values."""
    ext = extension.strip()
    if not ext or "/" in ext or "\\" in ext or ext in (".", ".."):
        raise LayoutError(f"caption extension {extension!r} is not a file extension; use .txt or .caption")
    return ext if ext.startswith(".") else "." + ext


def is_image_name(name: str) -> bool:
    """A visible file name with an image extension (``os.path.splitext``'s rule, without its cost: the walk
    asks this for every file of a 100k-image dataset)."""
    if name.startswith("."):
        return False
    stem, dot, ext = name.rpartition(".")
    return bool(dot) and "/" not in ext and ("." + ext.lower()) in IMAGE_EXTENSIONS


def _has_images(folder: Path) -> bool:
    try:
        with os.scandir(folder) as entries:
            return any(is_image_name(e.name) and e.is_file() for e in entries)
    except OSError:
        return False


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symlink loop, a folder that vanished
        return False


def _subdirs(folder: Path) -> list[os.DirEntry[str]]:
    with os.scandir(folder) as entries:
        return sorted((e for e in entries if not e.name.startswith(".") and _is_dir(e)), key=lambda e: e.name)


def is_utf8_name(name: str) -> bool:
    """A name that decoded from the filesystem without surrogates (kiln's index stores UTF-8 only)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _kohya_subsets(folder: Path, root: Path, is_reg: bool, ext: str, warnings: list[str]) -> list[Subset]:
    subsets = []
    for entry in _subdirs(folder):
        match = KOHYA_FOLDER.match(entry.name)
        rel = Path(entry.path).relative_to(root).as_posix()
        if not match:
            continue
        if not is_utf8_name(rel):
            shown = os.fsencode(rel).decode("utf-8", "replace")
            warnings.append(f"{shown}/: the folder name is not valid UTF-8; kiln skips it (rename it to use it)")
            continue
        repeats = int(match.group(1))
        if repeats < 1:
            warnings.append(f"{rel}: {repeats} repeats, kohya skips this folder")
        subsets.append(
            Subset(
                image_dir=Path(entry.path),
                rel_dir=rel,
                repeats=repeats,
                class_tokens=match.group(2),
                is_reg=is_reg,
                caption_extension=ext,
            )
        )
    return subsets


def _load_folder(root: Path, caption_extension: str | None) -> DatasetLayout:
    ext = normalize_caption_extension(caption_extension or FOLDER_CAPTION_DEFAULT)
    warnings: list[str] = []
    try:
        subdirs = _subdirs(root)
    except PermissionError as exc:
        raise LayoutError(f"{root}: cannot list the folder ({exc.strerror}); check its permissions") from exc
    names = {e.name: e for e in subdirs}
    train_dir = root
    # bmaltais' GUI: ROOT/img/<n>_name + ROOT/reg/<n>_name (+ log/, model/)
    if "img" in names and not any(KOHYA_FOLDER.match(n) for n in names):
        img_subsets = _kohya_subsets(root / "img", root, False, ext, warnings)
        if img_subsets:
            train_dir = root / "img"
    subsets = _kohya_subsets(train_dir, root, False, ext, warnings)
    for reg_name in REG_FOLDER_NAMES:
        if reg_name in names:
            subsets += _kohya_subsets(root / reg_name, root, True, ext, warnings)
    if subsets:
        ignored = [e.name for e in _subdirs(train_dir) if not KOHYA_FOLDER.match(e.name)]
        ignored = [n for n in ignored if n not in REG_FOLDER_NAMES and n not in ("img", "log", "model")]
        for name in ignored:
            if _has_images(train_dir / name):
                warnings.append(f"{name}/: no <repeats>_ prefix, kohya ignores this folder")
        if _has_images(root):
            warnings.append("images directly in the dataset folder are ignored: kohya reads only <repeats>_<name>/")
        return DatasetLayout(root=root, subsets=subsets, source="kohya", warnings=warnings)
    return DatasetLayout(
        root=root,
        subsets=[Subset(image_dir=root, rel_dir="", repeats=1, caption_extension=ext)],
        source="flat",
        warnings=warnings,
    )


def _resolve_dir(value: object, toml_path: Path, where: str) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise LayoutError(f"{toml_path}: {where}.image_dir must be a folder path, got {value!r}")
    path = Path(value).expanduser()
    if not path.is_absolute():
        beside = (toml_path.parent / path).resolve()
        path = beside if beside.is_dir() or not Path(value).resolve().is_dir() else Path(value).resolve()
    if not path.is_dir():
        raise LayoutError(f"{toml_path}: {where}.image_dir {value!r} is not a folder ({path})")
    return path.resolve()


def _metadata_images_dir(metadata_file: Path, toml_path: Path, where: str) -> Path:
    """The folder of a metadata_file subset's images when the TOML names no image_dir: kohya's JSON keys are
    then absolute image paths, which must share one folder for kiln to index them."""
    try:
        keys = list(json.loads(metadata_file.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise LayoutError(f"{toml_path}: {where}.metadata_file {str(metadata_file)!r} is not a readable kohya "
                          f"metadata JSON ({exc})") from exc
    folders = {str(Path(k).parent) for k in keys if Path(k).is_absolute()}
    if len(folders) != 1 or len(folders) != len({str(Path(k).parent) for k in keys}):
        raise LayoutError(f"{toml_path}: {where}: without image_dir, kiln reads a metadata_file subset's images "
                          "from the one folder its absolute paths share; set image_dir to the images' folder")
    return _resolve_dir(folders.pop(), toml_path, where)


def _load_toml(toml_path: Path, caption_extension: str | None) -> DatasetLayout:
    try:
        data = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise LayoutError(f"{toml_path}: not a readable kohya dataset TOML ({exc})") from exc
    from curator.dataset_toml import check_dataset_toml

    problems = check_dataset_toml(data, toml_path)
    if problems:
        raise LayoutError("\n".join(problems))
    general = data.get("general", {}) or {}
    datasets = data.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise LayoutError(f"{toml_path}: no [[datasets]] table; a kohya dataset config needs [[datasets.subsets]]")
    warnings: list[str] = []
    raw: list[tuple[Path, dict[str, Any], int, Path | None]] = []
    settings: dict[str, Any] = {k: general[k] for k in _DATASET_KEYS if k in general}
    dataset_options: list[dict[str, Any]] = []
    for d_index, dataset in enumerate(datasets):
        own = {k: v for k, v in dataset.items() if k != "subsets"}
        dataset_options.append({**general, **own})
        if d_index == 0:
            settings.update({k: dataset[k] for k in _DATASET_KEYS if k in dataset})
        elif any(k in dataset and dataset[k] != settings.get(k) for k in _DATASET_KEYS):
            warnings.append(f"datasets[{d_index}] has its own bucket/resolution settings; the curator's bucket "
                            "checks use the first dataset's (training uses each dataset's own)")
        for s_index, subset in enumerate(dataset.get("subsets", []) or []):
            where = f"datasets[{d_index}].subsets[{s_index}]"
            metadata_file: Path | None = None
            if subset.get("metadata_file"):
                metadata_file = Path(str(subset["metadata_file"])).expanduser()
                if not metadata_file.is_absolute():
                    metadata_file = (toml_path.parent / metadata_file).resolve()
                if not metadata_file.is_file():
                    raise LayoutError(f"{toml_path}: {where}.metadata_file {str(subset['metadata_file'])!r} does "
                                      "not exist")
            if "image_dir" not in subset:
                if metadata_file is None:
                    warnings.append(f"{where}: no image_dir nor metadata_file, skipped")
                    continue
                folder = _metadata_images_dir(metadata_file, toml_path, where)
            else:
                folder = _resolve_dir(subset["image_dir"], toml_path, where)
            merged = {**general, **own, **subset}
            raw.append((folder, merged, d_index, metadata_file))
    if not raw:
        raise LayoutError(f"{toml_path}: no subset with an image_dir")
    root = Path(os.path.commonpath([str(p) for p, _, _, _ in raw]))
    subsets: list[Subset] = []
    training: list[Subset] = []
    seen: set[Path] = set()
    for path, opts, d_index, metadata_file in raw:
        ext = opts.get("caption_extension") or caption_extension or TOML_CAPTION_DEFAULT
        try:
            repeats = int(opts.get("num_repeats", 1))
            keep_tokens = int(opts.get("keep_tokens", 0))
        except (TypeError, ValueError) as exc:
            raise LayoutError(f"{toml_path}: {path}: num_repeats/keep_tokens must be integers ({exc})") from exc
        subset = Subset(
            image_dir=path,
            rel_dir=path.relative_to(root).as_posix() if path != root else "",
            repeats=repeats,
            class_tokens=str(opts.get("class_tokens") or ""),
            is_reg=bool(opts.get("is_reg", False)),
            caption_extension=normalize_caption_extension(str(ext)),
            keep_tokens=keep_tokens,
            dataset=d_index,
            options=opts,
            metadata_file=metadata_file,
        )
        training.append(subset)
        if path in seen:
            continue  # the curator indexes a folder once (the first subset's settings); training keeps both
        seen.add(path)
        subsets.append(subset)
    rel_dirs = [s.rel_dir for s in subsets]
    if "" in rel_dirs and len(rel_dirs) > 1:
        warnings.append("one subset folder contains the others; kohya reads each folder without recursing")
    return DatasetLayout(
        root=root, subsets=subsets, source="toml", toml_settings=settings, toml_path=toml_path, warnings=warnings,
        training_subsets=training, dataset_options=dataset_options,
    )


def load_layout(path: Path | str, caption_extension: str | None = None) -> DatasetLayout:
    """Read the layout of a dataset folder or kohya dataset TOML; raises ``LayoutError`` with the reason.

    ``caption_extension``: None means the tool's default (``.txt`` for folders; for a TOML, what it says or
    kohya's default ``.caption``).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise LayoutError(f"{path}: no such dataset folder or TOML file")
    path = path.resolve()
    if path.is_file():
        if path.suffix.lower() != ".toml":
            raise LayoutError(f"{path}: a dataset is a folder of images or a kohya dataset .toml file")
        return _load_toml(path, caption_extension)
    if not path.is_dir():
        raise LayoutError(f"{path}: not a folder or TOML file")
    if not os.access(path, os.R_OK | os.X_OK):
        raise LayoutError(f"{path}: the folder is not readable; check its permissions")
    return _load_folder(path, caption_extension)
