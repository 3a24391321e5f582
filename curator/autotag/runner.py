"""An autotag run over a dataset: choose images, tag them in batches, write captions through the journal.

Nothing is written until every image has been tagged; then all caption changes go to
`curator.tags.journal.apply_changes` as one entry (op "autotag"), so `kiln tags undo` reverts the whole run
byte-exactly. Ctrl-C during tagging stops early and still applies (and journals) what was tagged so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curator.autotag.captioning import has_tags, plan_caption
from curator.autotag.config import AutotagConfig
from curator.autotag.model import ModelError, TaggerModel, resolve_model
from curator.autotag.pipeline import tag_images
from curator.autotag.thresholds import Prediction
from curator.captions.files import caption_target
from curator.captions.tagtext import tag_key
from curator.records import ImageRecord
from curator.tags.items import CaptionItem, ScopeError, dataset_folders, select
from curator.tags.journal import CaptionChange, apply_changes
from curator.tags.query import QueryError, parse_query

if TYPE_CHECKING:
    from curator.dataset import Dataset

JOURNAL_OP = "autotag"


class AutotagError(RuntimeError):
    """Nothing could be done (bad model, unreadable dataset, bad --where); the message says why."""


@dataclass
class ImageOutcome:
    """What happened to one image. status: tagged | unchanged | skipped | bad | conflict | error."""

    path: str
    caption_path: str
    status: str
    tags: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    rating: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "caption": self.caption_path, "status": self.status}
        if self.status in ("tagged", "unchanged", "conflict", "error"):
            out["tags"] = self.tags
            out["added"] = self.added
        if self.rating is not None:
            out["rating"] = self.rating
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class AutotagReport:
    """The outcome of a run; `exit_code` follows kiln's convention (0 done, 1 nothing done, 2 conflicts)."""

    model: str
    providers: list[str]
    mode: str
    dry_run: bool
    images: int = 0  # images in the dataset (after --where)
    considered: int = 0  # images sent to the model
    outcomes: list[ImageOutcome] = field(default_factory=list)
    entry_id: int | None = None
    seconds: float = 0.0
    interrupted: bool = False
    reason: str | None = None  # why nothing could be done
    reg_excluded: int = 0  # regularization images left out (no --include-reg)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def bad_images(self) -> list[ImageOutcome]:
        return [o for o in self.outcomes if o.status == "bad"]

    @property
    def images_per_second(self) -> float:
        return self.considered / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.count("conflict") or self.count("error"):
            return 2
        if self.reason is not None:
            return 1
        if self.considered and self.considered == self.count("bad"):
            return 1
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "providers": self.providers,
            "mode": self.mode,
            "dry_run": self.dry_run,
            "images": self.images,
            "considered": self.considered,
            "tagged": self.count("tagged"),
            "unchanged": self.count("unchanged"),
            "skipped": self.count("skipped"),
            "bad": [{"path": o.path, "error": o.error} for o in self.bad_images],
            "conflicts": [o.caption_path for o in self.outcomes if o.status == "conflict"],
            "errors": [{"path": o.caption_path, "error": o.error} for o in self.outcomes if o.status == "error"],
            "journal_entry": self.entry_id,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            "interrupted": self.interrupted,
            "reason": self.reason,
            "regularization_excluded": self.reg_excluded,
            "exit_code": self.exit_code,
            "results": [o.to_dict() for o in self.outcomes],
        }


# ---- dataset helpers ----------------------------------------------------------------------------------
def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def filter_where(
    dataset: Dataset, records: list[ImageRecord], targets: list[Path], captions: list[bytes | None], where: str
) -> list[int]:
    """Indices of the records matching a `kiln tags` query (`curator.tags.query`), each image seen exactly as
    `kiln tags --where` sees it (`curator.tags.items.select`: its bucket, every health flag)."""
    items = [CaptionItem(r, str(t), c) for r, t, c in zip(records, targets, captions, strict=True)]
    try:
        query = parse_query(where, folders=dataset_folders(dataset))
        chosen = {id(it) for it in select(dataset, items, query)}
    except QueryError as exc:  # its message already says the position
        raise AutotagError(f"--where: {exc}\n{exc.pointer()}") from exc
    except ScopeError as exc:
        raise AutotagError(f"--where: {exc}") from exc
    return [i for i, it in enumerate(items) if id(it) in chosen]


# ---- the run ------------------------------------------------------------------------------------------
def prefix_for(config: AutotagConfig, record: ImageRecord) -> list[str]:
    """Tags to keep first: --prefix tags, then the subset's class tokens with --prefix-from-folder."""
    prefix = list(config.prefix)
    tokens = record.subset.class_tokens if config.prefix_from_folder else ""
    if tokens and tokens.strip():
        prefix.append(tokens.strip())
    return prefix


def run_autotag(
    dataset: Dataset,
    config: AutotagConfig,
    model: TaggerModel | None = None,
    progress: Callable[[int, int], Callable[[int], None]] | None = None,
) -> AutotagReport:
    """Tag the dataset's images per `config`. Raises `AutotagError`/`ModelError` when nothing can start.

    `progress(total, done_before)` returns a callback taking the number of images just finished.
    """
    if model is None:
        model = TaggerModel.load(resolve_model(config.model), device=config.device)
    report = AutotagReport(model=config.model, providers=model.providers, mode=config.mode, dry_run=config.dry_run)
    root = Path(dataset.root)
    records = list(dataset.images())
    targets = [caption_target(r) for r in records]
    befores: list[bytes | None] = []
    unreadable: dict[int, str] = {}
    for i, cap in enumerate(targets):
        try:
            befores.append(_read_bytes(cap))
        except OSError as exc:
            befores.append(None)
            unreadable[i] = f"cannot read the caption: {exc.strerror or exc}"
    selected = (
        filter_where(dataset, records, targets, befores, config.where) if config.where else list(range(len(records)))
    )
    if not config.include_reg:
        kept = [i for i in selected if not records[i].subset.is_reg]
        report.reg_excluded = len(selected) - len(kept)
        selected = kept
    report.images = len(selected)
    if not selected:
        if report.reg_excluded:
            report.reason = "only regularization images were selected (add --include-reg to tag them)"
        elif config.where:
            report.reason = f"no image matches --where {config.where!r}"
        else:
            report.reason = "the dataset has no images"
        return report

    todo: list[int] = []
    owner: dict[Path, str] = {}
    for i in selected:
        record = records[i]
        shared_with = owner.setdefault(targets[i], record.path)
        if shared_with != record.path:
            # a.jpg and a.png share a.txt (kohya reads it for both): tag the first, never write one file twice
            report.outcomes.append(
                ImageOutcome(record.path, _rel(targets[i], root), "skipped", error=f"shares its caption with {shared_with}")
            )
        elif i in unreadable:
            report.outcomes.append(ImageOutcome(record.path, _rel(targets[i], root), "error", error=unreadable[i]))
        elif config.mode == "missing" and has_tags(befores[i]):
            report.outcomes.append(ImageOutcome(record.path, _rel(targets[i], root), "skipped"))
        else:
            todo.append(i)
    report.considered = len(todo)
    if not todo:
        report.reason = (
            "every selected image already has a caption (use --mode append or --mode replace to change them)"
            if config.mode == "missing"
            else "no caption could be read"
        )
        return report

    rules = config.rules()
    on_done = progress(len(todo), 0) if progress else None
    changes: list[CaptionChange] = []
    planned: list[tuple[ImageOutcome, Path]] = []
    scores: dict[str, dict[str, float]] = {}  # image path -> caption tag -> probability, kept in the index
    start = time.perf_counter()
    try:
        for result in tag_images(
            model, [Path(records[i].abs_path) for i in todo], rules, config.batch_size, config.workers, on_done
        ):
            i = todo[result.index]
            record, cap = records[i], targets[i]
            if result.error is not None or result.prediction is None:
                report.outcomes.append(ImageOutcome(record.path, _rel(cap, root), "bad", error=result.error))
                continue
            outcome, change = _plan_one(record, cap, befores[i], result.prediction, config, root)
            report.outcomes.append(outcome)
            final = {tag_key(t) for t in outcome.tags}
            scores[record.path] = {t: p for t, p in result.prediction.scores.items() if tag_key(t) in final}
            if change is not None:
                changes.append(change)
                planned.append((outcome, cap))
    except KeyboardInterrupt:
        report.interrupted = True
    report.seconds = time.perf_counter() - start
    report.outcomes.sort(key=lambda o: o.path)

    if changes and not config.dry_run:
        _apply(dataset, changes, planned, config, report, model)
    if scores and not config.dry_run:
        from curator.autotag.scores import store

        written = {o.path for o in report.outcomes if o.status in ("tagged", "unchanged")}
        store(dataset.index, {path: s for path, s in scores.items() if path in written}, model.files.name)
    return report


def _plan_one(
    record: ImageRecord, cap: Path, before: bytes | None, prediction: Prediction, config: AutotagConfig, root: Path
) -> tuple[ImageOutcome, CaptionChange | None]:
    plan = plan_caption(before, prediction.tags, config.mode, prefix_for(config, record))
    outcome = ImageOutcome(
        record.path, _rel(cap, root), plan.status, tags=plan.tags, added=plan.added, rating=prediction.rating
    )
    if plan.after is None:
        return outcome, None
    return outcome, CaptionChange(caption_path=cap, before=before, after=plan.after)


def _apply(
    dataset: Dataset,
    changes: list[CaptionChange],
    planned: list[tuple[ImageOutcome, Path]],
    config: AutotagConfig,
    report: AutotagReport,
    model: TaggerModel,
) -> None:
    description = f"autotag {model.files.name} ({config.mode}): {len(changes)} caption(s)"
    result = apply_changes(dataset, changes, JOURNAL_OP, description)
    report.entry_id = result.entry_id
    conflicts = {Path(p).resolve() for p in result.conflicts}
    errors = {Path(p).resolve(): reason for p, reason in result.errors}
    for outcome, cap in planned:
        key = cap.resolve()
        if key in conflicts:
            outcome.status = "conflict"
            outcome.error = "the caption changed on disk while autotag ran; left as it is"
        elif key in errors:
            outcome.status = "error"
            outcome.error = errors[key]


__all__ = [
    "AutotagError",
    "AutotagReport",
    "ImageOutcome",
    "JOURNAL_OP",
    "ModelError",
    "run_autotag",
]
