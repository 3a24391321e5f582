"""Fold a run's events into what a display shows: progress, speed, losses, saves, samples, a log.

The same tracker serves the foreground display of ``kiln train`` (events from the trainer's callback), ``kiln
watch`` (events tailed from ``events.jsonl``) and the TUI.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from curator.textsafe import printable
from train.rundir import Event

LOG_LINES = 200
MAX_POINTS = 20000  # loss points kept; older ones are thinned (every other point) beyond this


@dataclass
class LogLine:
    t: float
    kind: str  # the event type
    text: str


@dataclass
class RunTracker:
    name: str = ""
    run_dir: str = ""
    phase: str = ""
    phase_done: int | None = None
    phase_total: int | None = None
    started_at: float | None = None  # first event of the run
    segment_started_at: float | None = None  # last start event (a resume starts a segment)
    total_steps: int | None = None
    epochs: int | None = None
    steps_per_epoch: int | None = None
    resumed_step: int = 0
    images: int | None = None
    batch_size: int | None = None
    device: str = ""
    pid: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    step: int = 0
    epoch: int = 0
    loss: float | None = None
    avg_loss: float | None = None
    lr: list[float] = field(default_factory=list)
    it_s: float | None = None
    eta_s: float | None = None
    mem_mb: float | None = None
    last_t: float | None = None  # time of the newest event
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)  # validation loss points (validation events)
    val_losses: list[float] = field(default_factory=list)
    saves: list[str] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    warnings: int = 0
    ended: bool = False
    end_reason: str = ""
    end_message: str = ""
    outputs: list[str] = field(default_factory=list)
    log: deque[LogLine] = field(default_factory=lambda: deque(maxlen=LOG_LINES))

    def feed(self, event: Event) -> None:
        """Take one event (in file order)."""
        kind = event.get("type", "")
        t = _num(event.get("t"))
        if t is not None:
            self.last_t = t
            if self.started_at is None:
                self.started_at = t
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            try:
                handler(event)
            except (KeyError, TypeError, ValueError):
                pass  # a malformed event is skipped, never fatal to a display
        line = describe_event(event, names_only=True)
        if line and kind != "step":
            self.log.append(LogLine(t or time.time(), kind, printable(line)))

    def feed_all(self, events: list[Event]) -> None:
        for event in events:
            self.feed(event)

    # -- handlers ----------------------------------------------------------------------------------------
    def _on_phase(self, e: Event) -> None:
        self.phase = str(e.get("phase", ""))
        self.phase_done, self.phase_total = e.get("done"), e.get("total")
        if self.ended:  # a new process appended to a run that had ended: it is going again
            self._restart()

    def _on_start(self, e: Event) -> None:
        if self.ended:
            self._restart()
        self.name = str(e.get("name") or self.name)
        self.run_dir = str(e.get("run_dir") or self.run_dir)
        self.total_steps = e.get("total_steps")
        self.epochs = e.get("epochs")
        self.steps_per_epoch = e.get("steps_per_epoch")
        self.resumed_step = int(e.get("resumed_step") or 0)
        self.images, self.batch_size = e.get("images"), e.get("batch_size")
        self.device = str(e.get("device", ""))
        self.pid = e.get("pid")
        config = e.get("config")
        self.config = config if isinstance(config, dict) else {}
        self.segment_started_at = _num(e.get("t"))
        self.phase = "training"
        self.phase_done = self.phase_total = None
        self.step = self.resumed_step
        # Steps after the resumed one were lost (the run died or stopped before saving them): drop them.
        keep = next((i for i, s in enumerate(self.steps) if s > self.resumed_step), len(self.steps))
        del self.steps[keep:], self.losses[keep:]
        keep = next((i for i, s in enumerate(self.val_steps) if s > self.resumed_step), len(self.val_steps))
        del self.val_steps[keep:], self.val_losses[keep:]
        self.it_s = self.eta_s = None

    def _on_step(self, e: Event) -> None:
        self.step = int(e["step"])
        self.total_steps = e.get("total_steps", self.total_steps)
        self.epoch = int(e.get("epoch", self.epoch))
        self.loss = _num(e.get("loss"))
        self.avg_loss = _num(e.get("avg_loss"))
        self.lr = [float(v) for v in e.get("lr") or []]
        self.it_s = _num(e.get("it_s"))
        self.eta_s = _num(e.get("eta_s"))
        self.mem_mb = _num(e.get("mem_mb"))
        if self.loss is not None:
            if self.steps and self.step <= self.steps[-1]:  # a replayed segment: keep the newest values
                keep = next(i for i, s in enumerate(self.steps) if s >= self.step)
                del self.steps[keep:], self.losses[keep:]
            self.steps.append(self.step)
            self.losses.append(self.loss)
            if len(self.steps) > MAX_POINTS:
                self.steps[:] = self.steps[::2]
                self.losses[:] = self.losses[::2]

    def _on_validation(self, e: Event) -> None:
        step, loss = int(e["step"]), _num(e.get("loss"))
        if loss is None:
            return
        keep = next((i for i, s in enumerate(self.val_steps) if s >= step), len(self.val_steps))
        del self.val_steps[keep:], self.val_losses[keep:]
        self.val_steps.append(step)
        self.val_losses.append(loss)

    @property
    def val_loss(self) -> float | None:
        """The latest validation loss (None without a validation split)."""
        return self.val_losses[-1] if self.val_losses else None

    def _on_epoch(self, e: Event) -> None:
        self.epoch = int(e.get("epoch", self.epoch))

    def _on_save(self, e: Event) -> None:
        if e.get("kind") != "state":
            self.saves.append(str(e["path"]))

    def _on_sample(self, e: Event) -> None:
        self.samples.append(str(e["path"]))

    def _on_warning(self, e: Event) -> None:
        self.warnings += 1

    def _on_end(self, e: Event) -> None:
        self.ended = True
        self.end_reason = str(e.get("reason", ""))
        self.end_message = str(e.get("message", "") or "")
        self.outputs = [str(p) for p in e.get("outputs") or []]
        if e.get("step") is not None:
            self.step = int(e["step"])
        self.it_s = self.eta_s = None
        self.phase = {"finished": "finished", "stopped": "stopped"}.get(self.end_reason, "failed")

    def _restart(self) -> None:
        self.ended = False
        self.end_reason = self.end_message = ""

    def copy(self) -> RunTracker:
        """An independent copy (lists copied, values shared): cheap enough to hand to a UI thread."""
        import copy

        dup = copy.copy(self)
        dup.lr, dup.steps, dup.losses = list(self.lr), list(self.steps), list(self.losses)
        dup.val_steps, dup.val_losses = list(self.val_steps), list(self.val_losses)
        dup.saves, dup.samples, dup.config = list(self.saves), list(self.samples), dict(self.config)
        dup.outputs = list(self.outputs)
        dup.log = deque(self.log, maxlen=LOG_LINES)
        return dup

    # -- derived -------------------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """running | finished | stopped | failed | starting (from the events alone; see state.py for dead)."""
        if self.ended:
            return self.phase
        return "running" if self.segment_started_at is not None and self.phase == "training" else "starting"

    @property
    def fraction(self) -> float | None:
        if not self.total_steps:
            return None
        return max(0.0, min(1.0, self.step / self.total_steps))

    @property
    def last_save(self) -> str | None:
        return self.saves[-1] if self.saves else None

    @property
    def last_sample(self) -> str | None:
        return self.samples[-1] if self.samples else None

    def elapsed(self, now: float | None = None, active: bool | None = None) -> float | None:
        """Seconds since the run (first event) started; once it is over (``active`` False, or an end event),
        up to its last event."""
        if self.started_at is None:
            return None
        over = self.ended if active is None else not active
        end = self.last_t if over and self.last_t else (now or time.time())
        return max(0.0, end - self.started_at)


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """TensorBoard's debiased exponential moving average (weight 0 = raw)."""
    out: list[float] = []
    last = 0.0
    for n, v in enumerate(values, 1):
        last = last * weight + (1 - weight) * v
        out.append(last / (1 - weight**n))
    return out


def smoothing_weight(n_points: int) -> float:
    """A smoothing that suits the length of the curve: light for a few points, heavier for thousands."""
    if n_points < 20:
        return 0.6
    if n_points < 200:
        return 0.85
    if n_points < 2000:
        return 0.95
    return 0.98


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(max(0, seconds))
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    if d:
        return f"{d}d {h}h{m:02d}m"
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt_loss(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def fmt_lr(values: list[float]) -> str:
    if not values:
        return "—"
    unique = list(dict.fromkeys(f"{v:.2e}" for v in values))
    return " / ".join(unique)


def fmt_mem(mb: float | None) -> str:
    if mb is None:
        return "—"
    return f"{mb / 1024:.1f} GiB" if mb >= 1024 else f"{mb:.0f} MiB"


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def describe_event(event: Event, *, names_only: bool = False) -> str | None:
    """One line of words for an event (None for an unknown or malformed event). ``names_only``: saved files and
    samples by file name, not path (a log under a run whose folder is known); otherwise full paths (the plain
    output of ``kiln train`` and train.log)."""
    from pathlib import PurePath

    def shown(path: object) -> str:
        return PurePath(str(path)).name if names_only else str(path)

    kind = event.get("type")
    try:
        if kind == "start":
            resumed = f", resumed at step {event['resumed_step']}" if event.get("resumed_step") else ""
            where = "" if names_only else f" -> {event.get('run_dir', '')}"
            return (f"training {event.get('name', '')}: {event['total_steps']} steps, {event['epochs']} epochs, "
                    f"{event.get('images', '?')} images, batch {event.get('batch_size', '?')}{resumed}{where}")
        if kind == "phase":
            done, total = event.get("done"), event.get("total")
            return f"{event['phase']}" + (f" {done}/{total}" if total else "")
        if kind == "schedule":
            scale = f" x{event['lr_scale']:g}" if event.get("lr_scale", 1) != 1 else ""
            return (f"schedule phase {event['phase']}/{event['phases']}: {event['lr_scheduler']}{scale}, steps "
                    f"{event['first_step']}-{event['last_step']}")
        if kind == "step":
            lr = ", ".join(f"{v:.2e}" for v in event.get("lr", []))
            return (f"step {event['step']}/{event.get('total_steps', '?')} epoch {event['epoch']} "
                    f"loss {event['loss']:.4f} avg {event['avg_loss']:.4f} lr {lr} {event['it_s']:.2f} it/s "
                    f"eta {fmt_duration(event.get('eta_s'))}")
        if kind == "validation":
            return (f"validation loss {event['loss']:.4f} at step {event['step']} ({event.get('images', '?')} "
                    "held-out images)")
        if kind == "epoch":
            return f"epoch {event['epoch']} done (avg loss {event.get('avg_loss', float('nan')):.4f})"
        if kind == "save":
            what = "state" if names_only and event.get("kind") == "state" else shown(event["path"])
            return f"saved {what} (step {event.get('step', '?')})"
        if kind == "sample":
            return f"sample {shown(event['path'])}"
        if kind == "warning":
            return f"warning: {event['message']}"
        if kind == "error":
            return f"error: {event['message']}"
        if kind == "end":
            outputs = [shown(p) for p in event.get("outputs") or []]
            if names_only:
                listed = ", ".join(outputs[-2:]) + (f" (+{len(outputs) - 2})" if len(outputs) > 2 else "")
            else:
                listed = ", ".join(outputs)
            return f"{event.get('reason', 'ended')} at step {event.get('step', '?')}: {listed or 'nothing saved'}"
    except (KeyError, TypeError, ValueError):
        return None
    return None
