"""Per-image loss ranking: which training images the model fits worst (or best).

A sample's loss depends far more on its noise timestep than on its image (eps-prediction losses fall by an
order of magnitude from t=50 to t=950), and the whole run's loss level falls as it trains; raw losses compare
neither across images nor across the run. So each sample's loss is divided by the *expected loss at its
timestep at that moment*, with the two factors estimated apart over the run (in logs):

* the timestep profile f(t): the mean of log(loss) - level over every sample so far, in 20 timestep bins
  (neighbours pooled while a bin is empty): the shape of loss-versus-timestep changes slowly, so it is
  estimated from the whole run and is precise;
* the level: a short moving average (about the last 16 samples, any image) of log(loss) - f(t): it follows
  the run's falling loss closely, so an image drawn late is compared with the model as it is then.

A sample's ratio is exp(log(loss) - f(t) - level) with both factors taken before the sample is added. An
image's score is the geometric mean of its last 8 ratios: about 1 for a typical image, well above 1 for one the
model cannot fit (a wrong caption, a broken or noise image, the one element that "appears everywhere"), below
1 for the easiest. (Offline on a tiny-model run this split separated a planted noise image from the rest three
times better than one running mean per timestep bin.)

Why not fixed-timestep probes? They cost extra forward passes over every image; the ratios come free from the
training step and, averaged over an image's draws, compare images as well. (The validation loss in
train/validation.py is the fixed-timestep measurement.)

The loop feeds :meth:`ImageLosses.add_step`; the main process writes ``image_losses.json`` into the run
directory at every epoch end and at the end (format in docs/RUNS.md); ``kiln runs RUN --hardest`` and the TUI
read it with :func:`read_image_losses` / :func:`rank_images`. Pure Python.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curator.fsutil import atomic_write_bytes

IMAGE_LOSSES = "image_losses.json"
FORMAT = 1
BINS = 20
RECENT = 8
LEVEL_SAMPLES = 16  # the level's moving average spans about this many samples
PROFILE_SAMPLES = 512  # a bin's profile mean turns into a moving average past this many samples


@dataclass
class ImageEntry:
    """One training image: where it is, its caption, how often it was drawn and its last draws as
    ``[step, timestep, loss, ratio or None]``."""

    path: str
    caption: str
    is_reg: bool = False
    draws: int = 0
    recent: deque[list[float | int | None]] = field(default_factory=lambda: deque(maxlen=RECENT))

    @property
    def score(self) -> float | None:
        """The geometric mean of the recent loss ratios (None before any)."""
        return geometric_mean([r[3] for r in self.recent])


def geometric_mean(ratios: Sequence[object]) -> float | None:
    logs = [math.log(float(r)) for r in ratios if isinstance(r, int | float) and not isinstance(r, bool) and r > 0]
    return math.exp(sum(logs) / len(logs)) if logs else None


class ImageLosses:
    """The running per-image record of a run (main process only)."""

    def __init__(self, images: list[tuple[str, str, bool]], *, num_timesteps: int = 1000) -> None:
        self.entries = [ImageEntry(path=p, caption=c, is_reg=r) for p, c, r in images]
        self.num_timesteps = num_timesteps
        self.profile = [0.0] * BINS  # mean of log(loss) - level per timestep bin
        self.counts = [0] * BINS
        self.level: float | None = None
        self.step = 0

    def _bin(self, timestep: int) -> int:
        return min(BINS - 1, max(0, int(timestep) * BINS // self.num_timesteps))

    def expected_log(self, timestep: int) -> float | None:
        """log of the expected loss at ``timestep`` now (None before the first samples)."""
        if self.level is None:
            return None
        b = self._bin(timestep)
        for width in range(BINS):
            near = [i for i in range(max(0, b - width), min(BINS, b + width + 1)) if self.counts[i]]
            if near:
                return self.level + sum(self.profile[i] for i in near) / len(near)
        return None

    def add_step(self, step: int, samples: list[tuple[int, int, float]]) -> None:
        """The samples of optimizer step ``step``: ``(image index, timestep, loss)`` each."""
        kept = [(i, int(t), float(v)) for i, t, v in samples
                if 0 <= i < len(self.entries) and math.isfinite(v) and v > 0]
        if not kept:
            return
        # ratios against the factors as they were before this step
        for index, timestep, loss in kept:
            expected = self.expected_log(timestep)
            ratio = math.exp(math.log(loss) - expected) if expected is not None else None
            entry = self.entries[index]
            entry.draws += 1
            entry.recent.append([int(step), timestep, loss, ratio])
        self._update(kept)
        self.step = max(self.step, int(step))

    def _update(self, samples: list[tuple[int, int, float]]) -> None:
        """Move the level towards this step's samples, then add them to the timestep profile."""
        residuals = []
        for _, timestep, loss in samples:
            b = self._bin(timestep)
            near = [i for w in range(BINS) for i in range(max(0, b - w), min(BINS, b + w + 1)) if self.counts[i]]
            shape = self.profile[near[0]] if near else 0.0
            residuals.append(math.log(loss) - (self.profile[b] if self.counts[b] else shape))
        mean = sum(residuals) / len(residuals)
        weight = min(1.0, 2 * len(samples) / (LEVEL_SAMPLES + 1))
        self.level = mean if self.level is None else (1 - weight) * self.level + weight * mean
        for _, timestep, loss in samples:
            b = self._bin(timestep)
            self.counts[b] += 1
            n = min(self.counts[b], PROFILE_SAMPLES)
            self.profile[b] += (math.log(loss) - self.level - self.profile[b]) / n

    # -- persistence ----------------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "step": self.step, "num_timesteps": self.num_timesteps,
            "profile": self.profile, "counts": self.counts, "level": self.level,
            "images": [{"path": e.path, "caption": e.caption, "is_reg": e.is_reg, "draws": e.draws,
                        "score": e.score, "recent": list(e.recent)} for e in self.entries],
        }

    def write(self, run_dir: Path) -> None:
        data = json.dumps(self.to_json(), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        atomic_write_bytes(Path(run_dir) / IMAGE_LOSSES, data.encode("utf-8"))

    def restore(self, run_dir: Path, *, up_to_step: int) -> None:
        """Continue the record a stopped run wrote (resume): draws after ``up_to_step`` were lost with the
        steps after the state and are dropped; the factors are rebuilt from the kept draws in step order."""
        data = read_image_losses(run_dir)
        if data is None:
            return
        by_path = {e.path: (n, e) for n, e in enumerate(self.entries)}
        replay: dict[int, list[tuple[int, int, float]]] = {}
        for image in data.get("images", []):
            found = by_path.get(str(image.get("path")))
            if found is None:
                continue
            index, entry = found
            recent = [r for r in image.get("recent", []) if isinstance(r, list) and len(r) == 4]
            kept = [r for r in recent if int(r[0]) <= up_to_step]
            entry.draws = max(0, int(image.get("draws", 0)) - (len(recent) - len(kept)))
            entry.recent.extend(kept)
            for step, timestep, loss, _ in kept:
                replay.setdefault(int(step), []).append((index, int(timestep), float(loss)))
        for step in sorted(replay):
            self._update(replay[step])
        self.step = min(int(data.get("step", 0)), up_to_step)


def run_dataset_root(run_dir: Path) -> Path | None:
    """The dataset folder a run trained on (from its config.toml): the folder the image paths are relative
    to (a kohya dataset TOML's common root). None when the config cannot tell."""
    import tomllib

    try:
        config = tomllib.loads((Path(run_dir) / "config.toml").read_text(encoding="utf-8"))
        path = Path(config["dataset"]["path"])
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        return None
    if path.suffix.lower() == ".toml":
        from curator.layout import LayoutError, load_layout

        try:
            return load_layout(path).root
        except LayoutError:
            return None
    return path


def read_image_losses(run_dir: Path) -> dict[str, Any] | None:
    """A run's ``image_losses.json`` (None when there is none or it is unreadable)."""
    try:
        data = json.loads((Path(run_dir) / IMAGE_LOSSES).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("images"), list) else None


@dataclass(frozen=True)
class RankedImage:
    """One row of a ranking: 1-based ``rank``, the score (x typical), draws, the image and its caption."""

    rank: int
    score: float
    draws: int
    path: str
    caption: str
    is_reg: bool


def rank_images(data: dict[str, Any], *, easiest: bool = False, min_draws: int = 2,
                include_reg: bool = False) -> list[RankedImage]:
    """Images by score, hardest first (``easiest``: lowest first); images drawn fewer than ``min_draws``
    times with a ratio are left out (their score says too little yet)."""
    rows = []
    for image in data.get("images", []):
        if not isinstance(image, dict) or (image.get("is_reg") and not include_reg):
            continue
        ratios = [r[3] for r in image.get("recent", []) if isinstance(r, list) and len(r) == 4
                  and isinstance(r[3], int | float) and r[3] > 0]
        score = geometric_mean(ratios)
        if score is None or len(ratios) < min_draws:
            continue
        rows.append((score, int(image.get("draws", 0)), str(image.get("path", "")), str(image.get("caption", "")),
                     bool(image.get("is_reg"))))
    rows.sort(key=lambda r: (r[0], r[2]) if easiest else (-r[0], r[2]))
    return [RankedImage(rank=i + 1, score=s, draws=d, path=p, caption=c, is_reg=reg)
            for i, (s, d, p, c, reg) in enumerate(rows)]
