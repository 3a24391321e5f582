"""Restorable removal of images: kiln never deletes a user's image, it moves it to ``.kiln/trash/``.

Each removal is a *batch* (e.g. "keep this one of a duplicate cluster, trash the others"):
``<kiln_dir>/trash/<batch_id>/files/<original relative path>`` plus ``<batch_id>/manifest.json`` recording
what moved where, so ``restore`` can put everything back, and a person can too, by hand.
An image's same-stem caption files (``.txt``/``.caption``) travel with it. Given the index records the
decision was made on, an image that changed on disk since (size, modification time or content hash differ)
is refused, with nothing moved: the user decided about the file kiln showed, not about a new one.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from curator.captions.files import caption_candidates
from curator.fsutil import atomic_write_bytes
from curator.layout import CAPTION_EXTENSIONS

if TYPE_CHECKING:
    from curator.records import ImageRecord

TRASH_DIRNAME = "trash"
MANIFEST = "manifest.json"


class TrashError(OSError):
    """A move to or from the trash could not be done; the message says which file and why."""


@dataclass
class TrashedFile:
    original: str  # posix path relative to the dataset root
    stored: str  # posix path relative to the batch folder


@dataclass
class TrashBatch:
    batch_id: str
    reason: str
    created: float
    files: list[TrashedFile] = field(default_factory=list)
    restored: bool = False

    @property
    def images(self) -> list[str]:
        return [f.original for f in self.files if Path(f.original).suffix.lower() not in CAPTION_EXTENSIONS]


def trash_root(kiln_dir: Path) -> Path:
    return Path(kiln_dir) / TRASH_DIRNAME


def _safe_rel(rel: str) -> PurePosixPath:
    path = PurePosixPath(rel)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise TrashError(f"refusing to trash {rel!r}: not a path inside the dataset")
    return path


def _write_manifest(folder: Path, batch: TrashBatch) -> None:
    atomic_write_bytes(folder / MANIFEST, json.dumps(asdict(batch), indent=2).encode("utf-8"))


def _unchanged(source: Path, rel: str, record: ImageRecord) -> None:
    """Raise :class:`TrashError` unless ``source`` is still the file ``record`` describes (size + mtime, then
    the content hash: a same-size rewrite within one timestamp tick is caught too)."""
    from curator.scan.hashing import stream_sha256

    st = source.stat()
    if (st.st_size, st.st_mtime_ns) != (record.size, record.mtime_ns) or stream_sha256(str(source)) != record.sha256:
        raise TrashError(
            f"{rel} changed on disk since kiln scanned it (size, modification time or content differ); "
            "nothing was moved: look at it again (rescan) and retry"
        )


def move_to_trash(
    root: Path, kiln_dir: Path, images: list[str], reason: str, expected: Iterable[ImageRecord] = ()
) -> TrashBatch:
    """Move ``images`` (posix paths relative to ``root``) and their caption files into a new trash batch.

    ``expected``: the index records the decision was made on; an image that no longer matches its record is
    refused (:class:`TrashError`) before anything moves. Stops at the first failure after putting back what it
    already moved (all or nothing).
    """
    root = Path(root)
    if not images:
        raise TrashError("nothing to move to the trash")
    records = {record.path: record for record in expected}
    for rel in images:
        if rel in records:
            source = root / _safe_rel(rel)
            if not source.is_file():
                raise TrashError(f"{rel}: not found (was it moved or renamed outside kiln? rescan and retry)")
            _unchanged(source, rel, records[rel])
    batch = TrashBatch(f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}", reason, time.time())
    folder = trash_root(kiln_dir) / batch.batch_id
    files_dir = folder / "files"
    moved: list[tuple[Path, Path]] = []
    try:
        for rel in images:
            source = root / _safe_rel(rel)
            if not source.is_file():
                raise TrashError(f"{rel}: not found (was it moved or renamed outside kiln? rescan and retry)")
            for path in [source, *caption_candidates(source)]:
                rel_path = path.relative_to(root).as_posix()
                target = files_dir / rel_path
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
                moved.append((path, target))
                batch.files.append(TrashedFile(rel_path, Path("files", rel_path).as_posix()))
        _write_manifest(folder, batch)
    except OSError as exc:
        for original, target in reversed(moved):
            try:
                os.replace(target, original)
            except OSError:
                pass
        if isinstance(exc, TrashError):
            raise
        raise TrashError(f"could not move to the trash ({exc}); nothing was moved") from exc
    return batch


def list_batches(kiln_dir: Path) -> list[TrashBatch]:
    """Every batch in the trash, newest first (unreadable manifests are skipped)."""
    found: list[TrashBatch] = []
    base = trash_root(kiln_dir)
    if not base.is_dir():
        return found
    for manifest in base.glob(f"*/{MANIFEST}"):
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            files = [TrashedFile(**f) for f in data.pop("files", [])]
            found.append(TrashBatch(files=files, **data))
        except (OSError, ValueError, TypeError):
            continue
    found.sort(key=lambda b: (b.created, b.batch_id), reverse=True)
    return found


def restore(root: Path, kiln_dir: Path, batch_id: str) -> list[str]:
    """Move a batch's files back where they were. Refuses (moving nothing) if any original path is now taken."""
    root = Path(root)
    folder = trash_root(kiln_dir) / batch_id
    batch = next((b for b in list_batches(kiln_dir) if b.batch_id == batch_id), None)
    if batch is None:
        raise TrashError(f"no trash batch {batch_id!r} (see the trash list for the batches there are)")
    if batch.restored:
        raise TrashError(f"trash batch {batch_id} was already restored")
    taken = [f.original for f in batch.files if (root / _safe_rel(f.original)).exists()]
    if taken:
        raise TrashError(f"cannot restore: {', '.join(taken)} exist again; move them away first")
    missing = [f.stored for f in batch.files if not (folder / f.stored).is_file()]
    if missing:
        raise TrashError(f"cannot restore: {', '.join(missing)} missing from {folder}")
    for f in batch.files:
        target = root / _safe_rel(f.original)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(folder / f.stored, target)
    batch.restored = True
    _write_manifest(folder, batch)
    return [f.original for f in batch.files]


def restore_last(root: Path, kiln_dir: Path) -> TrashBatch | None:
    """Restore the newest batch not yet restored; None when there is none."""
    for batch in list_batches(kiln_dir):
        if not batch.restored:
            restore(root, kiln_dir, batch.batch_id)
            return batch
    return None
