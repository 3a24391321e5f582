"""Buckets view: kohya's bucket distribution as a bar chart (images and images × repeats), thin buckets
highlighted, and the step math for a batch size and a number of epochs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Checkbox, Input, Label, Static

from curator.buckets import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS
from curator.textsafe import fit_text, printable, safe_text
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


THIN_MARK = "  thin"


def chart_text(report: BucketReport, step: StepMath | None, width: int) -> Text:
    """The chart and the step math as Text (pure: easy to test). Every chart row is at most ``width`` cells
    (the bar gives way first): the columns are as wide as their largest figure, and the thin mark has its room."""
    text = Text(no_wrap=True)
    buckets = report.buckets
    if not buckets:
        text.append("No usable image to bucket.", style="dim")
        _unreadable_note(text, report)
        return text
    peak = max(b.with_repeats for b in buckets) or 1
    label_w = max(len("bucket"), *(len(f"{b.bucket[0]}×{b.bucket[1]}") for b in buckets))
    imgs_w = max(len("imgs"), *(len(str(b.images)) for b in buckets))
    rep_w = max(len("×rep"), *(len(str(b.with_repeats)) for b in buckets))
    share_w = len("100.0%")
    figures_w = 2 + imgs_w + 2 + rep_w + 2 + share_w
    bar_w = max(1, width - label_w - 2 - figures_w - len(THIN_MARK))
    thin = {b.bucket for b in report.thin}
    text.append(f"{'bucket':<{label_w}}  {fit_text('images × repeats', bar_w)}  {'imgs':>{imgs_w}}  "
                f"{'×rep':>{rep_w}}  {'share':>{share_w}}\n", style="bold")
    for b in buckets:
        is_thin = b.bucket in thin
        style = "bold yellow" if is_thin else ""
        text.append(f"{b.bucket[0]}×{b.bucket[1]}".ljust(label_w), style=style)
        text.append("  ")
        text.append(bar(b.with_repeats, peak, bar_w).ljust(bar_w), style="yellow" if is_thin else "green")
        text.append(f"  {b.images:>{imgs_w}}  {b.with_repeats:>{rep_w}}  {f'{b.share * 100:.1f}%':>{share_w}}",
                    style=style)
        if is_thin:
            text.append(THIN_MARK, style="bold yellow")
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


def settings_text(settings: BucketSettings, source: str, error: str = "") -> Text:
    """The bucket settings in use, in one line, and where they come from."""
    text = Text(no_wrap=False)
    mode = "no upscale (buckets follow the images)" if settings.no_upscale else \
        f"buckets {settings.min_bucket}–{settings.max_bucket} px"
    w, h = settings.resolution
    text.append(f"{w}×{h}, {mode}, step {settings.step}", style="bold")
    text.append("  from ", style="dim")
    text.append_text(safe_text(source, style="dim"))
    if error:
        text.append("\n")
        text.append_text(safe_text(f"the dataset's own bucket options cannot be used: {error}", style="yellow"))
    return text


class BucketsView(KilnView):
    """The bucket chart of the dataset's bucket settings (``model.bucket_settings``: the train config's, the
    dataset TOML's, else kohya's defaults, as ``kiln buckets`` has them), which the form changes: enter (or the
    checkbox) makes the new settings the ones the browser's bucket column and ``bucket:`` filters use."""

    VIEW_ID = "buckets"
    TITLE = "Buckets"

    DEFAULT_CSS = """
    BucketsView .bucket-form { height: 1; }
    BucketsView #bucket-form-2 { margin-bottom: 1; }
    BucketsView .bucket-form Label { padding: 0 1 0 1; color: $text-muted; }
    BucketsView .bucket-form Input { width: 8; height: 1; border: none; padding: 0 1; background: $boost; }
    BucketsView .bucket-form Input#res { width: 12; }
    BucketsView .bucket-form Input.-invalid { background: $error 30%; }
    BucketsView .bucket-form Checkbox { height: 1; border: none; padding: 0 1; background: $surface; }
    BucketsView #bucket-source { height: auto; padding: 0 1; }
    BucketsView #bucket-error { color: $error; height: auto; display: none; padding: 0 1; }
    BucketsView #bucket-chart-scroll { height: 1fr; scrollbar-gutter: stable; }
    """

    def compose(self) -> ComposeResult:
        with Horizontal(id="bucket-form-1", classes="bucket-form"):
            yield Label("res")
            yield Input(id="res", placeholder="512 or 768,512", compact=True)
            yield Label("batch")
            yield Input(str(DEFAULT_BATCH_SIZE), id="batch", type="integer", compact=True)
            yield Label("epochs")
            yield Input(str(DEFAULT_EPOCHS), id="epochs", type="integer", compact=True)
            yield Checkbox("no upscale", id="no-upscale", compact=True)
        with Horizontal(id="bucket-form-2", classes="bucket-form"):
            yield Label("min")
            yield Input(id="min", type="integer", compact=True)
            yield Label("max")
            yield Input(id="max", type="integer", compact=True)
            yield Label("step")
            yield Input(id="step", type="integer", compact=True)
        yield Static(id="bucket-source")
        yield Static(id="bucket-error")
        with VerticalScroll(id="bucket-chart-scroll", can_focus=True):
            yield Static(id="bucket-chart")

    _filled = False
    _chart_width = 0  # the width the chart was last laid out for
    _charted_for: tuple[object, ...] | None = None  # what the last chart was computed for
    _charted_rows: object = None

    def dataset_loaded(self) -> None:
        if not self._filled and self.model.bucket_settings is not None:
            self._filled = True
            self._fill_form(self.model.bucket_settings)
            steps = self.model.train_steps
            if steps is not None:
                if steps.batch_size is not None:
                    self.query_one("#batch", Input).value = str(steps.batch_size)
                if steps.max_epochs is not None:
                    self.query_one("#epochs", Input).value = str(steps.max_epochs)
        self._show_source()
        self.recompute()

    def buckets_changed(self) -> None:
        self._show_source()

    def _fill_form(self, settings: BucketSettings) -> None:
        w, h = settings.resolution
        with self.prevent(Input.Changed, Checkbox.Changed):
            self.query_one("#res", Input).value = str(w) if w == h else f"{w},{h}"
            self.query_one("#min", Input).value = str(settings.min_bucket)
            self.query_one("#max", Input).value = str(settings.max_bucket)
            self.query_one("#step", Input).value = str(settings.step)
            self.query_one("#no-upscale", Checkbox).value = bool(settings.no_upscale)

    def _show_source(self) -> None:
        model = self.model
        if model.bucket_settings is not None:
            self.query_one("#bucket-source", Static).update(
                settings_text(model.bucket_settings, model.bucket_source, model.bucket_error))

    def activated(self) -> None:
        self.query_one("#bucket-chart-scroll").focus()
        self.recompute()

    def on_resize(self, event: events.Resize) -> None:
        """The chart is laid out for the width it has: drawn again (after the layout) when that changes."""
        self.call_after_refresh(self._rechart_if_resized)

    def _rechart_if_resized(self) -> None:
        if self.model.rows and self.query_one("#bucket-chart-scroll").scrollable_content_region.width != self._chart_width:
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
        """The settings the form holds (kohya's checks: a refused combination raises, naming the fields)."""
        from curator.buckets import BucketSettings

        current = self.model.bucket_settings or BucketSettings()

        def number(widget_id: str, fallback: int) -> int:
            value = self.query_one(f"#{widget_id}", Input).value.strip()
            return int(value) if value else fallback

        return BucketSettings(
            resolution=self.query_one("#res", Input).value.strip() or current.resolution,
            min_bucket=number("min", current.min_bucket),
            max_bucket=number("max", current.max_bucket),
            step=number("step", current.step),
            no_upscale=self.query_one("#no-upscale", Checkbox).value,
        )

    def recompute(self, apply_to_browser: bool = False) -> None:
        if not self.model.rows:
            self.query_one("#bucket-chart", Static).update(Text("No images yet.", style="dim"))
            return
        error = self.query_one("#bucket-error", Static)
        try:
            settings = self._settings()
            batch = int(self.query_one("#batch", Input).value or str(DEFAULT_BATCH_SIZE))
            epochs_text = self.query_one("#epochs", Input).value.strip()
            epochs = int(epochs_text) if epochs_text else None
        except ValueError as exc:
            error.update(Text(printable(_first_error(exc), keep_newlines=True)))
            error.display = True
            return
        error.display = False
        width = self.query_one("#bucket-chart-scroll").scrollable_content_region.width
        rows = self.model.rows
        key = (settings, batch, epochs, id(rows), len(rows), width)
        charted = self._charted_for
        if charted is not None and not apply_to_browser and charted[:-1] == key[:-1] and width in (0, charted[-1]):
            # the chart on screen is this one (showing the view again would recount 100,000 images), or the view
            # is hidden / not laid out yet (a new width re-charts it: on_resize)
            return
        self._chart_width = width
        width = width or 78  # not laid out yet: drawn again once it is
        self._charted_for, self._charted_rows = key, rows  # (the rows kept alive: their id stays theirs)
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
        self._charted_for = None
        error = self.query_one("#bucket-error", Static)
        error.update(Text(printable(message, keep_newlines=True)))  # may name a file: data, not terminal codes
        error.display = True

    def _show(self, text: Text, settings: BucketSettings, apply_to_browser: bool) -> None:
        self.query_one("#bucket-chart", Static).update(text)
        if apply_to_browser:
            self.model.rebucket(settings)  # announced: the browser's bucket column and facts follow


FORM_NAMES = {"resolution": "res", "min_bucket": "min", "max_bucket": "max", "step": "step"}


def _first_error(exc: Exception) -> str:
    """A form value kohya would refuse, in words naming the form's fields."""
    from curator.buckets import bucket_error_message

    return bucket_error_message(exc, FORM_NAMES)
