"""The images a run's model fits worst (or best): the per-image loss ranking of train/image_losses.py as a
table with the captions; enter shows the image in the curator when the run trained on the open dataset."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from curator.textsafe import printable
from train.image_losses import RankedImage, rank_images, read_image_losses, run_dataset_root
from tui.bindings import bindings
from tui.messages import RevealImage
from tui.runs.keys import HARDEST

CAPTION_CHARS = 200


def ranking_rows(run_dir: Path, *, easiest: bool) -> tuple[list[RankedImage], str]:
    """The ranked images and the title line (or no rows and why)."""
    data = read_image_losses(run_dir)
    name = printable(run_dir.name)
    if data is None:
        return [], f"{name}: no per-image losses yet (written at each epoch end and when the run ends)"
    ranked = rank_images(data, easiest=easiest)
    if not ranked:
        return [], f"{name}: no image was drawn twice yet; the ranking needs a few epochs"
    return ranked, (f"{name}: {'easiest' if easiest else 'hardest'} of {len(ranked)} images at step "
                    f"{int(data.get('step', 0))} (loss x typical at its timesteps)")


class HardestScreen(ModalScreen[None]):
    """The ranking of one run; ``e`` flips hardest / easiest, enter reveals the image in the curator."""

    BINDINGS = bindings(HARDEST)

    DEFAULT_CSS = """
    HardestScreen { align: center middle; }
    HardestScreen #hardest { width: 120; max-width: 98%; height: 90%; border: thick $primary;
                             background: $surface; padding: 0 1; }
    HardestScreen #hardest-title { height: 1; text-style: bold; color: $primary; }
    HardestScreen #hardest-hint { height: 1; color: $text-muted; }
    HardestScreen DataTable { height: 1fr; }
    """

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.easiest = False
        self.ranked: list[RankedImage] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="hardest"):
            yield Static(id="hardest-title")
            yield DataTable(id="hardest-table", cursor_type="row", zebra_stripes=True)
            yield Static(Text("enter show in curator · e hardest/easiest · esc close"), id="hardest-hint")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label, key in (("#", "rank"), ("loss", "score"), ("draws", "draws"), ("image", "image"),
                           ("caption", "caption")):
            table.add_column(label, key=key)
        self.fill()
        table.focus()

    def fill(self) -> None:
        self.ranked, title = ranking_rows(self.run_dir, easiest=self.easiest)
        self.query_one("#hardest-title", Static).update(Text(title))
        table = self.query_one(DataTable)
        table.clear()
        for row in self.ranked:
            caption = printable(row.caption)
            style = "bold red" if row.score >= 1.25 and not self.easiest else ""
            table.add_row(Text(str(row.rank), justify="right"), Text(f"x{row.score:.2f}", style=style),
                          Text(str(row.draws), justify="right"), Text(printable(row.path)),
                          Text(caption[:CAPTION_CHARS] + ("…" if len(caption) > CAPTION_CHARS else "")),
                          key=row.path)

    def action_flip(self) -> None:
        self.easiest = not self.easiest
        self.fill()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_reveal()

    def action_reveal(self) -> None:
        table = self.query_one(DataTable)
        if not self.ranked or not table.row_count:
            return
        row = self.ranked[min(table.cursor_row, len(self.ranked) - 1)]
        trained_on = run_dataset_root(self.run_dir)
        open_root = getattr(self.app, "dataset_path", None)
        if trained_on is None or open_root is None or Path(open_root).resolve() != trained_on.resolve():
            where = printable(str(trained_on)) if trained_on else "another dataset"
            self.app.notify(f"this run trained on {where}; open it with `kiln {where}` to see "
                            f"{printable(row.path)}", markup=False, timeout=6)
            return
        self.app.post_message(RevealImage(row.path))
        self.dismiss(None)
