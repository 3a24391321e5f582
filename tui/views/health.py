"""Health view: every flag from the checks grouped by kind, and duplicate clusters side by side with
previews: "keep this one, move the others to .kiln/trash/" (restorable)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import ContentSwitcher, Static, Tree
from textual.widgets.tree import TreeNode

from curator.textsafe import printable, safe_text
from tui.bindings import bindings
from tui.messages import Rescan, RevealImage, ShowImages
from tui.rows import Row, human_size
from tui.views.base import KilnView
from tui.widgets.dialogs import ConfirmScreen
from tui.widgets.preview import HalfBlockImage, ImagePreview

if TYPE_CHECKING:
    from curator.dupes import Cluster
    from curator.records import Flag
    from tui.model import DatasetModel

MAX_LEAVES = 200  # per flag kind; the rest are one `flag:KIND` filter away
FILL_INLINE_ROWS = 5000  # up to this many images the tree is filled at once; above, in a thread and in slices
FILL_SLICE = 200  # tree leaves added per turn of the event loop while a large tree fills (~5 ms)


@dataclass(frozen=True)
class Finding:
    """What a leaf of the findings tree stands for: a flagged image, a duplicate cluster, or "show them all"."""

    path: str | None = None
    row: Row | None = None
    flag: Flag | None = None
    cluster: Cluster | None = None
    query: str | None = None


Leaf = tuple[Text, Finding]


@dataclass(frozen=True)
class FindingGroup:
    """One flag kind of the findings tree: how many images carry it, and the leaves shown (the worst first)."""

    kind: str
    total: int
    leaves: list[Leaf]


def cluster_leaves(clusters: list[Cluster]) -> list[Leaf]:
    """One leaf per duplicate cluster (its kept image, and how many others)."""
    leaves = []
    for cluster in clusters:
        label = Text(f"{cluster.kind}: ")
        label.append_text(safe_text(Path(cluster.keep).name))
        label.append(f" +{len(cluster.members) - 1}", style="dim")
        leaves.append((label, Finding(path=cluster.keep, cluster=cluster)))
    return leaves


def group_findings(rows: list[Row]) -> list[FindingGroup]:
    """Every flag of ``rows`` but the duplicates' by kind, the largest kind first; scored kinds (image quality,
    alpha) list the worst first, the others keep path order; at most ``MAX_LEAVES`` leaves per kind, then one
    that shows them all in the browser. Pure (Rich text only): large datasets group in a thread."""
    by_kind: dict[str, list[tuple[Row, Flag]]] = {}
    for row in rows:
        for flag in row.flags:
            if flag.kind in ("exact-duplicate", "near-duplicate"):
                continue
            by_kind.setdefault(flag.kind, []).append((row, flag))
    groups = []
    for kind in sorted(by_kind, key=lambda k: (-len(by_kind[k]), k)):
        items = by_kind[kind]
        items.sort(key=lambda rf: (rf[1].score is None, -(rf[1].score or 0.0)))
        leaves: list[Leaf] = []
        for row, flag in items[:MAX_LEAVES]:
            label = Text(f"{flag.score:.2f} ", style="bold") if flag.score is not None else Text()
            label.append_text(safe_text(row.path))
            label.append("  ")
            label.append_text(safe_text(flag.detail, style="dim"))
            leaves.append((label, Finding(path=row.path, row=row, flag=flag)))
        if len(items) > MAX_LEAVES:
            more = Text(f"… {len(items) - MAX_LEAVES} more: enter shows them all in the browser", style="italic")
            leaves.append((more, Finding(query=f"flag:{kind}")))
        groups.append(FindingGroup(kind, len(items), leaves))
    return groups


class HealthTree(Tree[Finding]):
    """The findings: duplicate clusters, then each flag kind with its images."""

    BINDINGS = bindings("health-tree")

    class OpenCluster(Message):
        """``enter`` on a duplicate cluster: choose the image to keep."""

    def action_open(self) -> None:
        node = self.cursor_node
        if node is None:
            return
        if node.children:
            node.toggle()
        elif node.data is not None and node.data.query:
            self.post_message(ShowImages(node.data.query))
        elif node.data is not None and node.data.cluster is not None:
            self.post_message(self.OpenCluster())


class MemberCard(Vertical):
    """One image of a duplicate cluster: preview and facts."""

    DEFAULT_CSS = """
    MemberCard { width: 1fr; border: round $panel; padding: 0; }
    MemberCard.-current { border: round $accent; }
    MemberCard HalfBlockImage { height: 1fr; }
    MemberCard Static { height: auto; max-height: 6; }
    """

    class Clicked(Message):
        def __init__(self, card: MemberCard) -> None:
            super().__init__()
            self.card = card

    def __init__(self, path: str, facts: Text, abs_path: Path) -> None:
        super().__init__()
        self.rel_path = path
        self.facts = facts
        self.abs_path = abs_path

    def compose(self) -> ComposeResult:
        yield HalfBlockImage()
        yield Static(self.facts)

    def on_mount(self) -> None:
        self.query_one(HalfBlockImage).show(self.abs_path if self.abs_path.exists() else None)

    def on_click(self) -> None:
        self.post_message(self.Clicked(self))


class ClusterPane(Vertical, can_focus=True):
    """The members of one duplicate cluster side by side; pick the one to keep."""

    BINDINGS = bindings("cluster")

    class Back(Message):
        """``esc``: back to the findings."""

    class Resolve(Message):
        """Confirmed: keep ``keep``, move ``others`` to the trash."""

        def __init__(self, keep: str, others: list[str]) -> None:
            super().__init__()
            self.keep = keep
            self.others = others
    DEFAULT_CSS = """
    ClusterPane { height: 1fr; }
    ClusterPane:focus { background: $boost; }
    ClusterPane #cluster-title { height: auto; padding: 0 1; }
    ClusterPane #cards { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.cluster: Cluster | None = None
        self._current = 0

    def compose(self) -> ComposeResult:
        yield Static(id="cluster-title")
        yield Horizontal(id="cards")

    @property
    def cards(self) -> list[MemberCard]:
        return list(self.query(MemberCard))

    @property
    def current(self) -> int:
        return self._current

    @current.setter
    def current(self, value: int) -> None:
        cards = self.cards
        if not cards:
            return
        self._current = max(0, min(value, len(cards) - 1))
        for i, card in enumerate(cards):
            card.set_class(i == self._current, "-current")

    def on_member_card_clicked(self, event: MemberCard.Clicked) -> None:
        event.stop()
        self.current = self.cards.index(event.card)
        self.focus()

    def show_cluster(self, cluster: Cluster, model: DatasetModel) -> None:
        self.cluster = cluster
        title = Text(f"{cluster.kind} duplicates, {len(cluster.members)} images", style="bold")
        title.append("   ←/→ choose, K keeps the chosen one and moves the others to .kiln/trash/", style="dim")
        self.query_one("#cluster-title", Static).update(title)
        cards = self.query_one("#cards", Horizontal)
        cards.remove_children()
        new_cards = []
        for path in cluster.members:
            row = model.by_path.get(path)
            facts = safe_text(Path(path).name, style="bold")
            if path == cluster.keep:
                facts.append("  suggested", style="green")
                if cluster.keep_reason:
                    facts.append("\n")
                    facts.append_text(safe_text(cluster.keep_reason, style="green"))
            elif path in cluster.why:
                facts.append("\n")
                facts.append_text(safe_text(f"{cluster.why[path].get('transform', '')} "
                                            f"({cluster.why[path].get('distance', '?')} bits)", style="dim"))  # fmt: skip
            if row is not None:
                facts.append(f"\n{row.width}×{row.height} {human_size(row.size)} {len(row.tags)} tags")
                facts.append("\n")
                facts.append_text(safe_text(row.folder, style="dim"))
            abs_path = row.abs_path if row is not None else model.root / path
            new_cards.append(MemberCard(path, facts, abs_path))
        cards.mount_all(new_cards)
        self._current = cluster.members.index(cluster.keep) if cluster.keep in cluster.members else 0
        self.call_after_refresh(lambda: setattr(self, "current", self._current))

    def action_move(self, delta: int) -> None:
        self.current = self.current + delta

    def action_back(self) -> None:
        self.post_message(self.Back())

    def action_keep(self) -> None:
        if self.cluster is None or not self.cards:
            return
        keep = self.cards[self.current].rel_path
        others = [p for p in self.cluster.members if p != keep]
        body = Text("Keep ")
        body.append_text(safe_text(keep, style="bold"))
        body.append("\nand move these to .kiln/trash/ (with their caption files; R restores):\n")
        for p in others:
            body.append("  ")
            body.append_text(safe_text(p))
            body.append("\n")

        def answer(ok: bool | None) -> None:
            if ok:
                self.post_message(self.Resolve(keep, others))

        self.app.push_screen(ConfirmScreen("Resolve duplicates?", body, "Move to trash"), answer)


class HealthView(KilnView):
    VIEW_ID = "health"
    TITLE = "Health"

    BINDINGS = bindings("health")

    DEFAULT_CSS = """
    HealthView > Horizontal { height: 1fr; }
    HealthView HealthTree { width: 45%; min-width: 30; }
    HealthView #health-detail { width: 1fr; border-left: tall $panel; }
    HealthView #flag-detail ImagePreview { height: 1fr; }
    HealthView #flag-facts { height: auto; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield HealthTree("health", id="health-tree")
            with ContentSwitcher(initial="flag-detail", id="health-detail"):
                with Vertical(id="flag-detail"):
                    yield ImagePreview(protocol=self.kiln.image_protocol, id="flag-preview")
                    yield Static(id="flag-facts")
                yield ClusterPane(id="cluster-pane")

    clusters: list[Cluster] = []
    filling = False  # a large tree is being filled (in a thread, then in slices)
    _fill_generation = 0

    def on_mount(self) -> None:
        self.query_one(HealthTree).show_root = False

    def dataset_loaded(self) -> None:
        self.clusters = list(self.model.clusters) if self.kiln.loaded else []
        self._fill()

    def activated(self) -> None:
        self.query_one(HealthTree).focus()
        self._place_cursor()

    def _place_cursor(self) -> None:
        """Put the cursor on the first cluster (or finding) when it is nowhere yet, or on the duplicates'
        heading (where a freshly built tree puts it); once the tree is complete."""
        tree = self.query_one(HealthTree)
        if not self.filling and tree.cursor_line <= 0 and tree.last_line >= 0:
            tree.cursor_line = 1 if self.clusters else 0

    def _fill(self) -> None:
        """The findings tree, again. Up to ``FILL_INLINE_ROWS`` images at once; above, the findings are grouped
        in a thread and the leaves added ``FILL_SLICE`` per turn of the event loop, so keys (and the other
        views) are answered while 100,000 images' findings fill in (one go took ~1.2 s there)."""
        self._fill_generation += 1
        generation, clusters, loaded, rows = self._fill_generation, self.clusters, self.kiln.loaded, self.model.rows
        if len(rows) <= FILL_INLINE_ROWS:
            self._build(generation, loaded, cluster_leaves(clusters), group_findings(rows), sliced=False)
            return
        self.filling = True
        self._group_in_thread(generation, loaded, clusters, rows)

    @work(thread=True, exclusive=True, group="health-fill")
    def _group_in_thread(self, generation: int, loaded: bool, clusters: list[Cluster], rows: list[Row]) -> None:
        leaves, groups = cluster_leaves(clusters), group_findings(rows)
        self.kiln.ui(self._build, generation, loaded, leaves, groups, True)

    def _build(self, generation: int, loaded: bool, clusters: list[Leaf], groups: list[FindingGroup],
               sliced: bool) -> None:
        if generation != self._fill_generation:
            return  # a newer fill is on its way
        tree = self.query_one(HealthTree)
        tree.clear()
        found = f"{len(clusters)} clusters" if loaded else "checking…"
        dup = tree.root.add(Text(f"duplicates ({found})", style="bold"), expand=True)
        pending: list[tuple[TreeNode[Finding], Text, Finding]] = [(dup, label, data) for label, data in clusters]
        for group in groups:
            node = tree.root.add(Text(f"{group.kind} ({group.total})", style="bold yellow"), expand=False)
            pending += [(node, label, data) for label, data in group.leaves]
        if not groups and not clusters:
            tree.root.add_leaf(Text("no findings" if loaded else "checking…", style="green"))
        if sliced:
            self._add_leaves(generation, pending, 0)
        else:
            for parent, label, data in pending:
                parent.add_leaf(label, data=data)

    def _add_leaves(self, generation: int, pending: list[tuple[TreeNode[Finding], Text, Finding]],
                    start: int) -> None:
        if generation != self._fill_generation:
            return
        for parent, label, data in pending[start : start + FILL_SLICE]:
            parent.add_leaf(label, data=data)
        if start + FILL_SLICE < len(pending):
            # a timer, not call_later: the event loop turns (keys, paints) before the next slice
            self.set_timer(0.001, lambda: self._add_leaves(generation, pending, start + FILL_SLICE))
            return
        self.filling = False
        if self.display:
            self._place_cursor()

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[Finding]) -> None:
        data = event.node.data
        switcher = self.query_one(ContentSwitcher)
        if data is not None and data.cluster is not None:
            switcher.current = "cluster-pane"
            self.query_one(ClusterPane).show_cluster(data.cluster, self.model)
        elif data is not None and data.row is not None and data.flag is not None:
            switcher.current = "flag-detail"
            row, flag = data.row, data.flag
            self.query_one("#flag-preview", ImagePreview).show(row.abs_path)
            facts = safe_text(row.path, style="bold")
            facts.append(f"\n{row.width}×{row.height} {human_size(row.size)}\n")
            facts.append_text(safe_text(f"{flag.kind}: {flag.detail}", style="yellow"))
            facts.append("\no shows it in the browser", style="dim")
            self.query_one("#flag-facts", Static).update(facts)

    # ----- the findings' actions ----------------------------------------------------------------
    def _finding(self) -> Finding | None:
        node = self.query_one(HealthTree).cursor_node
        return node.data if node is not None else None

    def on_health_tree_open_cluster(self, event: HealthTree.OpenCluster) -> None:
        event.stop()
        self.query_one(ClusterPane).focus()

    def on_cluster_pane_back(self, event: ClusterPane.Back) -> None:
        event.stop()
        self.query_one(HealthTree).focus()

    def on_cluster_pane_resolve(self, event: ClusterPane.Resolve) -> None:
        event.stop()
        self.query_one(HealthTree).focus()  # the cluster goes away with the rescan: R, o, K work from the list
        self.trash(event.others, event.keep)

    def action_show_in_browser(self) -> None:
        pane = self.query_one(ClusterPane)
        if pane.has_focus:  # the image chosen in the cluster
            path = pane.cards[pane.current].rel_path if pane.cards else None
        else:
            finding = self._finding()
            path = finding.path if finding is not None else None
        if path:
            self.post_message(RevealImage(path))

    def action_keep(self) -> None:
        """``K`` on a highlighted cluster in the findings: keep its chosen image (the suggested one until ←/→ in
        the cluster pick another), trash the others; the pane asks first."""
        pane = self.query_one(ClusterPane)
        finding = self._finding()
        if finding is not None and finding.cluster is not None and pane.cluster is finding.cluster:
            pane.action_keep()
        else:
            self.notify("K keeps an image of a duplicate cluster: highlight a cluster first.", timeout=3)

    def action_restore_trash(self) -> None:
        self.restore_trash()

    @work(thread=True, exclusive=True, group="trash")
    def trash(self, paths: list[str], keep: str) -> None:
        try:
            batch = self.model.trash_images(paths, f"duplicates of {keep}")
        except Exception as exc:  # noqa: BLE001
            self.kiln.ui(self.app.notify, printable(f"Nothing moved: {exc}"), severity="error")
            return
        self.kiln.ui(self.app.notify,
                     printable(f"Moved {len(batch.images)} image(s) to .kiln/trash/{batch.batch_id}; R restores."))
        self.post_message(Rescan())

    @work(thread=True, exclusive=True, group="trash")
    def restore_trash(self) -> None:
        try:
            batch = self.model.restore_last_trash()
        except Exception as exc:  # noqa: BLE001
            self.kiln.ui(self.app.notify, printable(f"Restore failed: {exc}"), severity="error")
            return
        if batch is None:
            self.kiln.ui(self.app.notify, "The trash is empty.", timeout=2)
            return
        self.kiln.ui(self.app.notify, printable(f"Restored {', '.join(batch.images)}"))
        self.post_message(Rescan())
