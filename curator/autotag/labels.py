"""`selected_tags.csv` (SmilingWolf layout): tag_id,name,category,count, one row per model output."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CATEGORY_GENERAL = 0
CATEGORY_CHARACTER = 4
CATEGORY_RATING = 9

REQUIRED_COLUMNS = ("name", "category")


class LabelsError(ValueError):
    """selected_tags.csv is missing, unreadable or not in the expected layout."""


@dataclass(frozen=True)
class Labels:
    """Tag names and categories in model-output order, with index arrays per category."""

    names: list[str]
    categories: np.ndarray  # int, one per output
    rating: np.ndarray  # indices of rating outputs (category 9)
    character: np.ndarray  # indices of character outputs (category 4)
    general: np.ndarray  # every other output (category 0 and any unknown category)

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_names(cls, names: list[str], categories: list[int]) -> Labels:
        cats = np.asarray(categories, dtype=np.int64)
        idx = np.arange(len(names))
        return cls(
            names=list(names),
            categories=cats,
            rating=idx[cats == CATEGORY_RATING],
            character=idx[cats == CATEGORY_CHARACTER],
            general=idx[(cats != CATEGORY_RATING) & (cats != CATEGORY_CHARACTER)],
        )


def load_labels(path: Path) -> Labels:
    """Read selected_tags.csv; every problem is a `LabelsError` naming the file, row and fix."""
    path = Path(path)
    if not path.is_file():
        raise LabelsError(f"{path}: tag list not found (a WD14 model folder needs selected_tags.csv next to model.onnx)")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelsError(f"{path}: cannot read the tag list as UTF-8 text ({exc})") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise LabelsError(
            f"{path}: not a WD14 selected_tags.csv: header is {header or 'empty'}, "
            f"missing column(s) {missing}; expected tag_id,name,category,count"
        )
    reader.fieldnames = header
    names: list[str] = []
    categories: list[int] = []
    for line_no, row in enumerate(reader, start=2):
        name = (row.get("name") or "").strip()
        raw_cat = (row.get("category") or "").strip()
        if not name:
            raise LabelsError(f"{path}: line {line_no}: empty tag name")
        try:
            categories.append(int(raw_cat))
        except ValueError:
            raise LabelsError(f"{path}: line {line_no}: category {raw_cat!r} is not an integer") from None
        names.append(name)
    if not names:
        raise LabelsError(f"{path}: the tag list has a header but no tags")
    return Labels.from_names(names, categories)
