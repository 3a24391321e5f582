"""The grid browser: a finished run's LoRA test grid (`kiln lora grid`'s JSON index) in the terminal, one image
at a time with the curator's preview. Saved epochs go up and down, strengths left and right (strength 0 is the
base model's own image, the control), ``[`` ``]`` the prompts, ``b`` the base checkpoints, ``p`` the block
presets, ``c`` flips between the image and its control, ``s`` shows the whole contact sheet."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Static

from curator.textsafe import printable
from train.lora.gridindex import GridCell, GridIndex
from tui.bindings import bindings
from tui.runs.keys import GRID_BROWSER
from tui.state import GridCursor
from tui.widgets.preview import ImagePreview


def strength_label(value: float) -> str:
    return "0 (control)" if value == 0 else f"{value:g}"


class GridBrowser(Screen[None]):
    """Browse ``index``; ``cursor`` is the cell shown (tests read it)."""

    BINDINGS = bindings(GRID_BROWSER)

    DEFAULT_CSS = """
    GridBrowser { layout: vertical; }
    GridBrowser #grid-title { height: 1; text-style: bold; color: $primary; padding: 0 1; }
    GridBrowser #grid-strengths { height: 1; padding: 0 1; }
    GridBrowser #grid-body { height: 1fr; }
    GridBrowser #grid-epochs { width: 30; min-width: 20; border-right: solid $panel; padding: 0 1; }
    GridBrowser #grid-image { width: 1fr; }
    GridBrowser #grid-cell { height: 2; padding: 0 1; color: $text-muted; }
    GridBrowser #grid-hint { height: 1; padding: 0 1; color: $text-muted; }
    """

    def __init__(self, index: GridIndex, protocol: str = "halfblock") -> None:
        super().__init__()
        self.index = index
        self.protocol = protocol
        self.cursor = GridCursor((len(index.bases), len(index.loras), len(index.presets), len(index.strengths),
                                  len(index.prompts)))
        self.cursor = self.cursor.placed("strength", min(1, len(index.strengths) - 1))  # the first LoRA strength
        self.previous_strength = self.cursor.at("strength")
        self.sheet = False

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(id="grid-title")
            yield Static(id="grid-strengths")
            with Horizontal(id="grid-body"):
                yield Static(id="grid-epochs")
                yield ImagePreview(self.protocol, id="grid-image")
            yield Static(id="grid-cell")
            yield Static(Text("↑↓ epoch · ←→ strength · [ ] prompt · b base · p blocks · c control · s sheet · "
                              "esc close"), id="grid-hint")

    def on_mount(self) -> None:
        self.call_after_refresh(self.refresh_view)

    # ----- what is shown ------------------------------------------------------------------------
    def current(self) -> GridCell | None:
        c = self.cursor
        return self.index.cell(c.at("base"), c.at("lora"), c.at("preset"), c.at("strength"), c.at("prompt"))

    def refresh_view(self) -> None:
        index, c = self.index, self.cursor
        base = printable(index.bases[c.at("base")].rsplit("/", 1)[-1])
        title = Text(f"grid {printable(index.path.name)} · base {base} ({c.at('base') + 1}/{len(index.bases)})")
        preset = index.presets[c.at("preset")]
        if preset is not None:
            title.append(f" · blocks {printable(preset)} ({c.at('preset') + 1}/{len(index.presets)})")
        self.query_one("#grid-title", Static).update(title)

        strengths = Text("strength ")
        for i, value in enumerate(index.strengths):
            chosen = i == c.at("strength") and not self.sheet
            strengths.append(f" {strength_label(value)} ", style="reverse bold" if chosen else "")
        self.query_one("#grid-strengths", Static).update(strengths)

        epochs = Text()
        for i, lora in enumerate(index.loras):
            when = f"epoch {lora.epoch}" if lora.epoch is not None else f"step {lora.step}" if lora.step else ""
            line = f"{printable(lora.label)}{f'  {when}' if when and when not in lora.label else ''}"
            epochs.append(("▶ " if i == c.at("lora") else "  ") + line + "\n",
                          style="bold" if i == c.at("lora") else "")
        self.query_one("#grid-epochs", Static).update(epochs)

        prompt = index.prompts[c.at("prompt")]
        cell = self.current()
        if self.sheet:
            detail = Text(f"contact sheet {printable(index.sheet.name)}")
            path = index.sheet
        elif cell is None:
            detail = Text("this cell was not rendered (the grid was cut short)")
            path = None
        else:
            detail = Text(f"prompt {c.at('prompt') + 1}/{len(index.prompts)}: {printable(prompt)}\nseed {cell.seed}"
                          f" · {printable(cell.image.name)}")
            path = cell.image
        self.query_one("#grid-cell", Static).update(detail)
        self.query_one("#grid-image", ImagePreview).show(path if path is not None and path.is_file() else None)

    def _move(self, axis: str, delta: int, *, wrap: bool = False) -> None:
        self.cursor = self.cursor.moved(axis, delta, wrap=wrap)
        self.sheet = False
        self.refresh_view()

    # ----- actions ------------------------------------------------------------------------------
    def action_epoch(self, delta: int) -> None:
        self._move("lora", delta)

    def action_strength(self, delta: int) -> None:
        self._move("strength", delta)

    def action_prompt(self, delta: int) -> None:
        self._move("prompt", delta, wrap=True)

    def action_next_base(self) -> None:
        self._move("base", 1, wrap=True)

    def action_next_preset(self) -> None:
        self._move("preset", 1, wrap=True)

    def action_control(self) -> None:
        """Flip between this strength and the control (strength 0)."""
        at = self.cursor.at("strength")
        if at == 0:
            self.cursor = self.cursor.placed("strength", self.previous_strength)
        else:
            self.previous_strength = at
            self.cursor = self.cursor.placed("strength", 0)
        self.sheet = False
        self.refresh_view()

    def action_sheet(self) -> None:
        self.sheet = not self.sheet
        self.refresh_view()

    def action_close(self) -> None:
        self.dismiss(None)
