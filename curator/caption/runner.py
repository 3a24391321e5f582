"""A caption run over a dataset: choose images, caption them in batches, write through the journal.

Nothing is written until every chosen image is captioned; then all changes go to
``curator.tags.journal.apply_changes`` as one entry (op "caption"), so ``kiln tags undo`` reverts the run byte
for byte. Ctrl-C stops early and still applies (and journals) what was captioned. Images are decoded in a
thread pool while the model works on the previous batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageOps

from curator.caption.config import CaptionConfig
from curator.caption.model import Captioner
from curator.caption.text import clean, fill_prompt, merge
from curator.captions.files import caption_file_for
from curator.fsutil import read_file
from curator.tags.items import CaptionItem

if TYPE_CHECKING:
    from curator.dataset import Dataset
    from curator.tags.journal import ApplyResult, CaptionChange

JOURNAL_OP = "caption"
DECODE_SIDE = 1024  # images are decoded at least this large on the short side (JPEG DCT scaling) or fully


class CaptionError(RuntimeError):
    """Nothing could be done (bad --where, no images); the message says why."""


@dataclass
class Outcome:
    """What happened to one image. status: captioned | unchanged | exists | skipped | bad | conflict | error."""

    path: str
    caption_path: str
    status: str
    text: str = ""
    error: str | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"path": self.path, "caption": self.caption_path, "status": self.status}
        if self.text:
            out["text"] = self.text
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class CaptionReport:
    """The outcome of a run; ``exit_code``: 0 done, 1 nothing could be done, 2 conflicts or write errors."""

    model: str
    family: str
    device: str
    mode: str
    dry_run: bool
    images: int = 0
    considered: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    entry_id: int | None = None
    seconds: float = 0.0
    interrupted: bool = False
    reason: str | None = None

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def exit_code(self) -> int:
        if self.count("conflict") or self.count("error"):
            return 2
        if self.reason is not None or (self.considered and self.considered == self.count("bad")):
            return 1
        return 0

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "family": self.family,
            "device": self.device,
            "mode": self.mode,
            "dry_run": self.dry_run,
            "images": self.images,
            "considered": self.considered,
            "captioned": self.count("captioned"),
            "exists": self.count("exists"),
            "journal_entry": self.entry_id,
            "seconds": round(self.seconds, 3),
            "interrupted": self.interrupted,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "results": [o.to_dict() for o in self.outcomes],
        }


def load_rgb(path: Path) -> Image.Image:
    """The image upright (EXIF), first frame, RGB with transparency on white, decoded reduced where cheap."""
    from curator.autotag.preprocess import to_rgb_on_white

    with Image.open(path) as image:
        if image.format == "JPEG":
            image.draft("RGB", (DECODE_SIDE, DECODE_SIDE))
        image.seek(0)
        image.load()
        return to_rgb_on_white(ImageOps.exif_transpose(image))


@dataclass
class _Job:
    item: CaptionItem
    target: Path
    before: bytes | None
    prompt: str
    prefix: list[str]


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _prefix(config: CaptionConfig, item: CaptionItem) -> list[str]:
    words = list(config.prefix)
    tokens = (item.record.subset.class_tokens or "").strip() if config.prefix_from_folder else ""
    if tokens:
        words.append(tokens)
    return words


def _jobs(items: list[CaptionItem], root: Path, config: CaptionConfig, captioner: Captioner,
          report: CaptionReport) -> list[_Job]:
    report.images = len(items)
    template = config.prompt if config.prompt is not None else captioner.default_prompt()
    jobs: list[_Job] = []
    owner: dict[Path, str] = {}
    for item in items:
        record = item.record
        target = caption_file_for(record.abs_path, config.extension) if config.mode == "write" else item.caption_path
        shared = owner.setdefault(target, record.path)
        if shared != record.path:
            report.outcomes.append(Outcome(record.path, _rel(target, root), "skipped", error=f"shares its caption with {shared}"))
            continue
        if not record.readable:
            report.outcomes.append(Outcome(record.path, _rel(target, root), "bad", error="the image cannot be decoded"))
            continue
        before = item.raw if config.mode != "write" else read_file(target)
        if config.mode == "write" and before is not None and not config.force:
            report.outcomes.append(Outcome(record.path, _rel(target, root), "exists", error="add --force to replace it"))
            continue
        prefix = _prefix(config, item)
        tags = list(item.caption.tags) if item.exists else []
        prompt = fill_prompt(template, ", ".join(prefix), tags, record.subset.class_tokens or "")
        jobs.append(_Job(item, target, before, prompt, prefix))
    return jobs


def _batches(jobs: list[_Job], size: int, workers: int = 4) -> Iterator[list[tuple[_Job, Image.Image | str]]]:
    """Batches of (job, image or the decode error), decoding the next batch while the current one runs."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kiln-caption") as pool:
        pending: list[tuple[_Job, Future[Image.Image]]] = [(j, pool.submit(load_rgb, j.item.record.abs_path)) for j in jobs[:size]]
        start = size
        while pending:
            following = [(j, pool.submit(load_rgb, j.item.record.abs_path)) for j in jobs[start : start + size]]
            start += size
            batch: list[tuple[_Job, Image.Image | str]] = []
            for job, future in pending:
                try:
                    batch.append((job, future.result()))
                except Exception as exc:  # noqa: BLE001 - one bad file must not stop the run
                    batch.append((job, f"{type(exc).__name__}: {exc}"))
            yield batch
            pending = following


@dataclass
class CaptionPlan:
    """Captions made for some images, not written yet: the report (outcomes per image) and the changes."""

    report: CaptionReport
    changes: list[CaptionChange]
    planned: dict[Path, Outcome]  # resolved caption path -> its outcome (for conflicts at apply time)


def caption_items(
    items: list[CaptionItem],
    root: Path,
    config: CaptionConfig,
    captioner: Captioner,
    progress: Callable[[int, int], Callable[[int], None]] | None = None,
    cancel: threading.Event | None = None,
) -> CaptionPlan:
    """Caption ``items`` (images of the dataset at ``root``) per ``config``; nothing is written. Stops after the
    current batch when ``cancel`` is set or on Ctrl-C (``report.interrupted``), keeping what was captioned.
    ``progress(total, 0)`` returns the callback told how many images each batch finished."""
    from curator.tags.journal import CaptionChange

    report = CaptionReport(captioner.name, captioner.family, captioner.device, config.mode, config.dry_run)
    jobs = _jobs(items, root, config, captioner, report)
    report.considered = len(jobs)
    plan = CaptionPlan(report, [], {})
    if not jobs:
        if report.count("exists"):
            report.reason = "every chosen image already has its caption file (add --force to replace them)"
        elif config.where:
            report.reason = f"no image matches --where {config.where!r}"
        elif not items:
            report.reason = "the dataset has no image to caption"
        else:
            report.reason = "no image left to caption (the chosen ones are unreadable or share a caption file)"
        return plan
    on_done = progress(len(jobs), 0) if progress else None
    started = time.perf_counter()
    try:
        for batch in _batches(jobs, config.batch_size):
            good = [(job, image) for job, image in batch if isinstance(image, Image.Image)]
            for job, error in batch:
                if isinstance(error, str):
                    report.outcomes.append(Outcome(job.item.path, _rel(job.target, root), "bad", error=error))
            if good:
                texts = captioner.generate([im for _j, im in good], [j.prompt for j, _im in good],
                                           config.max_new_tokens, config.num_beams)  # fmt: skip
                for (job, _image), raw in zip(good, texts, strict=True):
                    sentence = clean(raw)
                    after = merge(job.before, sentence, config.mode, job.prefix, config.keep_commas)
                    status = "unchanged" if after == job.before else "captioned"
                    outcome = Outcome(job.item.path, _rel(job.target, root), status, sentence)
                    report.outcomes.append(outcome)
                    if status == "captioned":
                        plan.changes.append(CaptionChange(job.target, job.before, after))
                        plan.planned[job.target.resolve()] = outcome
            if on_done is not None:
                on_done(len(batch))
            if cancel is not None and cancel.is_set():
                report.interrupted = True
                break
    except KeyboardInterrupt:
        report.interrupted = True
    report.seconds = time.perf_counter() - started
    report.outcomes.sort(key=lambda o: o.path)
    return plan


def journal_description(captioner: Captioner, config: CaptionConfig, files: int) -> str:
    """The journal entry's description of a caption run."""
    where = f", {config.extension}" if config.mode == "write" else ""
    return f"caption {captioner.name} ({config.mode}{where}): {files} file(s)"


def mark_apply_result(plan: CaptionPlan, result: ApplyResult) -> None:
    """Outcomes of files the journal did not write: changed on disk meanwhile (conflict) or a write error."""
    for path in result.conflicts:
        hit = plan.planned.get(Path(path).resolve())
        if hit is not None:
            hit.status, hit.error = "conflict", "the caption changed on disk while kiln captioned; left as it is"
    for path, reason in result.errors:
        hit = plan.planned.get(Path(path).resolve())
        if hit is not None:
            hit.status, hit.error = "error", reason


def run_caption(
    dataset: Dataset,
    config: CaptionConfig,
    captioner: Captioner,
    progress: Callable[[int, int], Callable[[int], None]] | None = None,
) -> CaptionReport:
    """Caption the dataset's images per ``config`` with a loaded ``captioner`` and write the captions through the
    journal (one entry) unless ``config.dry_run``."""
    from curator.tags.items import load_items
    from curator.tags.query import QueryError

    try:
        items = load_items(dataset, where=config.where, include_reg=config.include_reg)
    except QueryError as exc:
        raise CaptionError(f"--where: {exc}") from exc
    plan = caption_items(items, Path(dataset.root), config, captioner, progress)
    report = plan.report
    if plan.changes and not config.dry_run:
        from curator.tags.journal import apply_changes

        result = apply_changes(dataset, plan.changes, JOURNAL_OP, journal_description(captioner, config, len(plan.changes)))
        report.entry_id = result.entry_id
        mark_apply_result(plan, result)
    return report
