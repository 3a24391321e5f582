"""Batched tagging: images decoded and preprocessed in a thread pool while the model runs.

PIL releases the GIL while it decodes and resizes, so threads keep several cores busy without the
start-up and pickling cost of processes. Up to `prefetch` images are in flight ahead of the model, so
the next batch is ready when the current one finishes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curator.autotag.model import TaggerModel
from curator.autotag.preprocess import ImageDecodeError, load_image
from curator.autotag.thresholds import Prediction, SelectionRules, select_tags


@dataclass
class TagResult:
    """The outcome for one input: a prediction, or the reason the image was skipped."""

    index: int
    path: Path
    prediction: Prediction | None = None
    error: str | None = None
    probabilities: np.ndarray | None = None


def _load(path: Path, width: int, height: int) -> np.ndarray:
    return load_image(path, width, height)


def tag_images(
    model: TaggerModel,
    paths: Sequence[Path],
    rules: SelectionRules,
    batch_size: int = 16,
    workers: int = 4,
    on_done: Callable[[int], None] | None = None,
    keep_probabilities: bool = False,
) -> Iterator[TagResult]:
    """Yield one `TagResult` per path, in input order. A bad image yields an error result, never raises."""
    if not paths:
        return
    prefetch = max(batch_size * 2, workers * 2)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kiln-autotag") as pool:
        pending: deque[tuple[int, Future[np.ndarray]]] = deque()
        next_index = 0

        def fill() -> None:
            nonlocal next_index
            while next_index < len(paths) and len(pending) < prefetch:
                pending.append((next_index, pool.submit(_load, paths[next_index], model.width, model.height)))
                next_index += 1

        try:
            fill()
            while pending:
                batch_idx: list[int] = []
                arrays: list[np.ndarray] = []
                failed: list[TagResult] = []
                while pending and len(arrays) < batch_size:
                    i, fut = pending.popleft()
                    try:
                        arrays.append(fut.result())
                        batch_idx.append(i)
                    except ImageDecodeError as exc:
                        failed.append(TagResult(i, paths[i], error=str(exc)))
                    except Exception as exc:  # noqa: BLE001 - anything odd in one file must not stop the run
                        failed.append(TagResult(i, paths[i], error=f"{type(exc).__name__}: {exc}"))
                    fill()
                results = list(failed)
                if arrays:
                    probs = model.predict(np.stack(arrays))
                    for row, i in zip(probs, batch_idx, strict=True):
                        results.append(
                            TagResult(
                                i,
                                paths[i],
                                prediction=select_tags(row, model.labels, rules),
                                probabilities=row.copy() if keep_probabilities else None,
                            )
                        )
                results.sort(key=lambda r: r.index)
                yield from results
                if on_done is not None and results:
                    on_done(len(results))
        finally:
            for _, fut in pending:
                fut.cancel()
