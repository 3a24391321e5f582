"""Natural-language captions from the TUI: the curator's captioner (``curator.caption``) run on the rows in
scope, in the background, cancellable, with progress.

The captions become ``CaptionChange``s that the bulk panel previews and applies through the journal (one entry,
``u`` undoes it), like autotagging. The settings come from the caption dialog
(``tui/widgets/caption_dialog.py``), which starts from the last ones used (TUI preferences) and
``KILN_CAPTION_MODEL``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from tui.config import TuiPrefs

if TYPE_CHECKING:
    from curator.caption.config import CaptionConfig
    from curator.caption.runner import CaptionPlan
    from curator.tags.items import CaptionItem

REMEMBERED = (
    "model", "mode", "extension", "prompt", "prefix", "prefix_from_folder", "max_new_tokens", "num_beams",
    "batch_size", "device", "force",
)  # fmt: skip


def initial_settings(prefs: TuiPrefs) -> dict[str, object]:
    """The dialog's starting values: the last settings used; the model from ``KILN_CAPTION_MODEL`` first."""
    settings = {k: v for k, v in prefs.caption.items() if k in REMEMBERED}
    env = os.environ.get("KILN_CAPTION_MODEL")
    if env:
        settings["model"] = env
    return settings


def remember(prefs: TuiPrefs, config: CaptionConfig) -> None:
    """Keep ``config``'s settings in ``prefs`` for the next run (the caller saves them)."""
    data = config.model_dump(include=set(REMEMBERED))
    prefs.caption = {k: v for k, v in data.items() if v is not None}


def run_caption(
    config: CaptionConfig,
    items: Iterable[CaptionItem],
    root: Path,
    progress: Callable[[int, int], None],
    cancel: threading.Event,
) -> CaptionPlan:
    """Load the model and caption ``items`` per ``config``; nothing is written. Stops after the current batch
    when ``cancel`` is set."""
    from curator.caption.model import Captioner, resolve_model
    from curator.caption.runner import caption_items

    captioner = Captioner.load(resolve_model(config.model), device=config.device, dtype=config.dtype,
                               name=config.model)  # fmt: skip
    done = 0

    def start(total: int, _completed: int) -> Callable[[int], None]:
        progress(0, total)

        def advance(n: int) -> None:
            nonlocal done
            done += n
            progress(done, total)

        return advance

    return caption_items(list(items), root, config, captioner, start, cancel)
