"""New run: pick a preset, edit the main settings (validated as you type by the trainer's TrainConfig, then by
the trainer's pre-flight, errors beside each field), see the step math for the dataset, launch (always
detached; Launch is enabled once the pre-flight of what the form shows found no problem)."""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from tui.bindings import bindings
from tui.runs.keys import NEW_RUN

NO_PRESET = "(none)"
NO_DIFFICULTY = "(not a character)"
DIFFICULTIES = ((NO_DIFFICULTY, NO_DIFFICULTY),) + tuple(
    (f"{letter}{half}", f"{letter}{half}") for letter in "ABCDEFGHI" for half in ("", "+") if letter != "I" or not half)
LENGTH_KINDS = (("epochs", "epochs"), ("steps", "steps"))


@dataclass(frozen=True)
class FormField:
    id: str
    label: str
    key: str  # dotted config key (the one errors name)
    kind: str = "text"  # text | number | select | resolution
    optional: bool = False
    help: str = ""


FIELDS: tuple[FormField, ...] = (
    FormField("name", "run name", "output.name", help="<output dir>/<name>/<name>.safetensors"),
    FormField("output_dir", "output dir", "output.dir"),
    FormField("dataset", "dataset", "dataset.path"),
    FormField("model", "base model", "model.path", help=".safetensors checkpoint or diffusers folder"),
    FormField("network_type", "network", "network.type", "select"),
    FormField("dim", "dim", "network.dim", "number"),
    FormField("alpha", "alpha", "network.alpha", "number"),
    FormField("optimizer", "optimizer", "train.optimizer", "select"),
    FormField("lr", "learning rate", "train.learning_rate", "number"),
    FormField("unet_lr", "UNet LR", "train.unet_lr", "number", optional=True, help="empty: learning rate"),
    FormField("te_lr", "text enc. LR", "train.text_encoder_lr", "number", optional=True,
              help="empty: learning rate; 0: UNet only"),
    FormField("length", "length", "train.max_epochs", "number"),
    FormField("resolution", "resolution", "dataset.resolution", "resolution", help="512 or 768,512 (w,h)"),
    FormField("buckets", "bucket sides", "dataset.min_bucket_reso", "buckets",
              help="min,max bucket side in pixels (kohya min/max_bucket_reso)"),
    FormField("batch", "batch size", "train.batch_size", "number"),
    FormField("trigger", "trigger word", "dataset.caption_prefix", optional=True,
              help="put in front of every caption"),
)
ERROR_KEYS = {f.key: f.id for f in FIELDS} | {
    "train.max_steps": "length", "model": "model", "dataset.max_bucket_reso": "buckets",
    "dataset.bucket_reso_steps": "buckets", "dataset.min_bucket_reso / max_bucket_reso": "buckets"}


def _presets() -> list[str]:
    from train.config import list_presets

    return list_presets()


def _default(section: str, key: str) -> Any:
    from train.config import TrainConfig

    model = TrainConfig.model_fields[section].annotation
    fields = getattr(model, "model_fields", {})  # each section is a pydantic model
    info = fields.get(key)
    if info is None or info.is_required():
        return None
    return info.get_default(call_default_factory=True)


def _lookup(raw: dict[str, Any], dotted: str) -> Any:
    section, key = dotted.split(".", 1)
    table = raw.get(section)
    if isinstance(table, dict) and key in table:
        return table[key]
    return _default(section, key)


def _show(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e6:
        return str(int(value)) if value >= 1 else repr(value)
    return str(value)


def last_form_path() -> Path:
    from train.runs.discover import data_dir

    return data_dir() / "last_new_run.json"


def field_for_error(line: str) -> str | None:
    """The form field an error line (``section.key: ...``) belongs to, or None (shown under the form)."""
    key = line.split(":", 1)[0].strip()
    for candidate in sorted(ERROR_KEYS, key=len, reverse=True):
        if key == candidate or key.startswith((candidate + ".", candidate + " ")):
            return ERROR_KEYS[candidate]
    return None


class NewRunScreen(ModalScreen):
    """Returns ``train.runs.control.Launched`` when a run was started, None when cancelled."""

    BINDINGS = bindings(NEW_RUN)

    DEFAULT_CSS = """
    NewRunScreen { align: center middle; }
    NewRunScreen #newrun { width: 110; max-width: 98%; height: 92%; border: thick $primary; background: $surface;
                           padding: 0 1; }
    NewRunScreen #newrun-title { text-style: bold; color: $primary; height: 1; }
    NewRunScreen #newrun-fields { height: 1fr; margin-top: 1; }
    NewRunScreen .row { height: 1; }
    NewRunScreen .row Label { width: 15; color: $text-muted; }
    NewRunScreen .row Input { width: 44; height: 1; border: none; padding: 0 1; background: $boost; }
    NewRunScreen .row Select { width: 44; height: 1; }
    NewRunScreen .row Select > SelectCurrent { border: none; height: 1; padding: 0 1; background: $boost; }
    NewRunScreen .row Input.-bad { background: $error 30%; }
    NewRunScreen .row .error { width: 1fr; color: $error; padding-left: 1; text-wrap: nowrap; text-overflow: ellipsis; }
    NewRunScreen .row .help { width: 1fr; color: $text-muted; padding-left: 1; text-wrap: nowrap; text-overflow: ellipsis; }
    NewRunScreen #length-kind { width: 14; }
    NewRunScreen #length { width: 30; }
    NewRunScreen #newrun-math { height: auto; padding: 0 1; border-top: solid $panel; }
    NewRunScreen #newrun-general { height: auto; color: $error; padding: 0 1; }
    NewRunScreen #newrun-why { height: auto; max-height: 6; padding: 0 1; color: $text-muted; }
    NewRunScreen #newrun-estimate { height: auto; max-height: 12; padding: 0 1; }
    NewRunScreen #newrun-checks { height: auto; max-height: 8; padding: 0 1; }
    NewRunScreen #newrun-buttons { height: 3; align-horizontal: right; }
    NewRunScreen Button { margin-left: 1; }
    """

    def __init__(self, dataset_path: Path | None = None, output_dir: Path | None = None,
                 preset: str | None = None) -> None:
        super().__init__()
        self.dataset_path = dataset_path
        self.output_dir = output_dir
        self.preset = preset
        self.errors: dict[str, str] = {}
        self.general: list[str] = []
        self.config: Any = None  # the validated TrainConfig, when valid
        self.raw: dict[str, Any] = {}
        self.step_text: Text = Text("")
        self.launching = False
        self._records_cache: tuple[Path, list[Any]] | None = None
        self.generation = 0  # bumped by every validation; a pre-flight result counts for its own generation only
        self.preflight_ok = False  # the pre-flight of the current form found no error
        self.findings: list[str] = []  # its problems and warnings not shown beside a field
        self.note = ""  # what the preset lost when its optimizer was replaced
        self._check_lock = threading.Lock()  # one pre-flight at a time; a stale one is skipped

    # ----- layout -------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        from train.config import BUILTIN_OPTIMIZERS
        from train.network.config import NetworkType

        presets = [(NO_PRESET, NO_PRESET)] + [(p, p) for p in _presets()]
        with Vertical(id="newrun"):
            yield Static(Text("New training run  (ctrl+o estimate · ctrl+l launch · esc cancel) — runs in the "
                              "background"), id="newrun-title")
            with VerticalScroll(id="newrun-fields"):
                with Horizontal(classes="row"):
                    yield Label("preset")
                    yield Select(presets, value=NO_PRESET, allow_blank=False, id="preset")
                    yield Static("", classes="help", id="preset-help")
                with Horizontal(classes="row"):
                    yield Label("difficulty")
                    yield Select(DIFFICULTIES, value=NO_DIFFICULTY, allow_blank=False, id="difficulty")
                    yield Static(Text("a character's category A-I (the seed's table): rank, alpha, steps, type"),
                                 classes="help", id="difficulty-help")
                for f in FIELDS:
                    with Horizontal(classes="row", id=f"row-{f.id}"):
                        yield Label(f.label)
                        if f.id == "network_type":
                            yield Select([(t, t) for t in NetworkType.__args__], value="lora",  # type: ignore[attr-defined]
                                         allow_blank=False, id=f.id)
                        elif f.id == "optimizer":
                            yield Select([(o, o) for o in BUILTIN_OPTIMIZERS], value="AdamW", allow_blank=False,
                                         id=f.id)
                        elif f.id == "length":
                            yield Select(LENGTH_KINDS, value="epochs", allow_blank=False, id="length-kind")
                            yield Input(id=f.id)
                        else:
                            yield Input(id=f.id, placeholder="optional" if f.optional else "")
                        yield Static(Text(f.help), classes="help", id=f"help-{f.id}")
            yield Static(id="newrun-math")
            yield Static(id="newrun-why")
            yield Static(id="newrun-estimate")
            yield Static(id="newrun-checks")
            yield Static(id="newrun-general")
            with Horizontal(id="newrun-buttons"):
                yield Button("Estimate (ctrl+o)", id="estimate", disabled=True)
                yield Button("Launch (ctrl+l)", variant="primary", id="launch", disabled=True)
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        saved = self._load_last()
        preset = self.preset or saved.get("preset") or ("easy" if "easy" in _presets() else NO_PRESET)
        self.fill_from_preset(preset if preset in _presets() else NO_PRESET, keep_paths=False)
        for fid in ("model", "output_dir"):
            if saved.get(fid):
                self.query_one(f"#{fid}", Input).value = saved[fid]
        dataset = self.dataset_path or getattr(self.app, "dataset_path", None)
        if dataset is not None:
            self.query_one("#dataset", Input).value = str(Path(dataset).resolve())
        elif saved.get("dataset"):
            self.query_one("#dataset", Input).value = saved["dataset"]
        app_dirs = getattr(self.app, "runs_dirs", None) or []
        out = self.output_dir or (Path(app_dirs[0]) if app_dirs else None) or (
            Path(saved["output_dir"]) if saved.get("output_dir") else Path.cwd() / "runs")
        self.query_one("#output_dir", Input).value = str(out)
        self.query_one("#name", Input).value = self._unique_name(out, self._base_name())
        self.query_one("#model", Input).focus()
        self.validate_form()

    # ----- preset and values --------------------------------------------------------------------
    def fill_from_preset(self, preset: str, keep_paths: bool = True) -> None:
        from train.config import load_preset_raw

        self.preset = None if preset == NO_PRESET else preset
        raw = load_preset_raw(self.preset) if self.preset else {}
        self.query_one("#preset", Select).value = preset
        for f in FIELDS:
            if f.id in ("name", "output_dir", "dataset", "model", "trigger") and keep_paths:
                continue
            if f.id in ("name", "output_dir", "dataset", "model", "trigger"):
                continue
            if f.id == "buckets":
                lo, hi = _lookup(raw, "dataset.min_bucket_reso"), _lookup(raw, "dataset.max_bucket_reso")
                self.query_one("#buckets", Input).value = f"{lo},{hi}"
                continue
            if f.id == "length":
                epochs = _lookup(raw, "train.max_epochs")
                kind = "epochs" if epochs else "steps"
                self.query_one("#length-kind", Select).value = kind
                self.query_one("#length", Input).value = _show(epochs or _lookup(raw, "train.max_steps"))
                continue
            value = _lookup(raw, f.key)
            widget = self.query_one(f"#{f.id}")
            if isinstance(widget, Select):
                widget.value = value
            else:
                widget.value = _show(value)  # type: ignore[attr-defined]
        if self.preset:
            from train.config import PRESET_DIR

            try:
                first = (PRESET_DIR / f"{self.preset}.toml").read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
            except (OSError, IndexError):
                first = ""
            self.query_one("#preset-help", Static).update(Text(first))
        else:
            self.query_one("#preset-help", Static).update(Text("kiln's defaults"))

    def _base_name(self) -> str:
        dataset = self.query_one("#dataset", Input).value.strip()
        stem = Path(dataset).name if dataset else "lora"
        name = re.sub(r"[^\w.\- ]+", "_", stem).strip(" ._-") or "lora"
        return name

    @staticmethod
    def _unique_name(out: Path, base: str) -> str:
        name, n = base, 2
        while (out / name).exists():
            name, n = f"{base}-{n}", n + 1
        return name

    def value(self, fid: str) -> str:
        widget = self.query_one(f"#{fid}")
        if isinstance(widget, Select):
            return str(widget.value)
        return widget.value.strip()  # type: ignore[attr-defined]

    def build_raw(self) -> dict[str, Any]:
        """The config the form describes: the preset, with the fields on top."""
        from train.config import deep_merge, drop_replaced_optimizer, load_preset_raw, parse_value

        top: dict[str, Any] = {}

        def put(dotted: str, value: Any) -> None:
            section, key = dotted.split(".", 1)
            top.setdefault(section, {})[key] = value

        for f in FIELDS:
            text = self.value(f.id)
            if f.id == "length":
                kind = self.value("length-kind")
                number = parse_value(text) if text else None
                put("train.max_epochs", number if kind == "epochs" else None)
                put("train.max_steps", number if kind == "steps" else 1600)
                continue
            if f.id == "buckets":
                parts = [parse_value(p) for p in re.split(r"[,x× ]+", text) if p]
                if len(parts) == 2:
                    put("dataset.min_bucket_reso", parts[0])
                    put("dataset.max_bucket_reso", parts[1])
                elif text:
                    put("dataset.min_bucket_reso", text)  # the validator names the problem
                continue
            if f.id == "trigger":
                if text:
                    put("dataset.caption_prefix", text + ", ")
                continue
            if not text:
                if not f.optional:
                    put(f.key, text)  # the validator says what is missing
                elif f.kind == "number":
                    put(f.key, None)  # empty means unset (e.g. UNet LR: the learning rate), not the preset's
                continue
            if f.kind == "number":
                put(f.key, parse_value(text))
            elif f.kind == "resolution":
                values = [parse_value(p) for p in re.split(r"[,x× ]+", text) if p]
                put(f.key, values[0] if len(values) == 1 else values)
            elif f.key.endswith(("path", ".dir")):
                put(f.key, str(Path(text).expanduser()))
            else:
                put(f.key, text)
        base = load_preset_raw(self.preset) if self.preset else {}
        raw = deep_merge(copy.deepcopy(base), top)
        if raw.get("train", {}).get("max_epochs") is None:
            raw["train"].pop("max_epochs", None)
        self.note = ""
        if self.preset:  # the trainer's rule: a replaced optimizer takes the preset's args and rates with it
            changed = {f"{section}.{key}" for section, table in top.items() for key, value in table.items()
                       if _lookup(base, f"{section}.{key}") != value}
            self.note = drop_replaced_optimizer(raw, base, changed, self.preset)
        return raw

    # ----- validation ---------------------------------------------------------------------------
    def validate_form(self) -> bool:
        from train.config import ConfigError, validate_raw

        self.errors, self.general, self.config = {}, [], None
        try:
            self.raw = self.build_raw()
            self.config = validate_raw(self.raw)
        except ConfigError as exc:
            for line in exc.lines:
                fid = field_for_error(line)
                if fid and fid not in self.errors:
                    message = line.split(":", 1)[1].strip() if ":" in line else line
                    # "VALUE is not allowed: what would be right" -> beside the field, the fix says it all
                    self.errors[fid] = re.sub(r"^.*? is not allowed: ", "", message, count=1)
                elif not fid:
                    self.general.append(line)
        for f in FIELDS:
            if not f.optional and not self.value(f.id):
                self.errors[f.id] = "required" + (f": {f.help}" if f.help and f.id == "model" else "")
        for fid in ("model", "dataset"):
            text = self.value(fid)
            if text and fid not in self.errors and not Path(text).expanduser().exists():
                self.errors[fid] = "no such file or folder"
        if self.config is not None and not self.errors:
            run_dir = Path(self.config.run_dir)
            if (run_dir / "events.jsonl").exists() or (run_dir / "status.json").exists():
                self.errors["name"] = f"{run_dir} already holds a run: pick another name"
        self.show_errors()
        ok = self.config is not None and not self.errors
        self.generation += 1
        self.preflight_ok = False
        self.query_one("#launch", Button).disabled = True
        self.query_one("#estimate", Button).disabled = True
        if ok:
            self.query_one("#newrun-math", Static).update(Text("step math: counting…", style="grey62"))
            self.compute_steps(self.config, self.generation)
            self.query_one("#newrun-checks", Static).update(Text("pre-flight: checking…", style="grey62"))
            self.run_preflight(self.config, self.generation)
        else:
            self.query_one("#newrun-checks", Static).update(Text(self.note, style="grey62"))
            self.query_one("#newrun-math", Static).update(Text("step math: fix the fields marked in red",
                                                               style="grey62"))
        return ok

    def show_errors(self) -> None:
        for f in FIELDS:
            message = self.errors.get(f.id)
            help_widget = self.query_one(f"#help-{f.id}", Static)
            help_widget.set_class(bool(message), "error")
            help_widget.set_class(not message, "help")
            help_widget.update(Text(message or f.help))
            try:
                self.query_one(f"#{f.id}", Input).set_class(bool(message), "-bad")
            except Exception:  # noqa: BLE001 - selects have no -bad look
                pass
        self.query_one("#newrun-general", Static).update(Text("\n".join(self.general)))

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.validate_form()

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        if event.select.id == "preset" and event.value == event.select.value \
                and str(event.value) != (self.preset or NO_PRESET):  # a user's pick, not a stale message
            self.fill_from_preset(str(event.value))
        elif event.select.id == "optimizer" and event.value == event.select.value:
            self.rates_for_optimizer(str(event.value))
        elif event.select.id == "difficulty" and event.value == event.select.value:
            self.apply_difficulty(str(event.value))
        self.validate_form()

    def rates_for_optimizer(self, optimizer: str) -> None:
        """The optimizer changed: the preset's learning rates were for its own optimizer, so the LR fields
        take the new optimizer's usual rate (UNet and text encoder rates follow it; a 0 stays: not trained)."""
        from train.config import load_preset_raw
        from train.optim import spec_of

        preset_optimizer = str(_lookup(load_preset_raw(self.preset), "train.optimizer")) if self.preset else ""
        if optimizer.lower() == preset_optimizer.lower():
            self.fill_from_preset(self.preset or NO_PRESET)
            return
        self.query_one("#lr", Input).value = _show(spec_of(optimizer).usual_lr)
        for fid in ("unet_lr", "te_lr"):
            widget = self.query_one(f"#{fid}", Input)
            if widget.value.strip() not in ("0", "0.0"):
                widget.value = ""

    def apply_difficulty(self, category: str) -> None:
        """A character difficulty was picked: the seed's rank, alpha, steps and network type go into the
        fields (train/difficulty.py), with the reasons below the form."""
        why = self.query_one("#newrun-why", Static)
        if category == NO_DIFFICULTY:
            why.update(Text(""))
            return
        from train.config import load_preset_raw
        from train.difficulty import DifficultyError, suggest

        base = load_preset_raw(self.preset) if self.preset else {}
        model = base.get("model") if isinstance(base.get("model"), dict) else {}
        sdxl = "sdxl" in (self.preset or "") or str((model or {}).get("architecture", "")).lower() == "sdxl"
        try:
            suggestion = suggest(category, sdxl=sdxl, base=base)
        except DifficultyError as exc:
            why.update(Text(str(exc), style="red"))
            return
        self.query_one("#network_type", Select).value = suggestion.network_type
        self.query_one("#dim", Input).value = _show(suggestion.rank)
        self.query_one("#alpha", Input).value = _show(suggestion.alpha)
        self.query_one("#length-kind", Select).value = "steps"
        self.query_one("#length", Input).value = str(suggestion.steps)
        text = Text(f"difficulty {category}: ", style="bold")
        text.append("; ".join([*suggestion.reasons, *suggestion.alternatives]))
        why.update(text)

    # ----- estimate -----------------------------------------------------------------------------
    def action_estimate(self) -> None:
        if not self.preflight_ok or self.config is None:
            self.app.notify("The estimate needs a config the pre-flight passed.", severity="warning", timeout=3)
            return
        self.query_one("#estimate", Button).disabled = True
        self.query_one("#newrun-estimate", Static).update(Text("estimate: starting a dry run…", style="grey62"))
        self.run_estimate(self.config, self.generation)

    @work(thread=True, exclusive=True, group="newrun-estimate")
    def run_estimate(self, cfg: Any, generation: int) -> None:
        """``kiln train --estimate`` on the form's config: a few-step dry run and one per memory lever."""
        from train.estimate import EstimateError, estimate

        def progress(line: str) -> None:
            self.app.call_from_thread(self._show_estimate, generation, Text(f"estimate: {line}…", style="grey62"))

        try:
            lines = estimate(cfg, progress=progress).lines()
            text = Text("\n".join(lines))
        except EstimateError as exc:
            text = Text(f"estimate failed: {exc}", style="yellow")
        self.app.call_from_thread(self._show_estimate, generation, text, True)

    def _show_estimate(self, generation: int, text: Text, done: bool = False) -> None:
        if not self.is_attached:
            return
        if generation != self.generation:
            text = Text("estimate of an earlier form (the fields changed since):\n", style="grey62") + text
        self.query_one("#newrun-estimate", Static).update(text)
        if done:
            self.query_one("#estimate", Button).disabled = not self.preflight_ok

    # ----- pre-flight ---------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="newrun-preflight")
    def run_preflight(self, cfg: Any, generation: int) -> None:
        """The trainer's pre-flight (what `kiln train --check` runs) on the form's config."""
        from train.preflight import full_preflight

        with self._check_lock:
            if generation != self.generation:  # typed over while the previous check ran
                return
            try:
                report, _data = full_preflight(cfg)
            except Exception as exc:  # noqa: BLE001 - a check that breaks is shown, never hides the form
                self.app.call_from_thread(self._show_preflight, generation, None, f"pre-flight failed: {exc}")
                return
        self.app.call_from_thread(self._show_preflight, generation, report, "")

    def _show_preflight(self, generation: int, report: Any, failure: str) -> None:
        if generation != self.generation:  # the form changed since: its own check is on the way
            return
        text = Text()
        self.findings = []
        if report is None:
            text.append(failure, style="yellow")
        else:
            for finding in report:
                line = "\n".join(finding.lines())
                fid = field_for_error(f"{finding.field}: {finding.problem}")
                if finding.severity == "error" and fid and fid not in self.errors:
                    self.errors[fid] = finding.problem
                    continue
                self.findings.append(line)
                text.append(("problem: " if finding.severity == "error" else "warning: ") + line + "\n",
                            style="red" if finding.severity == "error" else "yellow")
            if report.ok:
                text.append("pre-flight: OK" + (f" ({len(report.warnings)} warnings)" if report.warnings else ""),
                            style="green")
        if self.note:
            text.append("\n" + self.note, style="grey62")
        self.show_errors()
        self.query_one("#newrun-checks", Static).update(text)
        self.preflight_ok = report is not None and report.ok and not self.errors
        self.query_one("#launch", Button).disabled = not self.preflight_ok
        self.query_one("#estimate", Button).disabled = not self.preflight_ok

    # ----- step math ----------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="newrun-steps")
    def compute_steps(self, cfg: Any, generation: int) -> None:
        from curator.buckets import bucket_report
        from train.data.dataset import bucket_settings

        try:
            records = self._records(Path(cfg.dataset.path))
            report = bucket_report(records, bucket_settings(cfg.dataset))
            math = cfg.train.step_math(report.counts())  # the trainer's own step count
        except Exception as exc:  # noqa: BLE001 - step math is advisory; say why it is missing
            self.app.call_from_thread(self._show_steps, generation, Text(f"step math: {exc}", style="yellow"))
            return
        text = Text()
        text.append("step math: ", style="bold")
        text.append(f"{len(records)} images, {math.with_repeats} with repeats, batch {math.batch_size} → "
                    f"{math.batches_per_epoch} batches/epoch ({math.partial_batches} partial), "
                    f"{math.steps_per_epoch} steps/epoch")
        if math.epochs is not None and math.total_steps is not None:
            text.append(f"; {math.epochs} epochs → ")
            text.append(f"{math.total_steps} steps", style="bold")
        self.app.call_from_thread(self._show_steps, generation, text)

    def _records(self, path: Path) -> list[Any]:
        app_root = getattr(self.app, "dataset_path", None)
        model = getattr(self.app, "model", None)
        if app_root is not None and model is not None and getattr(model, "rows", None) and \
                Path(app_root).resolve() == path.resolve():
            return [row.record for row in model.rows]
        if self._records_cache and self._records_cache[0] == path:
            return self._records_cache[1]
        from curator.dataset import Dataset

        dataset = Dataset.open(path)
        dataset.scan(progress=False)
        records = dataset.images()
        self._records_cache = (path, records)
        return records

    def _show_steps(self, generation: int, text: Text) -> None:
        if generation != self.generation:  # the form changed since: its own count is on the way
            return
        self.step_text = text
        self.query_one("#newrun-math", Static).update(text)

    # ----- launch -------------------------------------------------------------------------------
    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "launch":
            self.action_launch()
        elif event.button.id == "estimate":
            self.action_estimate()
        else:
            self.action_cancel()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_launch(self) -> None:
        if self.launching:
            return
        if not self.validate_form():
            self.app.notify("Fix the fields marked in red first.", severity="warning", timeout=3)
            return
        self.launching = True
        self.query_one("#newrun-general", Static).update(Text("starting the trainer…", style="bold"))
        self._launch(self.raw, self.config)

    @work(thread=True, exclusive=True, group="newrun-launch")
    def _launch(self, raw: dict[str, Any], cfg: Any) -> None:
        from curator.fsutil import atomic_write_bytes
        from train.config import commented_config
        from train.preflight import full_preflight
        from train.runs.control import ControlError, launch_run
        from train.runs.discover import data_dir

        report, _data = full_preflight(cfg)  # what the form shows was checked (pressed before it ended)
        if not report.ok:
            self.app.call_from_thread(self._launch_failed, report.error_text())
            return
        try:
            folder = data_dir() / "launches"
            folder.mkdir(parents=True, exist_ok=True)
            config_path = folder / f"{cfg.output.name}-{time.strftime('%Y%m%d-%H%M%S')}.toml"
            atomic_write_bytes(config_path, commented_config(raw, title=f"new run {cfg.output.name}").encode())
            launched = launch_run(config_path, Path(cfg.run_dir))
        except (ControlError, OSError) as exc:
            self.app.call_from_thread(self._launch_failed, str(exc))
            return
        self._save_last()
        self.app.call_from_thread(self.dismiss, launched)

    def _launch_failed(self, message: str) -> None:
        self.launching = False
        self.general = [message]
        self.query_one("#newrun-general", Static).update(Text(message))

    # ----- remembered values --------------------------------------------------------------------
    def _load_last(self) -> dict[str, str]:
        try:
            data = json.loads(last_form_path().read_text(encoding="utf-8"))
            return {k: str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        except (OSError, json.JSONDecodeError):
            return {}

    def _save_last(self) -> None:
        from curator.fsutil import atomic_write_bytes

        data = {"preset": self.preset or NO_PRESET, "model": self.value("model"),
                "output_dir": self.value("output_dir"), "dataset": self.value("dataset")}
        try:
            last_form_path().parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(last_form_path(), json.dumps(data, indent=2).encode())
        except OSError:
            pass
