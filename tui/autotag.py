"""Autotagging from the TUI: the curator's WD14 tagger run on the rows in scope, cancellable, with progress.

Adapter over ``curator.autotag`` (its ``run_autotag`` works on a whole dataset and writes); here the
predictions become ``CaptionChange``s that the bulk panel previews and applies through the journal.
The settings come from the autotag dialog (``tui/widgets/autotag_dialog.py``), which starts from the last
ones used (TUI preferences) and ``KILN_AUTOTAG_MODEL``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tui.config import TuiPrefs

REMEMBERED = (
    "general_threshold", "character_threshold", "general_mcut", "character_mcut", "ratings", "exclude",
    "keep_underscores", "character_first", "max_tags", "prefix", "prefix_from_folder", "mode", "device",
)


def initial_settings(prefs: TuiPrefs) -> dict[str, Any]:
    """The dialog's starting values: the last settings used, the model from ``KILN_AUTOTAG_MODEL`` or the
    last one used."""
    settings = {k: v for k, v in (prefs.autotag or {}).items() if k in REMEMBERED}
    settings["model"] = os.environ.get("KILN_AUTOTAG_MODEL") or prefs.autotag_model or ""
    return settings


def remember(prefs: TuiPrefs, config: Any) -> None:
    """Keep ``config``'s settings in ``prefs`` for the next run (the caller saves them)."""
    data = config.model_dump(include=set(REMEMBERED))
    prefs.autotag = {k: v for k, v in data.items() if v is not None}
    prefs.autotag_model = config.model


def run_autotag(config: Any, rows: list[Any], progress: Callable[[int, int], None],
                cancel: threading.Event) -> list[Any]:
    """Tag ``rows`` per ``config`` (``curator.autotag.config.AutotagConfig``) and return the caption changes
    (nothing written). Stops early when ``cancel`` is set."""
    from curator.autotag.captioning import plan_caption
    from curator.autotag.model import TaggerModel, resolve_model
    from curator.autotag.pipeline import tag_images
    from curator.autotag.runner import prefix_for
    from curator.captions.files import caption_target
    from curator.tags.journal import CaptionChange

    tagger = TaggerModel.load(resolve_model(config.model), device=config.device)
    rules = config.rules()
    todo = [r for r in rows if config.mode != "missing" or not r.tags]
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
            plan = plan_caption(row.caption_raw, result.prediction.tags, config.mode, prefix_for(config, row.record))
            if plan.after is not None:
                changes.append(CaptionChange(caption_path=caption_target(row.record), before=row.caption_raw,
                                             after=plan.after))
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()
    return changes
