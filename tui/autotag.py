"""Autotagging from the TUI: the curator's WD14 tagger run on the rows in scope, cancellable, with progress.

Adapter over ``curator.autotag`` (its ``run_autotag`` works on a whole dataset and writes); here the
predictions become ``CaptionChange``s that the bulk panel previews and applies through the journal.
The model comes from ``KILN_AUTOTAG_MODEL`` or the TUI preferences (a folder with model.onnx +
selected_tags.csv, or a cached Hugging Face repo id).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tui.config import load_prefs


def autotag_model_spec() -> str | None:
    return os.environ.get("KILN_AUTOTAG_MODEL") or getattr(load_prefs(), "autotag_model", None)


def autotag_available() -> tuple[bool, str]:
    """(ready, reason): the tagger package and a model must be there."""
    try:
        import curator.autotag.config  # noqa: F401
    except ImportError as exc:
        return False, f"autotagging is not available: {exc}"
    if not autotag_model_spec():
        return False, ("no tagger model set: export KILN_AUTOTAG_MODEL=/path/to/wd14-folder (model.onnx + "
                       "selected_tags.csv) or a cached Hugging Face repo id, then retry")
    return True, ""


def run_autotag(model: Any, rows: list[Any], progress: Callable[[int, int], None],
                cancel: threading.Event, mode: str = "missing") -> list[Any]:
    """Tag ``rows`` and return the caption changes (nothing written). Stops early when ``cancel`` is set."""
    from curator.autotag.captioning import plan_caption
    from curator.autotag.config import AutotagConfig
    from curator.autotag.model import TaggerModel, resolve_model
    from curator.autotag.pipeline import tag_images
    from curator.tags.journal import CaptionChange
    from tui.model import caption_target_for

    config = AutotagConfig(model=autotag_model_spec() or "", mode=mode)
    tagger = TaggerModel.load(resolve_model(config.model), device=config.device)
    rules = config.rules()
    todo = [r for r in rows if mode != "missing" or not r.tags]
    total = len(todo)
    done = 0
    progress(0, total)

    def on_done(n: int) -> None:
        nonlocal done
        done += n
        progress(done, total)

    changes = []
    results = tag_images(tagger, [Path(r.abs_path) for r in todo], rules, config.batch_size, config.workers, on_done)
    try:
        for result in results:
            if cancel.is_set():
                break
            if result.prediction is None:
                continue
            row = todo[result.index]
            plan = plan_caption(row.caption_raw, result.prediction.tags, mode, list(config.prefix))
            if plan.after is not None:
                changes.append(CaptionChange(caption_path=caption_target_for(row.record), before=row.caption_raw,
                                             after=plan.after))
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()
    return changes
