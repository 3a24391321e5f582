"""Buckets view: kohya's bucket distribution as a bar chart (images and images × repeats), thin buckets
highlighted, and the step math for a batch size and a number of epochs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Checkbox, Input, Label, Static

from curator.textsafe import printable, safe_text
from tui.views.base import KilnView

if TYPE_CHECKING:
    from curator.buckets import BucketReport, BucketSettings, StepMath

BAR_CHARS = " ▏▎▍▌▋▊▉█"
UNREADABLE_LISTED = 5  # unreadable images named under the chart (the Health view lists them all)


def bar(value: float, maximum: float, width: int) -> str:
    """A horizontal bar of ``width`` cells for ``value``/``maximum`` with eighth-cell precision."""
    if maximum <= 0 or width <= 0:
        return ""
    eighths = round(value / maximum * width * 8)
    full, part = divmod(eighths, 8)
    return "█" * full + (BAR_CHARS[part] if part else "")


def chart_text(report: BucketReport, step: StepMath | None, width: int) -> Text:
    """The chart and the step math as Text (pure: easy to test)."""
    text = Text(no_wrap=True)
    buckets = report.buckets
    if not buckets:
        text.append("No usable image to bucket.", style="dim")
        _unreadable_note(text, report)
        return text
    peak = max(b.with_repeats for b in buckets) or 1
    label_w = max(len(f"{b.bucket[0]}×{b.bucket[1]}") for b in buckets)
    bar_w = max(8, width - label_w - 28)
    thin = {b.bucket for b in report.thin}
    text.append(f"{'bucket':<{label_w}}  {'images × repeats':<{bar_w}}  imgs  ×rep  share\n", style="bold")
    for b in buckets:
        is_thin = b.bucket in thin
        style = "bold yellow" if is_thin else ""
        text.append(f"{b.bucket[0]}×{b.bucket[1]}".ljust(label_w), style=style)
        text.append("  ")
        text.append(bar(b.with_repeats, peak, bar_w).ljust(bar_w), style="yellow" if is_thin else "green")
        text.append(f"  {b.images:>4}  {b.with_repeats:>4}  {b.share * 100:4.1f}%", style=style)
        if is_thin:
            text.append("  thin", style="bold yellow")
        text.append("\n")
    text.append(f"\n{len(buckets)} buckets, {len(report.thin)} thin (≤2 images: batches there repeat the same "
                f"few images)", style="dim")
    if report.upscaled:
        text.append(f"\n{len(report.upscaled)} image(s) will be upscaled", style="yellow")
    if report.unusable:
        text.append(f"\n{len(report.unusable)} image(s) fit no bucket", style="red")
    if report.reg_unused:
        text.append(f"\n{len(report.reg_unused)} regularization image(s) unused by kohya", style="dim")
    _unreadable_note(text, report)
    for note in report.settings.notes:
        text.append(f"\nnote: {note}", style="dim")
    if step is not None:
        text.append("\n\nstep math  ", style="bold")
        text.append(f"{step.with_repeats} images×repeats, batch {step.batch_size}: "
                    f"{step.batches_per_epoch} batches/epoch ({step.partial_batches} partial), "
                    f"{step.steps_per_epoch} steps/epoch")
        if step.epochs is not None and step.total_steps is not None:
            text.append(f", {step.epochs} epochs → ")
            text.append(f"{step.total_steps} steps", style="bold")
    return text


def _unreadable_note(text: Text, report: BucketReport) -> None:
    """Name the images bucketing left out (``BucketReport.unreadable``)."""
    if not report.unreadable:
        return
    text.append(f"\n{len(report.unreadable)} unreadable image(s) left out: ", style="yellow")
    shown = report.unreadable[:UNREADABLE_LISTED]
    text.append_text(safe_text(", ".join(shown), style="yellow"))
    if len(report.unreadable) > len(shown):
        text.append(f" … {len(report.unreadable) - len(shown)} more (Health view: 5)", style="yellow")


class BucketsView(KilnView):
    VIEW_ID = "buckets"
    TITLE = "Buckets"

    DEFAULT_CSS = """
    BucketsView #bucket-form { height: 1; margin-bottom: 1; }
    BucketsView #bucket-form Label { padding: 0 1 0 1; color: $text-muted; }
    BucketsView #bucket-form Input { width: 12; height: 1; border: none; padding: 0 1; background: $boost; }
    BucketsView #bucket-form Input.-invalid { background: $error 30%; }
    BucketsView #bucket-form Checkbox { height: 1; border: none; padding: 0 1; background: $surface; }
    BucketsView #bucket-error { color: $error; height: auto; display: none; padding: 0 1; }
    BucketsView #bucket-chart-scroll { height: 1fr; }
    """

    def compose(self) -> ComposeResult:
        with Horizontal(id="bucket-form"):
            yield Label("res")
            yield Input(id="res", placeholder="1024 or 1024,768")
            yield Label("batch")
            yield Input("1", id="batch", type="integer")
            yield Label("epochs")
            yield Input("10", id="epochs", type="integer")
            yield Checkbox("no upscale", id="no-upscale")
        yield Static(id="bucket-error")
        with VerticalScroll(id="bucket-chart-scroll", can_focus=True):
            yield Static(id="bucket-chart")

    def dataset_loaded(self) -> None:
        settings = self.model.bucket_settings
        if settings is not None and not self.query_one("#res", Input).value:
            w, h = settings.resolution
            self.query_one("#res", Input).value = str(w) if w == h else f"{w},{h}"
            self.query_one("#no-upscale", Checkbox).value = bool(settings.no_upscale)
        self.recompute()

    def activated(self) -> None:
        self.query_one("#bucket-chart-scroll").focus()
        self.recompute()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.recompute()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.recompute(apply_to_browser=True)

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        self.recompute(apply_to_browser=True)

    def _settings(self) -> BucketSettings:
        from curator.buckets import BucketSettings

        current = self.model.bucket_settings or BucketSettings()
        res = self.query_one("#res", Input).value.strip() or "512"
        data = current.model_dump(exclude={"notes"})
        data["resolution"] = res
        data["no_upscale"] = self.query_one("#no-upscale", Checkbox).value
        try:
            from curator.buckets import parse_resolution

            w, h = parse_resolution(res)
            data["max_bucket"] = max(data["max_bucket"], w, h)
            data["min_bucket"] = min(data["min_bucket"], w, h)
        except ValueError:
            pass
        return BucketSettings(**data)

    def recompute(self, apply_to_browser: bool = False) -> None:
        if not self.model.rows:
            self.query_one("#bucket-chart", Static).update(Text("No images yet.", style="dim"))
            return
        error = self.query_one("#bucket-error", Static)
        try:
            settings = self._settings()
            batch = int(self.query_one("#batch", Input).value or "1")
            epochs_text = self.query_one("#epochs", Input).value.strip()
            epochs = int(epochs_text) if epochs_text else None
        except ValueError as exc:
            error.update(Text(printable(_first_error(exc), keep_newlines=True)))
            error.display = True
            return
        error.display = False
        width = self.query_one("#bucket-chart-scroll").size.width or 80
        self._compute(settings, batch, epochs, width, apply_to_browser)

    @work(thread=True, exclusive=True, group="buckets")
    def _compute(self, settings: BucketSettings, batch: int, epochs: int | None, width: int,
                 apply_to_browser: bool) -> None:
        from curator.buckets import bucket_report, step_math

        records = [r.record for r in self.model.rows]  # broken files: left out and named by bucket_report
        try:
            report = bucket_report(records, settings)
            step = step_math(report, batch, epochs=epochs) if report.buckets else None
        except ValueError as exc:
            self.kiln.ui(self._show_error, _first_error(exc))
            return
        text = chart_text(report, step, width)
        self.kiln.ui(self._show, text, settings, apply_to_browser)

    def _show_error(self, message: str) -> None:
        error = self.query_one("#bucket-error", Static)
        error.update(Text(printable(message, keep_newlines=True)))  # may name a file: data, not terminal codes
        error.display = True

    def _show(self, text: Text, settings: BucketSettings, apply_to_browser: bool) -> None:
        self.query_one("#bucket-chart", Static).update(text)
        if apply_to_browser:
            self.model.rebucket(settings)  # announced: the browser's bucket column and facts follow


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
        except Exception:  # noqa: BLE001
            pass
    return str(exc)
