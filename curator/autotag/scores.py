"""The autotagger's probabilities, kept in the index so doubtful tags can be found later (``kiln tags suspects``).

Table ``autotag_scores``: per image path (posix, relative to the dataset root) and tag key, the probability the
model gave, which model and when. A run replaces the rows of the images it wrote; a tag no longer in the
caption is simply not asked about.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from curator.captions.tagtext import tag_key

if TYPE_CHECKING:
    from curator.index import Index

SCHEMA = """
CREATE TABLE IF NOT EXISTS autotag_scores (
    path TEXT NOT NULL,
    tag TEXT NOT NULL,             -- the tag key (curator.captions.tagtext.tag_key)
    score REAL NOT NULL,           -- the model's probability
    model TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (path, tag)
);
"""


def store(index: Index, scores: Mapping[str, Mapping[str, float]], model: str) -> None:
    """Record ``scores`` (image path -> caption tag text -> probability), replacing those images' rows."""
    index.ensure_schema(SCHEMA)
    now = time.time()
    rows = [(path, tag_key(tag), float(p), model, now) for path, tags in scores.items() for tag, p in tags.items()]
    with index.transaction() as tx:
        tx.executemany("DELETE FROM autotag_scores WHERE path = ?", [(path,) for path in scores])
        tx.executemany(
            "INSERT OR REPLACE INTO autotag_scores (path, tag, score, model, created) VALUES (?, ?, ?, ?, ?)", rows
        )


def load(index: Index, paths: Iterable[str] | None = None) -> dict[str, dict[str, float]]:
    """Image path -> tag key -> probability (every image, or just ``paths``)."""
    index.ensure_schema(SCHEMA)
    wanted = set(paths) if paths is not None else None
    out: dict[str, dict[str, float]] = {}
    for path, tag, score in index.conn.execute("SELECT path, tag, score FROM autotag_scores"):
        if wanted is None or path in wanted:
            out.setdefault(path, {})[tag] = float(score)
    return out
